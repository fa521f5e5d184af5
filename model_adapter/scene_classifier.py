"""Batched scene classification of image tiles through RemoteGLM-mini's vision encoder and its UCM scene head.

No text generation: tiles go straight through the ResNet and the scene head (the same test-time views as the
model uses in chat, `VisionEncoder.tta_scene_probs`), a batch at a time. Used by the land-use map of large scenes
(`bot/landuse.py`); knows nothing about rasters or files.

    classifier = SceneClassifier.from_pretrained("checkpoints/remoteglm-mini")   # or .from_backend(backend)
    probs = classifier.classify(tiles)            # tiles (B, H, W, 3) uint8 -> (B, 21) float32, rows sum to 1
    classifier.classes[probs[0].argmax()]         # 'airplane'

Why UCM's 21 classes and not a merge with RSICD's 30: the mini's UCM head was trained on UCM tiles at ~0.3 m/px,
exactly the footprint the land-use map cuts (76.8 m per tile); RSICD images come at mixed resolutions (0.5-8+ m)
and several of its classes are not land cover at tile scale (church, school, center, square). The UCM head also
covers the land uses asked about most (harbor, storage tanks, residential densities, freeway, airplane, forest).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    import torch

# NOTE: torch and the mini's modules are imported where they are used, so that SceneClassifierError (which the
# web chat's land-use panel imports) comes without torch: the page is up before the model has loaded.

HEAD = "ucm"
INPUT_SIZE = 128  # the processor's resize target
# Images (tiles x test-time views) through the ResNet at once on CPU: bounds activation memory whatever the batch
# size (a GPU takes 8192).
MAX_VIEWS = 160


class SceneClassifierError(RuntimeError):
    """The model cannot classify scenes (no mini vision encoder with a UCM head). Bilingual message."""


class SceneClassifier:
    def __init__(self, vision: torch.nn.Module, heads: list, device: torch.device | str = "cpu", tta: bool = True):
        """`vision`: a mini `VisionEncoder`; `heads`: the config's scene_heads ([[name, classes], ...])."""
        import torch

        from model_adapter.mini.processing_remoteglm_mini import IMAGE_MEAN, IMAGE_STD
        from model_adapter.mini.vision_remoteglm_mini import head_list

        names = [name for name, _ in head_list(heads)]
        if HEAD not in names:
            raise SceneClassifierError(f"该模型没有 UCM 场景分类头，无法分块分析 (the model has no '{HEAD}' scene head)")
        start = sum(len(classes) for _, classes in head_list(heads)[: names.index(HEAD)])
        self.classes: list[str] = list(head_list(heads)[names.index(HEAD)][1])
        self.slice = slice(start, start + len(self.classes))
        self.vision = vision.eval()
        self.device = torch.device(device)
        self.tta = tta
        self.max_views = MAX_VIEWS if self.device.type == "cpu" else 8192
        self._mean = torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1)
        self._std = torch.tensor(IMAGE_STD).view(1, 3, 1, 1)

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str = "cpu", tta: bool = True) -> SceneClassifier:
        """Load only what classification needs from a saved mini directory (the decoder is dropped)."""
        import model_adapter.mini  # noqa: F401  (registers the mini with the Auto classes)
        from transformers import AutoModelForImageTextToText

        try:
            model = AutoModelForImageTextToText.from_pretrained(str(path), use_safetensors=True)
        except (OSError, ValueError) as exc:
            raise SceneClassifierError(f"无法加载场景分类模型 {path} (cannot load the scene classifier: {exc})") from exc
        return cls._from_model(model, device, tta)

    @classmethod
    def from_backend(cls, backend, fallback: str | Path | None = None, tta: bool = True) -> SceneClassifier:
        """Reuse the chat backend's mini when it is one (no second copy in memory); else load `fallback`
        (the shipped mini by default), so a GLM-4V or remote backend still gets a land-use map."""
        model = getattr(backend, "model", None)
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        if base is not None and getattr(getattr(base, "config", None), "model_type", "") == "remoteglm_mini":
            return cls._from_model(base, getattr(backend, "device", "cpu"), tta)
        if fallback is None:
            from settings import DEFAULT_MODEL_DIR

            fallback = DEFAULT_MODEL_DIR
        return cls.from_pretrained(fallback, tta=tta)

    @classmethod
    def _from_model(cls, model, device, tta: bool) -> SceneClassifier:
        import torch

        vision = getattr(getattr(model, "model", None), "vision", None)
        if vision is None:
            raise SceneClassifierError("该模型不是 RemoteGLM-mini，无法分块分析 (the model is not a RemoteGLM-mini)")
        device = torch.device(device)
        return cls(vision.to(device), model.config.scene_heads, device, tta)

    def pixel_values(self, tiles: np.ndarray | Sequence[Image.Image]) -> torch.Tensor:
        """(B, H, W, 3) uint8 tiles -> (B, 3, 128, 128) normalised, resized like the processor (PIL bicubic)."""
        import torch

        images = [t if isinstance(t, Image.Image) else Image.fromarray(np.ascontiguousarray(t)) for t in tiles]
        arrays = [np.asarray(im.convert("RGB").resize((INPUT_SIZE, INPUT_SIZE), Image.BICUBIC)) for im in images]
        x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div_(255.0)
        return (x - self._mean) / self._std

    @property
    def views(self) -> int:
        """Test-time views per tile: 20 (4 rotations x 5 crops) or 8 (dihedral) with TTA, else 1."""
        if not self.tta:
            return 1
        return 20 if self.vision.scene_crop else 8

    def classify(self, tiles: np.ndarray | Sequence[Image.Image]) -> np.ndarray:
        """Scene probabilities over `classes` for a batch of tiles: (B, len(classes)) float32. Large batches go
        through the network in chunks of at most `max_views` images."""
        if len(tiles) == 0:
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        step = max(1, self.max_views // self.views)
        return np.concatenate([self._classify(tiles[i : i + step]) for i in range(0, len(tiles), step)])

    def _classify(self, tiles: np.ndarray | Sequence[Image.Image]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            x = self.pixel_values(tiles).to(self.device, next(self.vision.parameters()).dtype)
            if not self.tta:
                logits = self.vision.forward_view(x)[2]
                probs = self.vision.scene_probs(logits)
            elif self.vision.scene_crop:  # the crop views ignore the dihedral logits
                probs = self.vision.tta_scene_probs(x, None)
            else:
                from model_adapter.mini.vision_remoteglm_mini import dihedral_views

                logits = self.vision.forward_view(dihedral_views(x).flatten(0, 1))[2]
                probs = self.vision.tta_scene_probs(x, logits)
            return probs[:, self.slice].float().cpu().numpy()


__all__ = ["SceneClassifier", "SceneClassifierError", "HEAD"]
