"""Configuration of RemoteGLM-mini: a small ResNet vision encoder feeding a tiny Llama-style decoder.

The text decoder is a stock `LlamaConfig` sub-config (so caching, masks and RoPE come from transformers); the vision
side is described by the flat `vision_*` fields below. Registered with the Auto classes in `model_adapter.mini`.
"""

from __future__ import annotations

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from .vision_remoteglm_mini import head_list


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
    # With vision_tta, take the scene probabilities from 5 crops (4 corners + centre) of this fraction of the side,
    # 4 rotations each, instead of the whole image's 8 views; 0 = whole image. NOTE: 0.75 measured UCM val / test
    # accuracy of the UCM head 0.876 / 0.876 vs 0.848 / 0.857 on the whole image (the encoder trains on 0.6-1.0
    # crops resized to 96 px; 0.625 crops: 0.79 / 0.77).
    vision_scene_crop: float = 0.0
    # Scene heads of the auxiliary classifier, in logit order: [[name, [class keys...]], ...] (a dict is accepted
    # and converted). NOTE: stored as a list because config.json is written with sorted keys: a dict came back as
    # {"rsicd", "ucm"} and split the logits in the wrong places.
    scene_heads: list | dict | None = None
    # Heads whose probabilities feed the scene token (None: all). The shipped model uses ["ucm"]: see its card.
    scene_token_heads: list[str] | None = None
    # What the scene token sees of each head: "probs" (its view-averaged probabilities) or "onehot" (its top class
    # only). NOTE: "onehot" was introduced because the heads are far more confident on their own training images
    # (mean top probability 0.76 on UCM train vs 0.65 on UCM val), so a decoder trained on probabilities meets
    # unfamiliar, flatter inputs at test time; a top-class indicator looks the same on both.
    scene_token: str = "probs"
    image_token_id: int = 5
    tie_word_embeddings: bool = True

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.scene_heads = head_list(self.scene_heads)

    @property
    def num_image_tokens(self) -> int:
        return 2 + self.vision_grid * self.vision_grid

    def scene_token_mask(self) -> list[float]:
        """1.0 for the scene classes of the heads in `scene_token_heads` (all when None), else 0.0."""
        heads = head_list(self.scene_heads)
        keep = set(self.scene_token_heads) if self.scene_token_heads else {name for name, _ in heads}
        return [1.0 if name in keep else 0.0 for name, classes in heads for _ in classes]

    @property
    def num_scene_classes(self) -> int:
        return sum(len(classes) for _, classes in head_list(self.scene_heads))


__all__ = ["RemoteGLMMiniConfig"]
