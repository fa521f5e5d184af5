"""The one checkpoint write of the mini pipeline and its history log.

`save_atomic`: `torch.save` to a temporary file, then an atomic rename, so a run killed mid-write leaves the previous
checkpoint intact (every stage resumes from its last one). `log_and_save` is a stage's per-epoch / per-validation
step: append the stats to the run history, add the elapsed time, print one JSON line, write the checkpoint;
`resume` reads it back (restoring the history) for the same stage.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch


def save_atomic(state: dict, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def log_and_save(history: dict, stage: str, stats: dict, t_prev: float, state: dict, path: Path, bar) -> float:
    """Log `stats` under history[stage], count the seconds since `t_prev`, print them on `bar`, checkpoint
    `state` with the stage's history; returns the new `t_prev`."""
    history.setdefault(stage, []).append(stats)
    secs = history.setdefault("seconds", {})
    secs[stage] = secs.get(stage, 0.0) + time.time() - t_prev
    now = time.time()
    bar.write(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in stats.items()}))
    save_atomic({**state, "history": history[stage], "seconds": secs}, path)
    return now


def resume(path: Path, history: dict, stage: str) -> dict | None:
    """The stage's checkpoint written by `log_and_save` (history[stage] and the seconds restored), or None."""
    if not path.exists():
        return None
    ckpt = torch.load(path, weights_only=False)
    history[stage] = ckpt["history"]
    history["seconds"] = ckpt.get("seconds", {})
    return ckpt
