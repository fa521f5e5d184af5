"""Stage 2 of RemoteGLM-mini training: the frozen vision encoder's features of every train / val image.

Boundary: gets the image cache (`finetune.mini.images`) and the trained `VisionEncoder`; returns a dict of tensors
that `finetune.mini.decoder` trains on. Cached on disk with the encoder's digest, recomputed when it changes.
"""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from finetune.mini.images import ImageSet
from finetune.mini.vision import to_float
from model_adapter.mini.vision_remoteglm_mini import dihedral_views


@torch.no_grad()
def encode_views(encoder, images: torch.Tensor, batch: int = 64, desc: str = "features"
                 ) -> dict[str, torch.Tensor]:
    """uint8 (N,S,S,3) -> global (N,C) averaged over the 8 dihedral views, probs (N,K) over the model's test-time
    views (`VisionEncoder.tta_scene_probs`), grid (N,8,G*G,C) fp16."""
    encoder.eval()
    out = {"global": [], "probs": [], "grid": []}
    for i in tqdm(range(0, len(images), batch), desc=desc, dynamic_ncols=True,
                  mininterval=0.5 if sys.stderr.isatty() else 30):
        x = to_float(images[i : i + batch])
        views = dihedral_views(x)  # (8, B, 3, S, S)
        n, b = views.shape[:2]
        pooled, grid, logits = encoder.forward_view(views.flatten(0, 1))
        out["global"].append(pooled.view(n, b, -1).mean(0))
        out["probs"].append(encoder.tta_scene_probs(x, logits))  # the same views as the model at inference
        out["grid"].append(grid.view(n, b, *grid.shape[1:]).transpose(0, 1).half())
    return {k: torch.cat(v) for k, v in out.items()}


def state_digest(module: torch.nn.Module) -> str:
    """SHA-256 of a module's parameters and buffers (names, shapes, values)."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def stage_features(sets: dict[str, ImageSet], encoder, path: Path) -> dict:
    """Features of every train/val image, keyed by "dataset/stem" -> row; cached in `path` together with the
    encoder's digest, and recomputed when the cache was made by another encoder (a retrained or changed vision
    stage in the same work folder would otherwise train the decoder on another encoder's features)."""
    t0 = time.time()
    digest = f"{state_digest(encoder)}/crop={encoder.scene_crop}"
    if path.exists():
        feats = torch.load(path, weights_only=False)
        if feats.get("encoder_digest") == digest:
            return feats
        print(f"{path}: made by another vision encoder; recomputing", file=sys.stderr)
    keys, chunks = [], []
    for name, s in sets.items():
        idx = torch.tensor([i for i, sp in enumerate(s.splits) if sp in ("train", "val")], dtype=torch.long)
        if len(idx) == 0:
            continue
        keys += [f"{name}/{s.stems[i]}" for i in idx.tolist()]
        chunks.append(encode_views(encoder, s.images[idx], desc=f"features {name}"))
    feats = {k: torch.cat([c[k] for c in chunks]) for k in ("global", "probs", "grid")}
    feats["index"] = {k: i for i, k in enumerate(keys)}
    feats["encoder_digest"] = digest
    feats["seconds"] = time.time() - t0
    torch.save(feats, path)
    return feats


@torch.no_grad()
def gate_features(feats: dict, sets: dict[str, ImageSet], encoder, path: Path) -> dict:
    """Replace feats["probs"] by the source-gated probabilities (8-view source average), as the model computes them."""
    if encoder.source is None:
        return feats
    if path.exists():
        source = torch.load(path, weights_only=False)
    else:
        encoder.eval()
        rows = {}
        for name, s in sets.items():
            for i, stem in enumerate(s.stems):
                if f"{name}/{stem}" in feats["index"]:
                    rows[feats["index"][f"{name}/{stem}"]] = (name, i)
        source = torch.zeros(len(feats["index"]), len(encoder.head_sizes))
        order = sorted(rows)
        for j in tqdm(range(0, len(order), 128), desc="source probs", mininterval=0.5 if sys.stderr.isatty() else 30):
            chunk = order[j : j + 128]
            x = torch.stack([to_float(sets[rows[r][0]].images[rows[r][1]][None])[0] for r in chunk])
            views = dihedral_views(x)
            n, b = views.shape[:2]
            source[chunk] = encoder.source(views.flatten(0, 1)).softmax(-1).view(n, b, -1).mean(0)
        torch.save(source, path)
    return {**feats, "probs": encoder.gate(feats["probs"], source), "source": source}




def stage_decoder_features(cfg, sets: dict[str, ImageSet], encoder, history: dict) -> dict:
    """Stage 2: the frozen encoder's features of every training / validation image (cached in work/features.pt),
    source-gated when the encoder has a source net; the compute time is logged, also when read from the cache."""
    secs = history.setdefault("seconds", {})
    t0 = time.time()
    feats = stage_features(sets, encoder, cfg.work / "features.pt")
    feats = gate_features(feats, sets, encoder, cfg.work / "source_probs.pt")
    secs.setdefault("features", feats.get("seconds", time.time() - t0))
    return feats
