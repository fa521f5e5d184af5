"""Stage 1 of RemoteGLM-mini training: the ResNet vision encoder + scene heads, on UCM + RSICD training images.

Boundary: tensors in, a trained `VisionEncoder` out; knows nothing about text. Augmentation runs batch-wise as one
affine `grid_sample` (random dihedral view, scale and shift) on the uint8 cache from `finetune.mini.images`.
`stage_vision` / `stage_source` are the pipeline's resumable stages (`finetune.mini.pipeline`); standalone sweep:
`python -m finetune.mini.vision --cache runs/mini-cache.pt`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from finetune.mini.checkpoint import log_and_save, resume, save_atomic
from finetune.mini.config import SCENE_HEADS, MiniTrainConfig, vision_config
from finetune.mini.images import DATASET_CLASSES, ImageSet
from finetune.mini.vision_config import VisionTrainConfig

MEAN = torch.tensor([0.40, 0.42, 0.38]).view(1, 3, 1, 1)
STD = torch.tensor([0.20, 0.19, 0.19]).view(1, 3, 1, 1)
# Dihedral group as 2x2 matrices acting on (x, y): 4 rotations, then the same composed with a mirror.
_ROT = [torch.tensor([[1.0, 0], [0, 1]]), torch.tensor([[0.0, -1], [1, 0]]), torch.tensor([[-1.0, 0], [0, -1]]),
        torch.tensor([[0.0, 1], [-1, 0]])]  # fmt: skip
DIHEDRAL = torch.stack(_ROT + [r @ torch.tensor([[-1.0, 0], [0, 1]]) for r in _ROT])  # (8, 2, 2)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B,S,S,3) -> normalised float (B,3,S,S)."""
    x = images.permute(0, 3, 1, 2).float().div_(255.0)
    return (x - MEAN.to(x.device)) / STD.to(x.device)


