"""LoRA / QLoRA fine-tuning of a vision-language base (GLM-4.1V, GLM-4.6V-Flash, Qwen2.5-VL...) on conversation JSONL.

    python -m finetune.lora train --base zai-org/GLM-4.1V-9B-Base --data runs/data/train.jsonl \
        --val runs/data/val.jsonl --data-root ../shared/data --out runs/lora          # LoRA, 1 GPU
    python -m finetune.lora train ... --qlora                                          # 4-bit NF4 base (QLoRA)
    accelerate launch --config_file finetune/configs/ddp.yaml -m finetune.lora train ...        # 8 GPUs, DDP
    accelerate launch --config_file finetune/configs/zero3.yaml -m finetune.lora train ...      # DeepSpeed ZeRO-3
    python -m finetune.lora export --base zai-org/GLM-4.1V-9B-Base --adapter runs/lora --out merged/

Boundary: reads samples (the builder's conversation JSONL, or the original project's {"img","prompt","label"}
JSON), renders them with the processor's own chat template, learns only the assistant tokens, and writes a plain
peft adapter that `model_adapter` loads (`load_backend(model=base, adapter=out)`). Nothing here knows a model
family by name: the vision tower / projector come from `model_adapter.registry.QUIRKS[...].vision_modules`.
Multi-GPU and DeepSpeed come from `accelerate launch` (configs in finetune/configs/); docs/finetune.md has the
commands, the defaults' reasons and a memory table.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import sys
import time
import types
import typing
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from finetune.data import ORIGINAL_FOLDERS
from model_adapter.hf import peft_quiet
from model_adapter.images import load_image
from vocabulary.datasets import data_root
from model_adapter.registry import quirks_for

log = logging.getLogger("finetune.lora")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA_ROOT = data_root()
IGNORE = -100
# Per-token processor outputs and the value that pads them; every other tensor (pixel_values, image_grid_thw)
# is concatenated along dim 0 by `collate`.
TOKEN_KEYS = {"input_ids": None, "labels": IGNORE, "attention_mask": 0, "mm_token_type_ids": 0, "token_type_ids": 0}
# Inside the vision modules, the fragments that name the projector (`--include-projector` puts LoRA on it):
# Qwen2-VL / GLM-4V `visual.merger`, LLaVA-style `multi_modal_projector`, RemoteGLM-mini `projector`.
PROJECTOR_FRAGMENTS = ("merger", "projector")
CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"


class TrainConfig(BaseModel):
    """One training run; every field is the CLI flag of the same name (`--lora-rank 16`)."""

    model_config = ConfigDict(use_attribute_docstrings=True, extra="forbid")

    base: str
    """Base model directory or hub name (any transformers VLM: GLM-4.1V, GLM-4.6V-Flash, Qwen2.5-VL...)."""
    data: Path
    """Training samples: conversation JSONL from finetune/data.py, or original {"img","prompt","label"} JSON."""
    val: Path | None = None
    """Validation samples (same formats); their loss is logged every --eval-every steps."""
    data_root: Path = DEFAULT_DATA_ROOT
    """Folder that relative image paths are read from (env REMOTEGLM_DATA_ROOT)."""
    out: Path = REPO / "runs" / "lora"
    """Output: the final adapter, checkpoints/, metrics.jsonl, loss.png."""
    qlora: bool = False
    """Load the base in 4-bit NF4 (bitsandbytes) and train LoRA on top (QLoRA); not with DeepSpeed ZeRO-3."""
    lora_rank: int = Field(16, ge=1)
    """LoRA rank r. 16 on every language-model linear layer is the usual VLM recipe; 8 loses little."""
    lora_alpha: int = Field(32, ge=1)
    """LoRA alpha; alpha = 2r keeps the update scale (alpha / r = 2) when you change the rank."""
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0)
    """Dropout on the LoRA input: a light regulariser for a few thousand caption-like samples."""
    target_modules: str | None = None
    """Override: a regex over module names that get LoRA (default: all language-model linear layers)."""
    include_projector: bool = False
    """Also put LoRA on the vision projector (merger); the vision tower itself is always left frozen."""
    lr: float = Field(1e-4, gt=0)
    """Peak learning rate (AdamW, cosine decay after warmup)."""
    warmup_ratio: float = Field(0.03, ge=0.0, le=1.0)
    """Fraction of the optimizer steps spent warming the learning rate up from 0."""
    weight_decay: float = Field(0.0, ge=0.0)
    """AdamW weight decay on the LoRA weights."""
    epochs: float = Field(1.0, gt=0)
    """Passes over the training data (fractions allowed)."""
    max_steps: int | None = Field(None, ge=1)
    """Plan at most this many optimizer steps (overrides --epochs for the schedule)."""
    stop_after: int | None = Field(None, ge=1)
    """Stop (as if interrupted) after this optimizer step; the schedule still plans the full run. For jobs under a
    wall-time limit: rerun with --resume latest."""
    batch_size: int = Field(4, ge=1)
    """Samples per device per forward pass."""
    grad_accum: int = Field(4, ge=1)
    """Forward passes per optimizer step (effective batch = batch_size x grad_accum x GPUs)."""
    max_length: int = Field(2048, ge=16)
    """Longest sequence in tokens (image tokens included); longer samples lose their tail (kept whole, with a
    warning, where the cut would reach into the image tokens or leave no answer token)."""
    max_pixels: int = Field(1024 * 1024, ge=28 * 28)
    """Images are downscaled to at most this many pixels before the processor sees them."""
    max_grad_norm: float = Field(1.0, gt=0)
    """Gradient clipping norm."""
    gradient_checkpointing: bool = True
    """Recompute activations in the backward pass: about 30% slower, much less activation memory."""
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    """'auto': bf16 on GPUs that have it, else fp16 on GPUs, else fp32 (CPU); also the base weights' dtype.
    This flag, not the launcher's --mixed_precision, decides."""
    save_every: int = Field(200, ge=1)
    """Write a resumable checkpoint every N optimizer steps."""
    keep_checkpoints: int = Field(2, ge=1)
    """How many of the newest checkpoints to keep."""
    eval_every: int = Field(200, ge=1)
    """Validation loss every N optimizer steps (and at the end)."""
    val_max_samples: int = Field(256, ge=1)
    """Validate on at most this many samples (the first ones of --val)."""
    log_every: int = Field(10, ge=1)
    """Write the training loss to metrics.jsonl every N steps."""
    resume: str | None = None
    """'latest' (newest checkpoint in --out/checkpoints) or a checkpoint directory."""
    seed: int = 0
    """Seed of the shuffling, LoRA init and dropout."""
    num_workers: int = Field(2, ge=0)
    """DataLoader workers that load images and tokenize."""
    trust_remote_code: bool = False
    """Let the base checkpoint run its own code (only for checkpoints you trust)."""


