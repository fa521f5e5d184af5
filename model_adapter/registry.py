"""Architecture quirks, keyed by `config.model_type`.

Everything that differs between VLM families and that the generic backend must know lives here, not in
if/else chains: the placeholder token a chat template writes for an image, and which processor outputs the
model's `generate()` takes (GLM-4V and Qwen2-VL need `image_grid_thw` and, since transformers 5,
`mm_token_type_ids`). A family that is not listed gets every processor output passed through.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Quirks:
    image_token: str  # what the chat template writes once per image, before the processor expands it
    model_inputs: tuple[str, ...] | None = None  # processor outputs generate() takes; None: all of them
    # Module-name fragments of the vision tower and projector: kept unquantized by bitsandbytes (small, and
    # quality-sensitive) and left out of LoRA unless asked.
    vision_modules: tuple[str, ...] = ("visual", "vision_tower", "vision_model", "multi_modal_projector")


_GLM_V = Quirks(
    image_token="<|image|>",
    model_inputs=("input_ids", "attention_mask", "pixel_values", "image_grid_thw", "mm_token_type_ids"),
)
_QWEN_VL = Quirks(
    image_token="<|image_pad|>",
    model_inputs=("input_ids", "attention_mask", "pixel_values", "image_grid_thw", "mm_token_type_ids"),
)

QUIRKS: dict[str, Quirks] = {
    "glm4v": _GLM_V,  # GLM-4.1V-9B(-Thinking/-Base), GLM-4.6V-Flash
    "glm4v_moe": _GLM_V,  # GLM-4.5V, GLM-4.6V
    "qwen2_vl": _QWEN_VL,
    "qwen2_5_vl": _QWEN_VL,
    "qwen3_vl": _QWEN_VL,
    "qwen3_vl_moe": _QWEN_VL,
    "remoteglm_mini": Quirks(
        image_token="<image>", model_inputs=("input_ids", "attention_mask", "pixel_values"),
        vision_modules=("vision", "projector"),
    ),
}

GENERIC = Quirks(image_token="<image>")


def quirks_for(model_type: str) -> Quirks:
    return QUIRKS.get(model_type, GENERIC)
