"""Training samples: reading conversation JSONL / original JSON, chat-template encoding with labels on the
assistant tokens only, the dataset and its collate function."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from finetune.data import ORIGINAL_FOLDERS
from imagery import load_image
from finetune.lora.config import IGNORE, TOKEN_KEYS

log = logging.getLogger("finetune.lora")


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