def augment(images: torch.Tensor, out_size: int, min_scale: float, gen: torch.Generator) -> torch.Tensor:
    """Random dihedral view + random square crop (scale in [min_scale, 1], random position), resized to out_size."""
    x = to_float(images)
    b = x.shape[0]
    d = DIHEDRAL[torch.randint(0, 8, (b,), generator=gen)]  # (B, 2, 2)
    scale = min_scale + (1 - min_scale) * torch.rand(b, generator=gen)
    shift = (torch.rand(b, 2, generator=gen) * 2 - 1) * (1 - scale)[:, None]
    theta = torch.cat([d * scale[:, None, None], shift[:, :, None]], dim=2).to(x.device)  # (B, 2, 3)
    grid = F.affine_grid(theta, (b, 3, out_size, out_size), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def head_slices(heads: dict[str, int]) -> dict[str, slice]:
    out, start = {}, 0
    for name, n in heads.items():
        out[name] = slice(start, start + n)
        start += n
    return out


def scene_loss(logits: torch.Tensor, labels: torch.Tensor, head_idx: torch.Tensor, slices: list[slice],
               smoothing: float) -> torch.Tensor:
    """Cross-entropy of each sample within its own dataset's head; labels -1 are ignored."""
    total, count = logits.new_zeros(()), 0
    for h, sl in enumerate(slices):
        sel = (head_idx == h) & (labels >= 0)
        if sel.any():
            total = total + F.cross_entropy(logits[sel][:, sl], labels[sel], label_smoothing=smoothing,
                                            reduction="sum")
            count += int(sel.sum())
    return total / max(count, 1)


@torch.no_grad()
def evaluate_accuracy(encoder, images: torch.Tensor, labels: torch.Tensor, sl: slice, tta: bool,
                      device: str = "cpu", batch: int = 128) -> float:
    """Top-1 accuracy of one head on labelled images (full cached resolution, optional 8-view averaging)."""
    was = encoder.training
    encoder.eval()
    correct = 0
    keep = labels >= 0
    images, labels = images[keep], labels[keep]
    for i in range(0, len(images), batch):
        x = to_float(images[i : i + batch].to(device))
        logits = encoder(x, tta=tta)["logits"][:, sl]
        correct += int((logits.argmax(-1).cpu() == labels[i : i + batch]).sum())
    encoder.train(was)
    return correct / max(len(images), 1)


def train_vision(encoder, sets: dict[str, ImageSet], heads: dict[str, int], cfg: VisionTrainConfig,
                 device: str = "cpu", on_epoch=None, start_epoch: int = 0, optimizer_state=None,
                 progress=None) -> torch.optim.Optimizer:
    """Train `encoder` in place. `on_epoch(epoch, stats, optimizer)` is called after each epoch (validation,
    checkpoints); `progress` is an optional tqdm-like object updated once per step."""
    names = [n for n in heads if n in sets and (n == "ucm" or cfg.use_rsicd)]
    slices = head_slices(heads)
    pools_img, pools_lab, pools_head = [], [], []
    for h, name in enumerate(heads):
        if name not in names:
            continue
        idx = sets[name].index("train")
        idx = idx[sets[name].labels[idx] >= 0]
        reps = cfg.ucm_repeat if name == "ucm" else 1
        pools_img += [sets[name].images[idx]] * reps
        pools_lab += [sets[name].labels[idx]] * reps
        pools_head += [torch.full((len(idx),), h)] * reps
    images, labels, head_idx = torch.cat(pools_img), torch.cat(pools_lab), torch.cat(pools_head)
    images = images.to(device)
    n = len(images)
    steps_per_epoch = n // cfg.batch_size
    total = steps_per_epoch * cfg.epochs
    opt = torch.optim.AdamW(encoder.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if optimizer_state is not None:
        opt.load_state_dict(optimizer_state)
    warm = steps_per_epoch

    def lr_at(step: int) -> float:
        if step < warm:
            return cfg.lr * (step + 1) / warm
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    sl_list = [slices[k] for k in heads]
    encoder.train()
    for epoch in range(start_epoch, cfg.epochs):
        gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        perm = torch.randperm(n, generator=gen)
        t0, loss_sum, correct, seen = time.time(), 0.0, 0, 0
        for s in range(steps_per_epoch):
            step = epoch * steps_per_epoch + s
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            b = perm[s * cfg.batch_size : (s + 1) * cfg.batch_size]
            x = augment(images[b], cfg.train_size, cfg.min_scale, gen)
            y, hi = labels[b].to(device), head_idx[b].to(device)
            logits = encoder.forward_view(x)[2]
            loss = scene_loss(logits, y, hi, sl_list, cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(b)
            with torch.no_grad():
                for h, sl in enumerate(sl_list):
                    sel = hi == h
                    correct += int((logits[sel][:, sl].argmax(-1) == y[sel]).sum())
            seen += len(b)
            if progress is not None:
                progress.update(1)
                progress.set_postfix(stage="vision", epoch=epoch + 1, loss=f"{loss_sum / seen:.3f}", refresh=False)
        stats = {"epoch": epoch + 1, "train_loss": loss_sum / seen, "train_acc": correct / seen,
                 "seconds": time.time() - t0}
        if on_epoch is not None:
            on_epoch(epoch, stats, opt)
    return opt


def stage_vision(cfg: MiniTrainConfig, sets: dict[str, ImageSet], history: dict) -> "torch.nn.Module":
    """Stage 1, resumable from work/vision.pt (saved after every epoch)."""
    from model_adapter.mini.vision_remoteglm_mini import VisionEncoder

    torch.manual_seed(cfg.seed)
    encoder = VisionEncoder(vision_config(cfg))
    for m in encoder.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    ckpt_path = cfg.work / "vision.pt"
    start, opt_state = 0, None
    if cfg.vision_from:
        load_vision_weights(encoder, Path(cfg.vision_from))
        history["vision_from"] = str(cfg.vision_from)
        return encoder.eval()
    ckpt = resume(ckpt_path, history, "vision")
    if ckpt is not None:
        encoder.load_state_dict(ckpt["encoder"], strict=False)  # the source net is trained by stage_source
        start, opt_state = ckpt["epoch"], ckpt["optimizer"]
    if start >= cfg.vision.epochs:
        return encoder.eval()
    heads = {k: len(DATASET_CLASSES[k]) for k in SCENE_HEADS}
    ucm = sets["ucm"]
    val_idx = ucm.index("val")
    sl = head_slices(heads)["ucm"]
    n_train = sum(int((s.labels[s.index("train")] >= 0).sum()) * (cfg.vision.ucm_repeat if k == "ucm" else 1)
                  for k, s in sets.items() if k in heads and (k == "ucm" or cfg.vision.use_rsicd))
    steps = n_train // cfg.vision.batch_size
    bar = tqdm(total=steps * cfg.vision.epochs, initial=steps * start, desc="vision", dynamic_ncols=True,
               mininterval=0.5 if sys.stderr.isatty() else 30)
    t_prev = time.time()

    def on_epoch(epoch: int, stats: dict, opt) -> None:
        nonlocal t_prev
        if len(val_idx):
            stats["val_acc"] = evaluate_accuracy(encoder, ucm.images[val_idx], ucm.labels[val_idx], sl, tta=False)
        t_prev = log_and_save(history, "vision", stats, t_prev, {"encoder": encoder.state_dict(),
                              "optimizer": opt.state_dict(), "epoch": epoch + 1}, ckpt_path, bar)

    train_vision(encoder, sets, heads, cfg.vision, "cpu", on_epoch, start, opt_state, bar)
    bar.close()
    return encoder.eval()


def load_vision_weights(encoder, model_dir: Path) -> None:
    """The vision encoder (backbone, scene heads, source net if any) of the RemoteGLM-mini in `model_dir`, every
    weight or a clear error: a partial or reshaped encoder would give the decoder features it was never trained on."""
    from safetensors.torch import load_file

    state = {}
    for shard in sorted(model_dir.glob("*.safetensors")):
        state.update({k.removeprefix("model.vision."): v for k, v in load_file(shard).items()
                      if k.startswith("model.vision.")})
    own = encoder.state_dict()
    bad = sorted(set(own) ^ set(state)) + [k for k in own if k in state and own[k].shape != state[k].shape]
    if bad:
        raise ValueError(f"{model_dir} has no vision encoder of this config (mismatched: {bad[:5]})")
    encoder.load_state_dict(state)


def stage_source(cfg: MiniTrainConfig, sets: dict[str, ImageSet], encoder, history: dict) -> None:
    """Stage 1b: the dataset-style net (which scene head applies), class-balanced over datasets; resumable."""
    path = cfg.work / "source.pt"
    if encoder.source is None or cfg.vision_from:  # vision_from: the start model's source net came with it
        return
    if path.exists():
        ckpt = torch.load(path, weights_only=False)
        encoder.source.load_state_dict(ckpt["source"])
        history["source"], history.setdefault("seconds", {})["source"] = ckpt["history"], ckpt["seconds"]
        return
    t0 = time.time()
    torch.manual_seed(cfg.seed)
    names = [n for n in SCENE_HEADS if n in sets]
    train = {n: sets[n].index("train") for n in names}
    per = max(len(v) for v in train.values())
    imgs = torch.cat([sets[n].images[train[n][torch.arange(per) % len(train[n])]] for n in names])
    labels = torch.cat([torch.full((per,), i) for i, n in enumerate(names)])
    net = encoder.source
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=0.05)
    steps = len(imgs) // cfg.vision.batch_size
    bar = tqdm(total=steps * cfg.source_epochs, desc="source", dynamic_ncols=True,
               mininterval=0.5 if sys.stderr.isatty() else 30)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=steps * cfg.source_epochs)
    stats = []
    for epoch in range(cfg.source_epochs):
        net.train()
        gen = torch.Generator().manual_seed(cfg.seed * 7919 + epoch)
        perm = torch.randperm(len(imgs), generator=gen)
        for s in range(steps):
            b = perm[s * cfg.vision.batch_size : (s + 1) * cfg.vision.batch_size]
            # Crops near full size: the style cue is partly the ground resolution, which zooming would change.
            x = augment(imgs[b], cfg.image_size, 0.85, gen)
            loss = torch.nn.functional.cross_entropy(net(x), labels[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
        net.eval()
        acc = {}
        with torch.no_grad():
            for i, n in enumerate(names):
                idx = sets[n].index("val")
                if len(idx):
                    pred = torch.cat([net(to_float(sets[n].images[idx[j : j + 256]])).argmax(-1)
                                      for j in range(0, len(idx), 256)])
                    acc[f"val_acc_{n}"] = float((pred == i).float().mean())
        stats.append({"epoch": epoch + 1, "loss": loss.item(), **acc})
        bar.write(json.dumps(stats[-1]))
    bar.close()
    history["source"] = stats
    history.setdefault("seconds", {})["source"] = time.time() - t0
    save_atomic({"source": net.state_dict(), "history": stats, "seconds": time.time() - t0}, path)


def main() -> None:
    """Sweep entry point: train one configuration and print UCM val/test accuracy as JSON lines."""
    from model_adapter.mini.vision_remoteglm_mini import VisionEncoder

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--widths", default="32,64,128,256")
    ap.add_argument("--depths", default="1,1,1,1")
    ap.add_argument("--tag", default="run")
    for f, v in asdict(VisionTrainConfig()).items():
        ap.add_argument(f"--{f.replace('_', '-')}", type=type(v) if not isinstance(v, bool) else int, default=v)
    args = ap.parse_args()
    cfg = VisionTrainConfig(**{f: (bool(getattr(args, f)) if isinstance(v, bool) else getattr(args, f))
                               for f, v in asdict(VisionTrainConfig()).items()})
    torch.manual_seed(cfg.seed)
    blob = torch.load(args.cache, weights_only=False)
    sets = {k: ImageSet(**v) for k, v in blob["sets"].items()}
    heads = {"ucm": len(DATASET_CLASSES["ucm"]), "rsicd": len(DATASET_CLASSES["rsicd"])}
    # the pipeline's own vision config (grid, heads), with the sweep's widths / depths and whole-image scene views
    shape = MiniTrainConfig(widths=tuple(int(w) for w in args.widths.split(",")),
                            depths=tuple(int(d) for d in args.depths.split(",")), scene_crop=0.0)
    enc = VisionEncoder(vision_config(shape)).to(args.device)
    for m in enc.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    ucm = sets["ucm"]
    sl = head_slices(heads)["ucm"]
    t_start = time.time()

    def on_epoch(epoch, stats, opt):
        if (epoch + 1) % 5 == 0 or epoch + 1 == cfg.epochs:
            for split in ("val", "test"):
                idx = ucm.index(split)
                stats[f"{split}_acc"] = evaluate_accuracy(enc, ucm.images[idx], ucm.labels[idx], sl, False, args.device)
                stats[f"{split}_acc_tta"] = evaluate_accuracy(enc, ucm.images[idx], ucm.labels[idx], sl, True, args.device)
        stats["elapsed"] = time.time() - t_start
        print(json.dumps({"tag": args.tag, **stats}), flush=True)

    train_vision(enc, sets, heads, cfg, args.device, on_epoch)


if __name__ == "__main__":
    main()
