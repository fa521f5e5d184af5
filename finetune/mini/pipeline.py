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

import time
from pathlib import Path

from finetune.mini.config import MiniTrainConfig
from settings import config_from_argv


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


ENV_PREFIX = "REMOTEGLM_MINI_"


def parse_config(argv: list[str] | None = None) -> MiniTrainConfig:
    """The config from the command line (`--seed`, `--vision.epochs`, ...), then `REMOTEGLM_MINI_*`, then defaults."""
    return config_from_argv(MiniTrainConfig, argv, prog="python -m finetune.mini", description=__doc__,
                            env_prefix=ENV_PREFIX)


def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(argv)
    out = run(cfg)
    print(f"model written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
