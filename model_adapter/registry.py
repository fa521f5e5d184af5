"""Architecture quirks, keyed by `config.model_type`.

Everything that differs between VLM families and that the generic backend must know lives here, not in
if/else chains: the placeholder token a chat template writes for an image, and which processor outputs the
model's `generate()` takes (GLM-4V and Qwen2-VL need `image_grid_thw` and, since transformers 5,
`mm_token_type_ids`). A family that is not listed gets every processor output passed through.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


def _rows_per_image(pixel_values, grid):
    """RemoteGLM-mini and LLaVA-likes: pixel_values is (I, 3, S, S), one row per image."""
    return [(pixel_values[i:i + 1], None) for i in range(pixel_values.shape[0])]


def _patches_per_image(pixel_values, grid):
    """GLM-4V / Qwen-VL: pixel_values is (sum of t*h*w, D) patches; image_grid_thw (I, 3) says whose they are."""
    sizes = grid.prod(-1).tolist()
    return [(rows, grid[i:i + 1]) for i, rows in enumerate(pixel_values.split(sizes))]


def _encode_grid(model, parts: list) -> list:
    """Vision features per image, (tokens, d) each, from get_image_features(pixel_values, image_grid_thw)."""
    import torch

    pixels = torch.cat([p for p, _ in parts])
    grid = torch.cat([g for _, g in parts])
    return list(model.get_image_features(pixels, grid, return_dict=True).pooler_output)


def _encode_mini(model, parts: list) -> list:
    import torch

    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # under a peft adapter
    embeds, _ = base.model.get_image_features(torch.cat([p for p, _ in parts]))  # (I, N, d)
    return list(embeds)


def _feed_mm_encoder_outputs(model, inputs: dict, features: list) -> dict:
    """transformers 5's own route for pre-encoded images: generate(mm_encoder_outputs=...), used in prefill only."""
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    inputs["mm_encoder_outputs"] = {"image": BaseModelOutputWithPooling(pooler_output=tuple(features))}
    return inputs


def _feed_inputs_embeds(model, inputs: dict, features: list) -> dict:
    """Models without mm_encoder_outputs (RemoteGLM-mini): the prompt's embeddings with the image features written
    over the placeholder tokens, as the model's own forward does; generate(inputs_embeds=...) then decodes as usual."""
    import torch

    ids = inputs.pop("input_ids")  # (B, T)
    embeds = model.get_input_embeddings()(ids)  # (B, T, d)
    mask = ids == model.config.image_token_id
    embeds[mask] = torch.cat(features).to(embeds.dtype)  # (sum of N, d), in prompt order
    inputs["inputs_embeds"] = embeds
    return inputs


@dataclass(frozen=True)
class Quirks:
    image_token: str  # what the chat template writes once per image, before the processor expands it
    model_inputs: tuple[str, ...] | None = None  # processor outputs generate() takes; None: all of them
    # Module-name fragments of the vision tower and projector: kept unquantized by bitsandbytes (small, and
    # quality-sensitive) and left out of LoRA unless asked.
    vision_modules: tuple[str, ...] = ("visual", "vision_tower", "vision_model", "multi_modal_projector")
    # Per-image vision features for the feature cache: how to split processor pixel_values by image, how to
    # encode such parts into one feature tensor per image, and how to hand cached features to generate() in place
    # of pixel_values. None: the family is not cached (every turn encodes its images).
    image_features: Callable[[Any, Any], list] | None = None
    encode_images: Callable[[Any, list], list] | None = None
    feed_features: Callable[[Any, dict, list], dict] = _feed_mm_encoder_outputs


_GLM_V = Quirks(
    image_token="<|image|>",
    model_inputs=("input_ids", "attention_mask", "pixel_values", "image_grid_thw", "mm_token_type_ids"),
    image_features=_patches_per_image, encode_images=_encode_grid,
)
_QWEN_VL = Quirks(
    image_token="<|image_pad|>",
    model_inputs=("input_ids", "attention_mask", "pixel_values", "image_grid_thw", "mm_token_type_ids"),
    image_features=_patches_per_image, encode_images=_encode_grid,
)
_QWEN3_VL = Quirks(
    image_token="<|image_pad|>",
    model_inputs=("input_ids", "attention_mask", "pixel_values", "image_grid_thw", "mm_token_type_ids"),
)

QUIRKS: dict[str, Quirks] = {
    "glm4v": _GLM_V,  # GLM-4.1V-9B(-Thinking/-Base), GLM-4.6V-Flash
    "glm4v_moe": _GLM_V,  # GLM-4.5V, GLM-4.6V
    "qwen2_vl": _QWEN_VL,
    "qwen2_5_vl": _QWEN_VL,
    # Qwen3-VL's vision tower also returns deepstack features: not cached (yet), every turn encodes its images.
    "qwen3_vl": _QWEN3_VL,
    "qwen3_vl_moe": _QWEN3_VL,
    "remoteglm_mini": Quirks(
        image_token="<image>", model_inputs=("input_ids", "attention_mask", "pixel_values"),
        vision_modules=("vision", "projector"), image_features=_rows_per_image, encode_images=_encode_mini,
        feed_features=_feed_inputs_embeds,
    ),
}

GENERIC = Quirks(image_token="<image>")


def quirks_for(model_type: str) -> Quirks:
    return QUIRKS.get(model_type, GENERIC)
