"""RemoteGLM-mini image processor, processor and chat template.

The processor expands each `<image>` in the prompt into `num_image_tokens` copies (the model replaces their
embeddings by the visual tokens). Prompt format, written by the chat template:

    <|user|><image>请描述这张遥感图像。<|assistant|>答案<|end|><|user|>还有别的吗？<|assistant|>

Images are resized to 128x128 (bicubic) and normalised with the statistics the encoder was trained with.
"""

from __future__ import annotations

from transformers import ProcessorMixin
from transformers.image_processing_backends import PilBackend
from transformers.image_utils import PILImageResampling

# "<image>" is the placeholder model_adapter.registry expects for this model type.
IMAGE_TOKEN = "<image>"
# Special tokens in id order: the tokenizer builder (finetune/mini/tokenizer.py) assigns ids 0..5 in this order.
SPECIAL_TOKENS = ["<|pad|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>", IMAGE_TOKEN]
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|' + message['role'] + '|>' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] in ('image', 'image_url') -%}{{- '<image>' -}}"
    "{%- elif item['type'] == 'text' -%}{{- item['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- if message['role'] == 'assistant' -%}{{- '<|end|>' -}}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|assistant|>' -}}{%- endif -%}"
)
# Per-channel statistics of the training images (UCM + RSICD), shared with finetune/mini/vision.py.
IMAGE_MEAN = [0.40, 0.42, 0.38]
IMAGE_STD = [0.20, 0.19, 0.19]


class RemoteGLMMiniImageProcessor(PilBackend):
    """PIL/NumPy image processor: RGB, bicubic resize to 128x128, rescale to [0, 1], normalise."""

    resample = PILImageResampling.BICUBIC
    image_mean = IMAGE_MEAN
    image_std = IMAGE_STD
    size = {"height": 128, "width": 128}
    do_resize = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True
    model_input_names = ["pixel_values"]


class RemoteGLMMiniProcessor(ProcessorMixin):
    """Image processor + tokenizer; expands `<image>` into `num_image_tokens` placeholder tokens."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, num_image_tokens: int = 18,
                 **kwargs):
        self.image_token = IMAGE_TOKEN
        self.num_image_tokens = num_image_tokens
        super().__init__(image_processor, tokenizer, chat_template=chat_template or CHAT_TEMPLATE)
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN) if tokenizer is not None else None

    def replace_image_token(self, image_inputs: dict, image_idx: int, **kwargs) -> str:
        return IMAGE_TOKEN * self.num_image_tokens


__all__ = ["RemoteGLMMiniImageProcessor", "RemoteGLMMiniProcessor", "CHAT_TEMPLATE", "SPECIAL_TOKENS", "IMAGE_TOKEN"]
