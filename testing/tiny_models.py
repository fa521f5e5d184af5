"""Tiny random checkpoints of real vision-language architectures, for tests.

No weights can be downloaded here, so tests build a few-hundred-thousand-parameter
`Glm4vForConditionalGeneration` or `Qwen2_5_VLForConditionalGeneration` with random weights, a byte-level BPE
tokenizer trained locally with `tokenizers`, the architecture's own processor and a chat template in the
model's own format, and save them to a directory. The directory then loads through exactly the code path a
9 B checkpoint uses (`AutoModelForImageTextToText` / `AutoProcessor`).

    python -m testing.tiny_models glm4v /tmp/tiny-glm4v
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

# A small bilingual corpus so the BPE merges cover the words tests use; byte fallback covers everything else.
_CORPUS = [
    "这张遥感图像展现了什么场景？ 图中有多少架飞机？ 机场 飞机 港口 船 储罐 网球场 道路 农田 河流 森林 住宅区",
    "这是一个机场，有几架飞机停在停机坪上。 港口里停着许多船。 there are many planes at the airport .",
    "What does this remote sensing image show? Many boats are docked in the harbor. Storage tanks and roads.",
    "Describe the image. yes no 是 否 一 二 三 四 五 六 七 八 九 十 0 1 2 3 4 5 6 7 8 9",
]

GLM4V_SPECIALS = [
    "<|endoftext|>", "[MASK]", "[gMASK]", "[sMASK]", "<sop>", "<eop>", "<|system|>", "<|user|>",
    "<|assistant|>", "<|observation|>", "<|begin_of_image|>", "<|end_of_image|>", "<|begin_of_video|>",
    "<|end_of_video|>", "<|image|>", "<|video|>", "<think>", "</think>",
]

# GLM-4.1V's format: [gMASK]<sop><|user|>\n...<|assistant|>\n...; images as begin/image/end.
GLM4V_CHAT_TEMPLATE = (
    "[gMASK]<sop>"
    "{%- for msg in messages %}"
    "{{ '<|' + msg['role'] + '|>\\n' }}"
    "{%- if msg['content'] is string %}{{ msg['content'] }}"
    "{%- else %}{%- for item in msg['content'] %}"
    "{%- if item['type'] == 'image' or 'image' in item %}{{ '<|begin_of_image|><|image|><|end_of_image|>' }}"
    "{%- elif item['type'] == 'text' %}{{ item['text'] }}{%- endif %}"
    "{%- endfor %}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|assistant|>\\n' }}{%- endif %}"
)

QWEN_SPECIALS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>",
]

# Qwen2.5-VL's ChatML format with its default system prompt.
QWEN_CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{%- endif %}"
    "{%- for msg in messages %}"
    "{{ '<|im_start|>' + msg['role'] + '\\n' }}"
    "{%- if msg['content'] is string %}{{ msg['content'] }}"
    "{%- else %}{%- for item in msg['content'] %}"
    "{%- if item['type'] == 'image' or 'image' in item %}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif item['type'] == 'text' %}{{ item['text'] }}{%- endif %}"
    "{%- endfor %}{%- endif %}"
    "{{ '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}"
)


def build_tokenizer(specials: list[str], chat_template: str, vocab_size: int = 640, **special_map) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE(byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(_CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, chat_template=chat_template, **special_map)
    fast.add_special_tokens({"additional_special_tokens": [s for s in specials if s not in special_map.values()]})
    return fast


def _save(model, processor, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def _small_image_processor(image_processor, patch_size: int, merge: int) -> None:
    # Keep images tiny: 2x2 merged patches at most -> a handful of image tokens.
    side = patch_size * merge
    image_processor.size = {"shortest_edge": side * side, "longest_edge": (2 * side) * (2 * side)}
    image_processor.patch_size = patch_size
    image_processor.merge_size = merge
    image_processor.temporal_patch_size = 2


def build_tiny_glm4v(out: Path, seed: int = 0) -> Path:
    from transformers import (
        Glm4vConfig, Glm4vForConditionalGeneration, Glm4vImageProcessor, Glm4vProcessor, Glm4vVideoProcessor,
    )

    tokenizer = build_tokenizer(
        GLM4V_SPECIALS, GLM4V_CHAT_TEMPLATE, eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in GLM4V_SPECIALS}
    head_dim = 16
    config = Glm4vConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=head_dim, max_position_embeddings=4096,
            # mrope_section must sum to half the rotary dimension (head_dim / 2 with partial_rotary_factor 0.5)
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1],
                             "partial_rotary_factor": 0.5},
            pad_token_id=ids["<|endoftext|>"], eos_token_id=[ids["<|endoftext|>"], ids["<|user|>"]],
        ),
        vision_config=dict(
            depth=1, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=14, spatial_merge_size=2,
            temporal_patch_size=2, out_hidden_size=64, image_size=56,
        ),
        image_token_id=ids["<|image|>"], video_token_id=ids["<|video|>"],
        image_start_token_id=ids["<|begin_of_image|>"], image_end_token_id=ids["<|end_of_image|>"],
        video_start_token_id=ids["<|begin_of_video|>"], video_end_token_id=ids["<|end_of_video|>"],
    )
    torch.manual_seed(seed)
    model = Glm4vForConditionalGeneration(config)
    model.generation_config.eos_token_id = config.text_config.eos_token_id
    model.generation_config.pad_token_id = config.text_config.pad_token_id
    image_processor = Glm4vImageProcessor()
    _small_image_processor(image_processor, patch_size=14, merge=2)
    processor = Glm4vProcessor(
        image_processor=image_processor, tokenizer=tokenizer, video_processor=Glm4vVideoProcessor(),
        chat_template=GLM4V_CHAT_TEMPLATE,
    )
    return _save(model, processor, Path(out))


def build_tiny_qwen2_5_vl(out: Path, seed: int = 0) -> Path:
    from transformers import (
        Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor, Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    tokenizer = build_tokenizer(
        QWEN_SPECIALS, QWEN_CHAT_TEMPLATE, eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIALS}
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
            # head_dim 16 -> mrope_section sums to 8
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [4, 2, 2]},
            pad_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], bos_token_id=None,
        ),
        vision_config=dict(
            depth=1, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=14, spatial_merge_size=2,
            temporal_patch_size=2, out_hidden_size=64, window_size=56, fullatt_block_indexes=[0],
        ),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = [ids["<|im_end|>"], ids["<|endoftext|>"]]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    image_processor = Qwen2VLImageProcessor()
    _small_image_processor(image_processor, patch_size=14, merge=2)
    processor = Qwen2_5_VLProcessor(
        image_processor=image_processor, tokenizer=tokenizer, video_processor=Qwen2VLVideoProcessor(),
        chat_template=QWEN_CHAT_TEMPLATE,
    )
    return _save(model, processor, Path(out))


BUILDERS = {"glm4v": build_tiny_glm4v, "qwen2_5_vl": build_tiny_qwen2_5_vl}

if __name__ == "__main__":
    print(BUILDERS[sys.argv[1]](Path(sys.argv[2])))
