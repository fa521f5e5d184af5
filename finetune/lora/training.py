"""The training run: up-front input checks (before any model is loaded), then the accelerate training loop with
validation loss, checkpoints, metrics.jsonl and the loss plot."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from finetune.lora.checkpoints import (
    _is_deepspeed, _keep_trainable_weights, latest_checkpoint, save_adapter, save_checkpoint,
)
from finetune.lora.config import IGNORE, STATE_FILE, TrainConfig
from finetune.lora.loading import load_for_training, lora_module_names, resolve_dtype
from finetune.lora.plots import plot_losses
from finetune.lora.samples import ConversationDataset, InputError, collate, read_samples, stop_token_ids
from model_adapter.registry import quirks_for


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