# --- samples ------------------------------------------------------------------------------------------------------
class InputError(ValueError):
    """Bad input the user fixes with a flag or a data file; the CLI prints it as one line and exits 2."""


def read_samples(path: Path, data_root: Path) -> list[dict]:
    """Conversation samples from a JSONL / JSON file; original {"img","prompt","label"} rows are converted.

    Every problem names the file and the line (JSONL) or item (JSON list) it is on.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from exc
    if text.lstrip().startswith("["):
        try:
            rows = [(f"{path}: item {i + 1}", row) for i, row in enumerate(json.loads(text))]
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    else:
        rows = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append((f"{path}:{lineno}", json.loads(line)))
                except json.JSONDecodeError as exc:
                    raise InputError(f"{path}:{lineno}: not valid JSON ({exc.msg}, column {exc.colno})") from None
    samples, found = [], set()
    for where, row in rows:
        if not isinstance(row, dict) or not ("messages" in row or {"img", "prompt", "label"} <= row.keys()):
            raise InputError(f"{where}: a sample is an object with \"messages\" (or the original \"img\", "
                             f"\"prompt\", \"label\")")
        s = row if "messages" in row else original_to_sample(row, Path(data_root))
        msgs = s["messages"]
        if not isinstance(msgs, list) or not all(isinstance(m, dict) and {"role", "content"} <= m.keys()
                                                 for m in msgs):
            raise InputError(f"{where}: \"messages\" must be a list of {{\"role\", \"content\"}} objects")
        roles = [m["role"] for m in msgs if m["role"] != "system"]
        if not roles or roles[0] != "user" or "assistant" not in roles:
            raise InputError(f"{where}: sample {s.get('id')!r} must start with a user turn and hold an assistant turn")
        if s.get("image") and s["image"] not in found:
            path_ = Path(s["image"]) if Path(s["image"]).is_absolute() else Path(data_root) / s["image"]
            if not path_.is_file():
                raise InputError(f"{where}: image {s['image']!r} not found under {data_root} "
                                 f"(set --data-root or REMOTEGLM_DATA_ROOT)")
            found.add(s["image"])
        samples.append(s)
    if not samples:
        raise InputError(f"{path}: no samples (expected conversation JSONL or an original-format JSON list)")
    return samples


def original_to_sample(row: dict, data_root: Path) -> dict:
    """{"img": "./UCM/12.tif", "prompt", "label"} -> a conversation; the image maps to the shared data's layout
    (`ucm/images/12.jpg`) where that file exists, else the path is kept as given."""
    parts = Path(row["img"]).parts
    name, folder = parts[-1], parts[-2] if len(parts) > 1 else ""
    dataset = {v: k for k, v in ORIGINAL_FOLDERS.items()}.get(folder)
    image = row["img"]
    if dataset and (data_root / dataset / "images" / f"{Path(name).stem}.jpg").is_file():
        image = f"{dataset}/images/{Path(name).stem}.jpg"
    return {"id": row["img"], "image": image,
            "messages": [{"role": "user", "content": row["prompt"]}, {"role": "assistant", "content": row["label"]}]}


def image_path(image: str, data_root: Path) -> Path:
    path = Path(image) if Path(image).is_absolute() else Path(data_root) / image
    if not path.is_file():
        raise FileNotFoundError(f"image {image!r} not found under {data_root} (set --data-root / REMOTEGLM_DATA_ROOT)")
    return path


# --- encoding: chat template -> input_ids + labels on assistant tokens ------------------------------------------
def hf_messages(messages: list[dict], n_images: int) -> list[dict]:
    """Our messages -> chat-template messages; the images go in front of the first user turn's text.

    Text-only turns stay plain strings: every VLM template reads those, while some (GLM-4.1V's) print an
    assistant content list verbatim.
    """
    out, placed = [], False
    for m in messages:
        content: Any = m["content"]
        if m["role"] == "user" and not placed:
            placed = True
            if n_images:
                content = [{"type": "image"} for _ in range(n_images)] + [{"type": "text", "text": m["content"]}]
        out.append({"role": m["role"], "content": content})
    return out


def _common_prefix(a: torch.Tensor, b: torch.Tensor) -> int:
    n = min(len(a), len(b))
    diff = (a[:n] != b[:n]).nonzero()
    return int(diff[0]) if len(diff) else n


def encode(processor, messages: list[dict], images: list, stop_ids: set[int], max_length: int) -> dict:
    """One sample -> per-token tensors (1-D: input_ids, labels, attention_mask, ...) + image tensors.

    Assistant spans are found by rendering the conversation up to each assistant turn (with the generation prompt)
    and through it, and comparing token lengths with the full rendering, so any chat template works. A span ends
    with the template's end-of-turn token; where the template writes none (GLM: the next turn's `<|user|>` stops
    generation, and the last turn has nothing after it), the following stop token is learned or one is appended.
    """
    conv = hf_messages(messages, len(images))
    first_user = next(i for i, m in enumerate(conv) if m["role"] == "user")

    def tokenize(upto: int, generation_prompt: bool) -> dict:
        text = processor.apply_chat_template(conv[:upto], add_generation_prompt=generation_prompt, tokenize=False)
        return processor(text=[text], images=images if images and upto > first_user else None, return_tensors="pt")

    full = tokenize(len(conv), False)
    ids = full["input_ids"][0]
    labels = torch.full_like(ids, IGNORE)
    append_stop = False
    for i, m in enumerate(conv):
        if m["role"] != "assistant":
            continue
        start = _common_prefix(tokenize(i, True)["input_ids"][0], ids)
        end = _common_prefix(tokenize(i + 1, False)["input_ids"][0], ids)
        if not any(int(t) in stop_ids for t in ids[start:end]):
            if end < len(ids) and int(ids[end]) in stop_ids:
                end += 1
            elif end == len(ids):
                append_stop = True
        labels[start:end] = ids[start:end]
    row = {k: v[0] for k, v in full.items() if k in TOKEN_KEYS and isinstance(v, torch.Tensor)}
    row["labels"] = labels
    row.update({k: v for k, v in full.items() if k not in TOKEN_KEYS and isinstance(v, torch.Tensor)})
    if append_stop:
        eos = getattr(processor.tokenizer, "eos_token_id", None)
        stop = eos if eos in stop_ids else min(stop_ids)
        extra = {"input_ids": stop, "labels": stop, "attention_mask": 1}
        for k in TOKEN_KEYS:
            if k in row:
                row[k] = torch.cat([row[k], row[k].new_tensor([extra.get(k, 0)])])
    return _truncate(row, max_length, getattr(processor, "image_token_id", None))


def _truncate(row: dict, max_length: int, image_token_id: int | None) -> dict:
    n = len(row["input_ids"])
    if n <= max_length:
        return row
    cut = {k: row[k][:max_length] for k in TOKEN_KEYS if k in row}
    if image_token_id is not None and int((cut["input_ids"] == image_token_id).sum()) != int(
            (row["input_ids"] == image_token_id).sum()):
        log.warning("sample of %d tokens kept whole: --max-length %d would cut its image tokens", n, max_length)
        return row
    if not (cut["labels"] != IGNORE).any():  # nothing left to learn: a batch of such rows would give a NaN loss
        log.warning("sample of %d tokens kept whole: --max-length %d would cut every answer token", n, max_length)
        return row
    return {**row, **cut}


def collate(rows: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad the per-token tensors to the longest row; concatenate image tensors along dim 0."""
    length = max(len(r["input_ids"]) for r in rows)
    batch = {}
    for key, pad in TOKEN_KEYS.items():
        if key in rows[0]:
            value = pad_id if pad is None else pad
            batch[key] = torch.stack(
                [torch.cat([r[key], r[key].new_full((length - len(r[key]),), value)]) for r in rows])
    for key in {k for r in rows for k in r if k not in TOKEN_KEYS}:
        batch[key] = torch.cat([r[key] for r in rows if key in r])
    return batch


