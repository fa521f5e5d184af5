"""RemoteGLM-mini through the HF contract: Auto classes, chat template, generate() options, KV cache, batching.

Uses a tiny random model built here (seconds); `test_mini_shipped.py` checks the trained, shipped one.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch
from PIL import Image

import model_adapter.mini  # noqa: F401  (registers the Auto classes)
from transformers import AutoModelForImageTextToText, AutoProcessor, LlamaConfig, TextIteratorStreamer

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CORPUS = ["请描述这张遥感图像。", "有许多飞机停在机场。", "Describe this remote sensing image.",
          "Many planes are parked at the airport.", "图中有船吗？", "港口里停着许多船。"] * 5


@pytest.fixture(scope="module")
def tiny_mini_dir(tmp_path_factory) -> Path:
    from finetune.mini.tokenizer import train_tokenizer
    from model_adapter.mini import (
        RemoteGLMMiniConfig, RemoteGLMMiniForConditionalGeneration, RemoteGLMMiniImageProcessor,
        RemoteGLMMiniProcessor,
    )
    from model_adapter.mini.processing_remoteglm_mini import IMAGE_TOKEN

    out = tmp_path_factory.mktemp("tiny-mini")
    tok = train_tokenizer(CORPUS, 400)
    text = LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       num_key_value_heads=2, intermediate_size=64, tie_word_embeddings=True,
                       pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None)
    config = RemoteGLMMiniConfig(text_config=text, vision_widths=[8, 8, 8, 8], vision_depths=[1, 1, 1, 1],
                                 scene_heads={"ucm": ["a", "b"], "rsicd": ["c"]},
                                 image_token_id=tok.convert_tokens_to_ids(IMAGE_TOKEN),
                                 pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    model = RemoteGLMMiniForConditionalGeneration(config)
    model.save_pretrained(out)
    RemoteGLMMiniProcessor(RemoteGLMMiniImageProcessor(), tok, num_image_tokens=config.num_image_tokens
                           ).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def loaded(tiny_mini_dir):
    model = AutoModelForImageTextToText.from_pretrained(tiny_mini_dir).eval()
    processor = AutoProcessor.from_pretrained(tiny_mini_dir)
    processor.tokenizer.padding_side = "left"
    return model, processor


def _conv(question: str, image: bool = True, history: list[tuple[str, str]] = ()) -> list[dict]:
    msgs = []
    for i, (q, a) in enumerate(history):
        content = ([{"type": "image"}] if i == 0 and image else []) + [{"type": "text", "text": q}]
        msgs += [{"role": "user", "content": content}, {"role": "assistant", "content": [{"type": "text", "text": a}]}]
    content = ([{"type": "image"}] if image and not history else []) + [{"type": "text", "text": question}]
    return msgs + [{"role": "user", "content": content}]


def _images() -> list[Image.Image]:
    return [Image.open(FIXTURES / "ucm" / "airplane_192.jpg"), Image.open(FIXTURES / "ucm" / "harbor_1092.jpg")]


def test_chat_template_and_placeholder_expansion(loaded) -> None:
    model, processor = loaded
    prompt = processor.apply_chat_template(_conv("图中有船吗？", history=[("请描述这张遥感图像。", "港口。")]),
                                           add_generation_prompt=True, tokenize=False)
    assert prompt == "<|user|><image>请描述这张遥感图像。<|assistant|>港口。<|end|><|user|>图中有船吗？<|assistant|>"
    inputs = processor(text=[prompt], images=[_images()[1]], return_tensors="pt")
    n = int((inputs["input_ids"] == model.config.image_token_id).sum())
    assert n == model.config.num_image_tokens == 18
    assert inputs["pixel_values"].shape == (1, 3, 128, 128)


def test_kv_cache_and_left_padded_batch_give_the_same_greedy_tokens(loaded) -> None:
    model, processor = loaded
    prompts = [processor.apply_chat_template(_conv("请描述这张遥感图像。"), add_generation_prompt=True, tokenize=False),
               processor.apply_chat_template(_conv("图中有船吗？", history=[("Describe this remote sensing image.",
                                                                          "Many planes.")]),
                                             add_generation_prompt=True, tokenize=False)]
    batch = processor(text=prompts, images=_images(), return_tensors="pt", padding=True)
    cached = model.generate(**batch, max_new_tokens=6, do_sample=False)
    uncached = model.generate(**batch, max_new_tokens=6, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached)
    single = processor(text=[prompts[1]], images=[_images()[1]], return_tensors="pt")
    alone = model.generate(**single, max_new_tokens=6, do_sample=False)
    width = batch["input_ids"].shape[1]
    assert alone[0, single["input_ids"].shape[1]:].tolist() == cached[1, width:].tolist()


def test_sampling_options_streaming_and_text_only_turns(loaded) -> None:
    model, processor = loaded
    prompt = processor.apply_chat_template(_conv("请描述这张遥感图像。"), add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[prompt], images=[_images()[0]], return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=4, do_sample=True, temperature=0.8, top_p=0.4, top_k=100,
                         repetition_penalty=1.2, min_new_tokens=4)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 4
    streamer = TextIteratorStreamer(processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
    thread = threading.Thread(target=model.generate, kwargs=dict(**inputs, max_new_tokens=4, streamer=streamer))
    thread.start()
    streamed = "".join(streamer)
    thread.join()
    greedy = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert streamed == processor.tokenizer.decode(greedy[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    text_only = processor(text=[processor.apply_chat_template(_conv("你好", image=False), add_generation_prompt=True,
                                                              tokenize=False)], return_tensors="pt")
    assert "pixel_values" not in text_only
    assert model.generate(**text_only, max_new_tokens=3, min_new_tokens=3).shape[1] == text_only["input_ids"].shape[1] + 3


def test_dihedral_feature_average_is_rotation_invariant(loaded) -> None:
    model, _ = loaded
    x = torch.randn(2, 3, 128, 128)
    feats = model.model.vision(x, tta=True)
    rotated = model.model.vision(torch.rot90(x, 1, dims=(-2, -1)).flip(-1), tta=True)
    assert torch.allclose(feats["global"], rotated["global"], atol=1e-5)
    assert torch.allclose(feats["probs"], rotated["probs"], atol=1e-5)


def test_onehot_scene_token_keeps_only_each_heads_top_class(tiny_mini_dir) -> None:
    from model_adapter.mini import RemoteGLMMiniConfig
    from model_adapter.mini.modeling_remoteglm_mini import VisualProjector

    config = RemoteGLMMiniConfig.from_pretrained(tiny_mini_dir)
    # the heads come back in logit order although config.json is written with sorted keys
    assert config.scene_heads == [["ucm", ["a", "b"]], ["rsicd", ["c"]]]
    assert AutoModelForImageTextToText.from_pretrained(tiny_mini_dir).model.vision.head_sizes == [2, 1]
    config.scene_token = "onehot"
    projector = VisualProjector(config, feat_dim=8)
    # heads: ucm (2 classes), rsicd (1 class); the second row's rsicd head is masked out (all zeros)
    probs = torch.tensor([[0.3, 0.7, 1.0], [0.6, 0.4, 0.0]])
    assert projector.scene_input(probs).tolist() == [[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]]
    pooled, grid = torch.randn(1, 8), torch.randn(1, 16, 8)
    a = projector(pooled, torch.tensor([[0.45, 0.55, 1.0]]), grid)
    b = projector(pooled, torch.tensor([[0.05, 0.95, 1.0]]), grid)
    assert torch.equal(a, b)  # same top class, same scene token
    config.scene_token = "probs"
    assert not torch.equal(VisualProjector(config, 8).scene_input(probs), projector.scene_input(probs))
    config.scene_token = "top3"
    with pytest.raises(ValueError, match="scene_token"):
        VisualProjector(config, 8)


def test_crop_scene_probabilities_are_rotation_invariant_and_use_the_five_crops() -> None:
    from types import SimpleNamespace

    from model_adapter.mini.vision_remoteglm_mini import VisionEncoder, dihedral_views, five_crops

    torch.manual_seed(0)
    config = SimpleNamespace(vision_widths=[8, 8, 8, 8], vision_depths=[1, 1, 1, 1], vision_grid=2,
                             scene_heads=[["ucm", ["a", "b"]], ["rsicd", ["c", "d", "e"]]], vision_scene_crop=0.75)
    encoder = VisionEncoder(config).eval()
    x = torch.randn(2, 3, 64, 64)
    crops = five_crops(x, 0.75)
    assert crops.shape == (5, 2, 3, 48, 48)
    assert torch.equal(crops[1], x[..., :48, 16:]) and torch.equal(crops[4], x[..., 8:56, 8:56])
    with torch.no_grad():
        probs = encoder(x, tta=True)["probs"]
        rotated = encoder(torch.rot90(x, 1, dims=(-2, -1)), tta=True)["probs"]
        by_hand = torch.stack([encoder.scene_probs(encoder.forward_view(v)[2])
                               for c in crops for v in dihedral_views(c)[:4]]).mean(0)
    assert torch.allclose(probs, rotated, atol=1e-5)
    assert torch.allclose(probs, by_hand, atol=1e-6)
    assert torch.allclose(probs[:, :2].sum(-1), torch.ones(2)) and torch.allclose(probs[:, 2:].sum(-1), torch.ones(2))
