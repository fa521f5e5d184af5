"""Configuration of RemoteGLM-mini: a small ResNet vision encoder feeding a tiny Llama-style decoder.

The text decoder is a stock `LlamaConfig` sub-config (so caching, masks and RoPE come from transformers); the vision
side is described by the flat `vision_*` fields below. Registered with the Auto classes in `model_adapter.mini`.
"""

from __future__ import annotations

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec


class RemoteGLMMiniConfig(PreTrainedConfig):
    """Config for `RemoteGLMMiniForConditionalGeneration`.

    Visual tokens per image: 1 global feature + 1 scene-probability token + `vision_grid**2` grid tokens. The
    processor expands each `<image>` placeholder into `num_image_tokens` copies of `image_token_id`.
    """

    model_type = "remoteglm_mini"
    sub_configs_defaults = {
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama"),
    }

    text_config: dict | PreTrainedConfig | None = None
    # Width of each ResNet stage (the first stage follows a stride-4 stem).
    vision_widths: list[int] | tuple[int, ...] = (32, 64, 128, 256)
    # Basic blocks per stage.
    vision_depths: list[int] | tuple[int, ...] = (1, 1, 1, 1)
    # Widths of the tiny dataset-style CNN whose probabilities gate the scene heads (None: no gating).
    vision_source_widths: list[int] | tuple[int, ...] | None = None
    # Side of the pooled feature grid; grid**2 grid tokens per image.
    vision_grid: int = 4
    # Square input side in pixels (the image processor resizes to it).
    image_size: int = 128
    # Average the global feature and scene probabilities over the 8 dihedral views at inference.
    vision_tta: bool = True
    # Scene heads of the auxiliary classifier: name -> class keys (e.g. {"ucm": [...21], "rsicd": [...30]}).
    scene_heads: dict | None = None
    # Heads whose probabilities feed the scene token (None: all). The shipped model uses ["ucm"]: see its card.
    scene_token_heads: list[str] | None = None
    image_token_id: int = 5
    tie_word_embeddings: bool = True

    @property
    def num_image_tokens(self) -> int:
        return 2 + self.vision_grid * self.vision_grid

    def scene_token_mask(self) -> list[float]:
        """1.0 for the scene classes of the heads in `scene_token_heads` (all when None), else 0.0."""
        heads = self.scene_heads or {}
        keep = set(self.scene_token_heads) if self.scene_token_heads else set(heads)
        return [1.0 if name in keep else 0.0 for name, classes in heads.items() for _ in classes]

    @property
    def num_scene_classes(self) -> int:
        return sum(len(v) for v in (self.scene_heads or {}).values())


__all__ = ["RemoteGLMMiniConfig"]