class ConversationDataset(torch.utils.data.Dataset):
    """Samples encoded on the fly, in a per-epoch shuffled order (`shuffle_for_epoch`) that a resumed run reproduces.

    NOTE: not named `set_epoch`: accelerate's DataLoaderShard calls a dataset's `set_epoch` with its own iteration
    counter, which restarts at 0 in a resumed run's skipping loader and silently changed the order (measured).
    """

    def __init__(self, samples: list[dict], processor, data_root: Path, stop_ids: set[int], max_length: int,
                 max_pixels: int, seed: int = 0, shuffle: bool = True):
        self.samples, self.processor, self.data_root = samples, processor, Path(data_root)
        self.stop_ids, self.max_length, self.max_pixels = stop_ids, max_length, max_pixels
        self.seed, self.shuffle = seed, shuffle
        self.order = list(range(len(samples)))

    def shuffle_for_epoch(self, epoch: int) -> None:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + epoch)
            self.order = torch.randperm(len(self.samples), generator=generator).tolist()

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict:
        sample = self.samples[self.order[i]]
        images = []
        if sample.get("image"):
            images.append(load_image(image_path(sample["image"], self.data_root), self.max_pixels))
        return encode(self.processor, sample["messages"], images, self.stop_ids, self.max_length)


def stop_token_ids(model, tokenizer) -> set[int]:
    """Token ids that end an answer: the generation config's eos ids and the tokenizer's eos."""
    ids = model.generation_config.eos_token_id
    ids = set(ids if isinstance(ids, (list, tuple)) else [ids] if ids is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


# --- up-front checks ---------------------------------------------------------------------------------------------
# Options that change the shape of the LoRA weights: a checkpoint written with other values cannot be resumed.
SHAPE_OPTIONS = ("base", "lora_rank", "target_modules", "include_projector", "qlora")


def check_base(base: str) -> None:
    """A base that cannot be a model, found before anything is loaded."""
    if not base.strip():
        raise InputError("--base is empty: give a model directory or a hub name (e.g. zai-org/GLM-4.1V-9B-Base)")
    path = Path(base)
    if path.exists():
        if not (path / "config.json").is_file():
            raise InputError(f"--base {base}: no config.json in that directory; point it at a transformers model")
    elif path.is_absolute() or base.startswith((".", "~")) or base.count("/") != 1:
        raise InputError(f"--base {base}: no such model directory (and not a hub name like org/model)")


def check_inputs(cfg: TrainConfig) -> tuple[list[dict], list[dict] | None]:
    """Everything a run needs that can be checked without loading the model: the base, the data files (every line,
    every image), and the output directory against an earlier run's checkpoints. Returns (train, val) samples."""
    check_base(cfg.base)
    out = Path(cfg.out)
    resume = latest_checkpoint(out) if cfg.resume == "latest" else Path(cfg.resume) if cfg.resume else None
    if cfg.resume is None and latest_checkpoint(out) is not None:
        raise InputError(f"{out} already holds checkpoints of another run ({latest_checkpoint(out).name}): "
                         "pass --resume latest to continue it, or choose a new --out")
    if resume is not None:
        if not (resume / STATE_FILE).is_file():
            raise InputError(f"--resume {cfg.resume}: {resume} is not a checkpoint of this trainer (no {STATE_FILE})")
        saved = out / "train_config.json"
        if saved.is_file():
            before = json.loads(saved.read_text(encoding="utf-8"))
            now = json.loads(cfg.model_dump_json())
            changed = [f"--{k.replace('_', '-')} {before.get(k)!r} -> {now.get(k)!r}" for k in SHAPE_OPTIONS
                       if k in before and before.get(k) != now.get(k)]
            if changed:
                raise InputError(f"the checkpoints in {out} come from another run ({'; '.join(changed)}); "
                                 "rerun with the original options or choose a new --out")
    train = read_samples(cfg.data, cfg.data_root)
    val = read_samples(cfg.val, cfg.data_root)[: cfg.val_max_samples] if cfg.val else None
    return train, val


# --- model ----------------------------------------------------------------------------------------------------------
def lora_targets(model: torch.nn.Module, vision_modules: tuple[str, ...], include_projector: bool) -> list[str]:
    """Full names of the linear layers that get LoRA: every one of the language model (not lm_head), plus the
    projector's when asked; never the vision tower.

    Full names rather than a regex: peft matches them exactly, and servers that read `target_modules` (vLLM checks
    each name's last part against the layers it can serve LoRA on) understand a plain list.
    """
    names = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or name.split(".")[-1] == "lm_head":
            continue  # bitsandbytes' Linear4bit is a torch Linear too
        in_vision = any(f in name for f in vision_modules)
        if not in_vision or (include_projector and any(p in name for p in PROJECTOR_FRAGMENTS)):
            names.append(name)
    return names


def resolve_dtype(mixed_precision: str) -> tuple[str, torch.dtype]:
    """'auto' -> the mixed-precision mode and weight dtype this device supports."""
    if mixed_precision == "auto":
        if torch.cuda.is_available():
            mixed_precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            mixed_precision = "no"
    return mixed_precision, {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed_precision, torch.float32)


def load_for_training(cfg: TrainConfig, device: torch.device, dtype: torch.dtype):
    """(processor, peft model): base (4-bit for QLoRA), gradient checkpointing, LoRA on the language model."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForImageTextToText, AutoProcessor

    kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": cfg.trust_remote_code}
    if cfg.qlora:
        from model_adapter.hf import quantization_config

        kwargs["quantization_config"] = quantization_config(4, dtype, cfg.base, cfg.trust_remote_code)
        kwargs["device_map"] = {"": str(device)}
    processor = AutoProcessor.from_pretrained(cfg.base, trust_remote_code=cfg.trust_remote_code)
    model = AutoModelForImageTextToText.from_pretrained(cfg.base, **kwargs)
    model.config.use_cache = False
    gc_kwargs = {"use_reentrant": False}  # non-reentrant: works with frozen inputs, DDP and ZeRO
    if cfg.qlora:
        with peft_quiet():
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing,
                                                    gradient_checkpointing_kwargs=gc_kwargs)
    elif cfg.gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=gc_kwargs)
    vision = quirks_for(model.config.model_type).vision_modules
    target = cfg.target_modules or lora_targets(model, vision, cfg.include_projector)
    lora = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=target, task_type="CAUSAL_LM")
    with peft_quiet():
        return processor, get_peft_model(model, lora)


def lora_module_names(model: torch.nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if hasattr(module, "lora_A") and len(module.lora_A)]


# --- checkpoints ------------------------------------------------------------------------------------------------------
def _keep_trainable_weights(model_ids: set[int], models: list, weights: list, output_dir: str) -> None:
    """accelerate save hook: store only the trainable (LoRA) tensors, not a copy of the frozen base."""
    for i, model in enumerate(models):
        if i < len(weights) and id(model) in model_ids:
            names = {n for n, p in model.named_parameters() if p.requires_grad}
            weights[i] = {k: v for k, v in weights[i].items() if k in names}


def latest_checkpoint(out: Path) -> Path | None:
    found = sorted(Path(out, CHECKPOINTS).glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    return found[-1] if found else None


def save_adapter(accelerator, model, out: Path) -> None:
    """The peft adapter (adapter_config.json + adapter_model.safetensors), gathered from every rank under ZeRO-3."""
    state = accelerator.get_state_dict(model)
    accelerator.unwrap_model(model).save_pretrained(out, state_dict=state, is_main_process=accelerator.is_main_process,
                                                    save_embedding_layers=False)


def save_checkpoint(accelerator, model, out: Path, state: dict, keep: int) -> Path:
    path = Path(out, CHECKPOINTS, f"step-{state['step']:07d}")
    kwargs = {"exclude_frozen_parameters": True} if _is_deepspeed(accelerator) else {}
    accelerator.save_state(str(path), **kwargs)
    save_adapter(accelerator, model, path / "adapter")
    if accelerator.is_main_process:
        (path / STATE_FILE).write_text(json.dumps(state), encoding="utf-8")
        for old in sorted(Path(out, CHECKPOINTS).glob("step-*"), key=lambda p: int(p.name.split("-")[1]))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return path


def _is_deepspeed(accelerator) -> bool:
    return accelerator.distributed_type.name == "DEEPSPEED"


# --- training ---------------------------------------------------------------------------------------------------------
def model_inputs(batch: dict, wanted: tuple[str, ...] | None) -> dict:
    return {k: v for k, v in batch.items() if wanted is None or k in wanted or k == "labels"}


@torch.no_grad()
def evaluate(model, loader, accelerator, wanted) -> float:
    """Token-weighted mean loss over the validation loader, summed over all ranks."""
    model.eval()
    total = torch.zeros(2, device=accelerator.device)
    for batch in loader:
        loss = model(**model_inputs(batch, wanted)).loss
        n = (batch["labels"][:, 1:] != IGNORE).sum()
        total += torch.stack([loss.float() * n, n.float()])
    model.train()
    total = accelerator.reduce(total, "sum")
    return float(total[0] / total[1].clamp(min=1))


@dataclass
class TrainResult:
    summary: dict
    """steps, total_steps, finished, samples_per_s, seconds, peak_memory_gib, trainable_params, lora_modules,
    history (the metrics.jsonl records)"""
    model: torch.nn.Module
    """The trained peft model (unwrapped from DDP / DeepSpeed), for callers that go on using it."""


def train(cfg: TrainConfig) -> TrainResult:
    """Train and write the adapter to cfg.out (checkpoints, metrics.jsonl and loss.png beside it)."""
    train_samples, val_samples = check_inputs(cfg)  # InputError before the model is loaded
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm
    from transformers import get_cosine_schedule_with_warmup

    # Passed explicitly, so --mixed-precision wins over `accelerate launch --mixed_precision`; DeepSpeed configs
    # with "auto" take it from here.
    mixed_precision, dtype = resolve_dtype(cfg.mixed_precision)
    accelerator = Accelerator(
        gradient_accumulation_steps=cfg.grad_accum, mixed_precision=mixed_precision,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=cfg.include_projector)],
    )
    if cfg.qlora and _is_deepspeed(accelerator) and accelerator.state.deepspeed_plugin.zero_stage == 3:
        raise InputError("--qlora does not run under DeepSpeed ZeRO-3; use the ddp or zero2 config")
    set_seed(cfg.seed)
    out = Path(cfg.out)
    try:
        processor, model = load_for_training(cfg, accelerator.device, dtype)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot load --base {cfg.base}: {' '.join(str(exc).split())}") from exc
    tokenizer = getattr(processor, "tokenizer", processor)
    wanted = quirks_for(model.config.model_type).model_inputs
    stop_ids = stop_token_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(stop_ids)
    make_ds = partial(ConversationDataset, processor=processor, data_root=cfg.data_root, stop_ids=stop_ids,
                      max_length=cfg.max_length, max_pixels=cfg.max_pixels, seed=cfg.seed)
    # Own generator: a loader draws its worker seed when an epoch's iterator starts, and drawing it from the global
    # RNG would shift the dropout masks of a resumed run (the order itself comes from `shuffle_for_epoch`).
    loader = partial(torch.utils.data.DataLoader, batch_size=cfg.batch_size, shuffle=False, num_workers=cfg.num_workers,
                     collate_fn=partial(collate, pad_id=pad_id), generator=torch.Generator().manual_seed(cfg.seed))
    train_ds = make_ds(train_samples)
    train_dl = loader(train_ds)
    val_dl = None
    if val_samples is not None:
        val_dl = loader(make_ds(val_samples, shuffle=False))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if _is_deepspeed(accelerator):  # no "auto" batch size to infer from when dataloaders are prepared separately
        accelerator.state.deepspeed_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = cfg.batch_size
    model, optimizer, train_dl = accelerator.prepare(model, optimizer, train_dl)
    val_dl = accelerator.prepare(val_dl) if val_dl is not None else None
    steps_per_epoch = math.ceil(len(train_dl) / cfg.grad_accum)
    total_steps = cfg.max_steps or max(1, math.ceil(steps_per_epoch * cfg.epochs))
    scheduler = get_cosine_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total_steps), total_steps)
    accelerator.register_for_checkpointing(scheduler)
    accelerator.register_save_state_pre_hook(partial(_keep_trainable_weights, {id(model)}))

    state = {"step": 0, "epoch": 0, "batches_in_epoch": 0}
    resume = latest_checkpoint(out) if cfg.resume == "latest" else Path(cfg.resume) if cfg.resume else None
    if resume is not None:
        # the checkpoint holds the LoRA weights only: the frozen base is not expected in it
        not_strict = {"load_module_strict": False} if _is_deepspeed(accelerator) else {"strict": False}
        accelerator.load_state(str(resume), **not_strict)
        state = json.loads((resume / STATE_FILE).read_text(encoding="utf-8"))
        accelerator.print(f"resumed from {resume} at step {state['step']}")
    metrics = out / "metrics.jsonl"
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "train_config.json").write_text(cfg.model_dump_json(indent=1), encoding="utf-8")
        # a resumed run continues the log from its checkpoint's step; a fresh run starts a new one
        kept = [x for x in metrics.read_text(encoding="utf-8").splitlines()
                if json.loads(x)["step"] <= state["step"]] if metrics.exists() and resume else []
        metrics.write_text("".join(x + "\n" for x in kept), encoding="utf-8")
    stop_at = min(total_steps, cfg.stop_after or total_steps)
    bar = tqdm(total=stop_at, initial=state["step"], disable=not accelerator.is_local_main_process, desc="lora")
    model.train()
    started, samples_seen, window = time.perf_counter(), 0, []
    clock = started - state.get("elapsed_s", 0.0)  # metrics' elapsed_s runs on across resumes
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    while state["step"] < stop_at:
        train_ds.shuffle_for_epoch(state["epoch"])
        skip = state["batches_in_epoch"]
        batches = accelerator.skip_first_batches(train_dl, skip) if skip else train_dl
        for batch in batches:
            with accelerator.accumulate(model):
                loss = model(**model_inputs(batch, wanted)).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad()
            state["batches_in_epoch"] += 1
            samples_seen += batch["input_ids"].shape[0]
            window.append(loss.detach().float())
            if not accelerator.sync_gradients:
                continue
            scheduler.step()
            state["step"] += 1
            step_loss = float(accelerator.reduce(torch.stack(window).mean(), "mean"))
            window = []
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
            record = {"step": state["step"], "loss": step_loss, "lr": scheduler.get_last_lr()[0],
                      "elapsed_s": round(time.perf_counter() - clock, 3)}
            if val_dl is not None and (state["step"] % cfg.eval_every == 0 or state["step"] == total_steps):
                record["val_loss"] = evaluate(model, val_dl, accelerator, wanted)
                accelerator.print(f"step {state['step']}: val_loss {record['val_loss']:.4f}")
            if accelerator.is_main_process and (state["step"] % cfg.log_every == 0 or "val_loss" in record
                                                or state["step"] in (1, stop_at)):
                with open(metrics, "a", encoding="utf-8") as f:
                    f.write(json.dumps(record) + "\n")
            if state["step"] % cfg.save_every == 0 or state["step"] == stop_at:
                state["elapsed_s"] = round(time.perf_counter() - clock, 3)
                save_checkpoint(accelerator, model, out, state, cfg.keep_checkpoints)
            if state["step"] >= stop_at:
                break
        else:
            state["epoch"] += 1
            state["batches_in_epoch"] = 0
    bar.close()
    elapsed = time.perf_counter() - started
    if state["step"] >= total_steps:
        save_adapter(accelerator, model, out)
    history = [json.loads(x) for x in metrics.read_text(encoding="utf-8").splitlines()] if metrics.exists() else []
    if accelerator.is_main_process and history:
        plot_losses(history, out / "loss.png")
    summary = {
        "steps": state["step"], "total_steps": total_steps, "finished": state["step"] >= total_steps,
        "samples_per_s": samples_seen * accelerator.num_processes / max(elapsed, 1e-9), "seconds": elapsed,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
        "trainable_params": sum(p.numel() for p in params), "lora_modules": len(lora_module_names(model)),
        "history": history,
    }
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return TrainResult(summary, accelerator.unwrap_model(model))


def plot_losses(history: list[dict], path: Path) -> None:
    """Training loss per logged step and validation loss, one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([r["step"] for r in history], [r["loss"] for r in history], label="train")
    val = [r for r in history if "val_loss" in r]
    if val:
        ax.plot([r["step"] for r in val], [r["val_loss"] for r in val], "o-", label="val")
    ax.set(xlabel="optimizer step", ylabel="loss (assistant tokens)", title="RemoteGLM LoRA")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --- export -----------------------------------------------------------------------------------------------------------
def export(base: str, adapter: Path, out: Path, dtype: str = "auto", trust_remote_code: bool = False) -> Path:
    """Merge the adapter into the (unquantized) base with `merge_and_unload`; save a plain model dir + processor."""
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(base, dtype=dtype if dtype == "auto" else getattr(torch, dtype),
                                                        trust_remote_code=trust_remote_code)
    with peft_quiet():
        merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    merged.save_pretrained(out)
    AutoProcessor.from_pretrained(base, trust_remote_code=trust_remote_code).save_pretrained(out)
    return Path(out)


# --- CLI --------------------------------------------------------------------------------------------------------------
def _add_fields(parser: argparse.ArgumentParser, model: type[BaseModel]) -> None:
    """One flag per config field, help text from the field's docstring."""
    for name, field in model.model_fields.items():
        flag = "--" + name.replace("_", "-")
        # `int | None` -> int; Literal[...] and plain types stay as they are
        kind = field.annotation
        if isinstance(kind, types.UnionType):
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        # argparse %-formats help strings: a literal % must be doubled
        kwargs: dict[str, Any] = {"help": (field.description or "").replace("%", "%%"), "dest": name}
        if field.is_required():
            kwargs["required"] = True
        else:
            kwargs["default"] = argparse.SUPPRESS
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(kind) is Literal:
            kwargs["choices"] = typing.get_args(kind)
        else:
            kwargs["type"] = kind if kind in (int, float) else str
        parser.add_argument(flag, **kwargs)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m finetune.lora", description="LoRA / QLoRA fine-tuning of a VLM.")
    sub = p.add_subparsers(dest="command", required=True)
    _add_fields(sub.add_parser("train", help="train a LoRA adapter"), TrainConfig)
    e = sub.add_parser("export", help="merge an adapter into its base and save a plain model directory")
    e.add_argument("--base", required=True, help="the base the adapter was trained on")
    e.add_argument("--adapter", required=True, help="adapter directory written by `train`")
    e.add_argument("--out", required=True, help="output model directory")
    e.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"],
                   help="weights dtype of the merged model; 'auto' keeps the base checkpoint's")
    e.add_argument("--trust-remote-code", action="store_true")
    return p


def _cmd_train(args: argparse.Namespace) -> int:
    values = {k: v for k, v in vars(args).items() if k != "command"}
    try:
        cfg = TrainConfig(**values)
    except ValidationError as exc:  # name the flag, not the field
        problems = [f"--{str(e['loc'][0]).replace('_', '-')}: {e['msg']}" for e in exc.errors()]
        print("python -m finetune.lora train: error: " + "; ".join(problems), file=sys.stderr)
        return 2
    try:
        summary = train(cfg).summary
    except InputError as exc:
        print(f"python -m finetune.lora train: error: {exc}", file=sys.stderr)
        return 2
    summary.pop("history")
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary, indent=1))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    print(export(args.base, Path(args.adapter), Path(args.out), args.dtype, args.trust_remote_code))
    return 0


COMMANDS = {"train": _cmd_train, "export": _cmd_export}


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    return COMMANDS[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
