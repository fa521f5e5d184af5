"""Decoded-image cache for RemoteGLM-mini training: every UCM / RSICD / Sydney image, resized once to a square
uint8 tensor, with its split and scene label (from the file naming of each dataset).

Decoding 13k JPEGs takes ~1 minute on one core; the cache (~640 MB at 128 px) is saved under the run's output
folder and reused on resume. Run alone: `python -m finetune.mini.images --data-root ../shared/data --out runs/cache.pt`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vocabulary.datasets import data_root
from vocabulary.scenes import SCENES, scene_of

# Class order = the order of vocabulary.scenes (UCM alphabetical, RSICD alphabetical); -1 = no class known.
DATASET_CLASSES = {name: list(table) for name, table in SCENES.items()}
# Which split field to use: RSICD numbers comparable with papers use the Karpathy split.
SPLIT_FIELD = {"ucm": "split", "rsicd": "split_karpathy_partial", "sydney": "split"}


def scene_label(dataset: str, filename: str) -> int:
    """Index of the image's scene in DATASET_CLASSES[dataset], -1 when the file name carries no class."""
    key = scene_of(dataset, filename)
    return DATASET_CLASSES[dataset].index(key) if key is not None else -1


@dataclass
class ImageSet:
    """All images of one dataset: images (N,S,S,3) uint8, labels (N,) int64 (-1 unknown), splits, file stems."""

    images: torch.Tensor
    labels: torch.Tensor
    splits: list[str]
    stems: list[str]

    def index(self, split: str) -> torch.Tensor:
        return torch.tensor([i for i, s in enumerate(self.splits) if s == split], dtype=torch.long)


def load_image(path: Path, size: int) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB").resize((size, size), Image.BICUBIC))


def build_image_set(data_root: Path, dataset: str, size: int) -> ImageSet:
    """Decode the dataset's images that exist on disk (Sydney has only a few)."""
    meta = json.loads((data_root / dataset / "dataset.json").read_text())["images"]
    images, labels, splits, stems = [], [], [], []
    for rec in meta:
        path = data_root / dataset / "images" / (Path(rec["filename"]).stem + ".jpg")
        if not path.exists():
            continue
        images.append(load_image(path, size))
        labels.append(scene_label(dataset, rec["filename"]))
        splits.append(rec[SPLIT_FIELD[dataset]])
        stems.append(Path(rec["filename"]).stem)
    return ImageSet(torch.from_numpy(np.stack(images)), torch.tensor(labels), splits, stems)


def load_or_build_cache(data_root: Path, cache_path: Path, size: int, datasets: tuple[str, ...]) -> dict[str, ImageSet]:
    """Load the cache if it matches `size` and `datasets`, else build and save it."""
    if cache_path.exists():
        blob = torch.load(cache_path, weights_only=False)
        if blob["size"] == size and tuple(blob["datasets"]) == tuple(datasets):
            return {k: ImageSet(**v) for k, v in blob["sets"].items()}
    sets = {d: build_image_set(data_root, d, size) for d in datasets}
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"size": size, "datasets": list(datasets), "sets": {k: vars(v) for k, v in sets.items()}}, cache_path)
    return sets


@dataclass
class CacheConfig:
    """Flags of the standalone cache build."""

    data_root: Path = field(default_factory=data_root)
    out: Path = Path("runs/mini-cache.pt")
    size: int = 128


def main() -> None:
    from settings import config_from_argv

    args = config_from_argv(CacheConfig, description=__doc__, env_prefix="")
    sets = load_or_build_cache(args.data_root, args.out, args.size, ("ucm", "rsicd", "sydney"))
    for name, s in sets.items():
        print(name, tuple(s.images.shape), {sp: int((np.array(s.splits) == sp).sum()) for sp in set(s.splits)})


if __name__ == "__main__":
    main()
