"""Train RemoteGLM-mini from scratch on CPU, one command:

    python -m finetune.mini --data-root ../shared/data --out checkpoints/remoteglm-mini

The orchestrator: stages run in order, each checkpointed under --work, so re-running the same command resumes where
it stopped:
1. vision: ResNet + scene heads on UCM + RSICD training images (`finetune.mini.vision`);
2. features: the frozen encoder's features of every training / validation image, 8 dihedral views
   (`finetune.mini.features`);
3. decoder: tokenizer from the training corpus, then the Llama decoder + projector on the conversation JSONL
   built by `finetune.data` (`finetune.mini.decoder`);
4. export: `save_pretrained` of model + processor into --out, the loss/accuracy curve PNG and the model card.
Seeded (--seed); one tqdm bar per stage; validation every epoch (vision) / every `val_every` steps (decoder).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import fields
from pathlib import Path

from finetune.mini.config import MiniTrainConfig


def load_images(cfg: MiniTrainConfig) -> dict:
    """The uint8 image cache of every dataset found under the data root (built on first use)."""
    from finetune.mini.images import ImageSet, load_or_build_cache

    datasets = tuple(d for d in ("ucm", "rsicd", "sydney") if (cfg.data_root / d / "dataset.json").exists())
    sets = load_or_build_cache(cfg.data_root, cfg.work / f"images-{cfg.image_size}.pt", cfg.image_size, datasets)
    if cfg.max_images:
        sets = {k: ImageSet(v.images[: cfg.max_images], v.labels[: cfg.max_images], v.splits[: cfg.max_images],
                            v.stems[: cfg.max_images]) for k, v in sets.items()}
    return sets


def run(cfg: MiniTrainConfig) -> Path:
    """The whole pipeline; returns the output model directory."""
    import torch

    from finetune.mini.decoder import stage_decoder
    from finetune.mini.export import stage_export
    from finetune.mini.features import stage_decoder_features
    from finetune.mini.vision import stage_source, stage_vision

    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    cfg.work.mkdir(parents=True, exist_ok=True)
    history: dict = {}
    t0 = time.time()
    sets = load_images(cfg)
    history.setdefault("seconds", {})["images"] = time.time() - t0
    encoder = stage_vision(cfg, sets, history)
    stage_source(cfg, sets, encoder, history)
    feats = stage_decoder_features(cfg, sets, encoder, history)
    model, tokenizer = stage_decoder(cfg, sets, encoder, feats, history)
    return stage_export(cfg, model, tokenizer, history)


def _add_dataclass_args(ap: argparse.ArgumentParser, dc, prefix: str = "") -> None:
    for f in fields(dc):
        val = getattr(dc, f.name)
        if hasattr(val, "__dataclass_fields__"):
            _add_dataclass_args(ap, val, prefix=f"{f.name}.")
            continue
        flag = "--" + (prefix + f.name).replace("_", "-")
        if isinstance(val, bool):
            ap.add_argument(flag, type=lambda s: s.lower() in ("1", "true", "yes"), default=val)
        elif isinstance(val, tuple):
            ap.add_argument(flag, type=lambda s: tuple(int(x) for x in s.split(",")), default=val)
        else:
            ap.add_argument(flag, type=type(val), default=val)


def parse_config(argv: list[str] | None = None) -> MiniTrainConfig:
    cfg = MiniTrainConfig()
    ap = argparse.ArgumentParser(prog="python -m finetune.mini", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_dataclass_args(ap, cfg)
    ns = vars(ap.parse_args(argv))
    for key, val in ns.items():
        target, name = cfg, key
        if "." in key:
            sub, name = key.split(".", 1)
            target = getattr(cfg, sub)
        setattr(target, name, val)
    return cfg


def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(argv)
    out = run(cfg)
    print(f"model written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
