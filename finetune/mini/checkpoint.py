"""The one checkpoint write of the mini pipeline: `torch.save` to a temporary file, then an atomic rename, so a
run killed mid-write leaves the previous checkpoint intact (every stage resumes from its last one)."""

from __future__ import annotations

from pathlib import Path

import torch


def save_atomic(state: dict, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)
