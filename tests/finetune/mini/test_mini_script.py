"""Script test of RemoteGLM-mini training: the real entry point, end to end for a few steps on fixture images,
writes a model that the Auto classes load and that generates; resuming the same command reuses the checkpoints."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


def make_data_root(root: Path) -> Path:
    """A miniature data root with the real layout: 6 UCM fixtures as train, 2 as val, 2 RSICD images as train."""
    ucm = json.loads((FIXTURES / "ucm" / "captions.json").read_text())
    (root / "ucm" / "images").mkdir(parents=True)
    for i, im in enumerate(ucm["images"]):
        im["split"] = "val" if i >= 6 else "train"
        stem = im["filename"].rsplit(".", 1)[0]
        src = next((FIXTURES / "ucm").glob(f"*_{stem}.jpg"))
        shutil.copy(src, root / "ucm" / "images" / f"{stem}.jpg")
    (root / "ucm" / "dataset.json").write_text(json.dumps(ucm))
    rsicd = json.loads((FIXTURES / "rsicd" / "captions.json").read_text())
    (root / "rsicd" / "images").mkdir(parents=True)
    for im in rsicd["images"]:
        im["split_karpathy_partial"] = "train"
        shutil.copy(FIXTURES / "rsicd" / im["filename"], root / "rsicd" / "images" / im["filename"])
    (root / "rsicd" / "dataset.json").write_text(json.dumps(rsicd))
    return root


TINY = [
    "--widths", "8,8,8,8", "--depths", "1,1,1,1", "--vision.epochs", "1", "--vision.batch-size", "4",
    "--decoder.steps", "4", "--decoder.focus-steps", "2", "--decoder.batch-size", "4", "--decoder.val-every", "2", "--decoder.val-samples", "4",
    "--decoder.vocab-size", "400", "--decoder.hidden-size", "32", "--decoder.layers", "1", "--decoder.heads", "2",
    "--decoder.intermediate-size", "64",
]


@pytest.mark.timeout(300)
def test_mini_training_script_writes_a_loadable_model(tmp_path: Path) -> None:
    import model_adapter.mini  # noqa: F401  (registers the Auto classes)
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from finetune.mini.decoder import encode_conversation
    from finetune.mini.pipeline import main

    data = make_data_root(tmp_path / "data")
    out, work = tmp_path / "model", tmp_path / "work"
    args = ["--data-root", str(data), "--out", str(out), "--work", str(work), *TINY]
    assert main(args) == 0

    for name in ("model.safetensors", "config.json", "tokenizer.json", "processor_config.json", "README.md",
                 "training_curve.png", "chat_template.jinja"):
        assert (out / name).exists(), name
    history = json.loads((out / "training_history.json").read_text())
    assert len(history["vision"]) == 1 and history["decoder"][-1]["step"] == 6
    assert "python -m finetune.mini" in (out / "README.md").read_text()

    model = AutoModelForImageTextToText.from_pretrained(out)
    processor = AutoProcessor.from_pretrained(out)
    image = Image.open(FIXTURES / "ucm" / "airplane_192.jpg")
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "请描述这张遥感图像。"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[prompt], images=[image], return_tensors="pt")
    generated = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert generated.shape[1] > inputs["input_ids"].shape[1]

    # Training tokenises conversations exactly as the chat template + processor do at inference.
    ids, labels = encode_conversation(processor.tokenizer, [{"role": "user", "content": "请描述这张遥感图像。"}],
                                      model.config.num_image_tokens)
    assert ids + [processor.tokenizer.convert_tokens_to_ids("<|assistant|>")] == inputs["input_ids"][0].tolist()
    assert all(label == -100 for label in labels)
    # ... also without an image, and with the image arriving in the second user turn (v2 upload requests).
    tok = processor.tokenizer
    text_only = [{"role": "user", "content": "这是什么地方？"}]
    ids, _ = encode_conversation(tok, text_only, model.config.num_image_tokens, image_turn=None)
    rendered = processor(text=[processor.apply_chat_template(text_only, add_generation_prompt=True, tokenize=False)],
                         return_tensors="pt")["input_ids"][0].tolist()
    assert ids + [tok.convert_tokens_to_ids("<|assistant|>")] == rendered
    later = [{"role": "user", "content": "这是什么地方？"}, {"role": "assistant", "content": "请先上传图像。"},
             {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "这是什么地方？"}]}]
    rendered = processor(text=[processor.apply_chat_template(later, add_generation_prompt=True, tokenize=False)],
                         images=[image], return_tensors="pt")["input_ids"][0].tolist()
    plain = [{**m, "content": "这是什么地方？"} if m["role"] == "user" else m for m in later]
    ids, _ = encode_conversation(tok, plain, model.config.num_image_tokens, image_turn=1)
    assert ids + [tok.convert_tokens_to_ids("<|assistant|>")] == rendered
    rows = [json.loads(x) for x in (work / "data" / "train.jsonl").read_text().splitlines()]
    assert any(r["image"] is None for r in rows)  # trained on conversations without an image too

    # Same command again: every stage resumes from its checkpoint and rewrites the model.
    before = torch.load(work / "decoder.pt", weights_only=False)["step"]
    assert main(args) == 0
    assert torch.load(work / "decoder.pt", weights_only=False)["step"] == before


def test_feature_cache_is_recomputed_for_another_encoder(tmp_path: Path, monkeypatch) -> None:
    from types import SimpleNamespace

    from finetune.mini import features as mini_features
    from finetune.mini.images import ImageSet
    from model_adapter.mini.vision_remoteglm_mini import VisionEncoder

    torch.manual_seed(0)
    images = torch.randint(0, 256, (3, 32, 32, 3), dtype=torch.uint8)
    sets = {"ucm": ImageSet(images, torch.tensor([0, 1, 0]), ["train", "val", "test"], ["a", "b", "c"])}
    encoder = VisionEncoder(SimpleNamespace(vision_widths=[8, 8, 8, 8], vision_depths=[1, 1, 1, 1], vision_grid=2,
                                            scene_heads={"ucm": ["x", "y"]})).eval()
    calls = []
    real = mini_features.encode_views
    monkeypatch.setattr(mini_features, "encode_views", lambda *a, **k: calls.append(1) or real(*a, **k))
    path = tmp_path / "features.pt"

    first = mini_features.stage_features(sets, encoder, path)
    assert sorted(first["index"]) == ["ucm/a", "ucm/b"] and len(calls) == 1
    assert torch.equal(mini_features.stage_features(sets, encoder, path)["probs"], first["probs"]) and len(calls) == 1

    with torch.no_grad():
        encoder.scene_head.bias.copy_(torch.tensor([5.0, -5.0]))  # another scene head, same backbone
    again = mini_features.stage_features(sets, encoder, path)
    assert len(calls) == 2
    assert torch.equal(again["global"], first["global"]) and not torch.equal(again["probs"], first["probs"])
    assert torch.load(path, weights_only=False)["encoder_digest"].startswith(mini_features.state_digest(encoder))


def test_label_forced_scene_probabilities_use_the_true_class_of_training_images_only() -> None:
    from finetune.mini.decoder import label_forced
    from finetune.mini.images import ImageSet

    images = torch.zeros(3, 8, 8, 3, dtype=torch.uint8)
    sets = {"ucm": ImageSet(images, torch.tensor([1, 0, -1]), ["train", "val", "train"], ["a", "b", "c"]),
            "rsicd": ImageSet(images[:1], torch.tensor([2]), ["train"], ["r"])}
    heads = [["ucm", ["x", "y"]], ["rsicd", ["p", "q", "s"]]]
    probs = torch.full((4, 5), 0.2)
    feats = {"probs": probs, "index": {"ucm/a": 0, "ucm/b": 1, "ucm/c": 2, "rsicd/r": 3}}
    forced = label_forced(feats, sets, heads)["probs"]
    assert torch.equal(forced[0], torch.tensor([0.0, 1.0, 0.2, 0.2, 0.2]))  # own head forced, other untouched
    assert torch.equal(forced[1], probs[1]) and torch.equal(forced[2], probs[2])  # val image; unlabelled image
    assert torch.equal(forced[3], torch.tensor([0.2, 0.2, 0.0, 0.0, 1.0]))
    assert torch.equal(feats["probs"], torch.full((4, 5), 0.2))  # the input is not modified


def test_task_shares_set_each_tasks_part_of_the_draws() -> None:
    from types import SimpleNamespace

    from finetune.mini.decoder import sampling_weights

    items = [(None, None, 0, "ucm", "describe_en")] * 2 + [(None, None, 1, "rsicd", "describe_zh")] * 6 + [
        (None, None, -1, "rsicd", "no_image")] * 10 + [(None, None, 2, "ucm", "water")] * 2
    train = SimpleNamespace(items=items)
    w = sampling_weights(train, "describe=0.5,no_image=0.2,*=0.3", ucm_weight=3.0)
    share = lambda t: float(w[[i for i, it in enumerate(items) if it[4].startswith(t)]].sum() / w.sum())  # noqa: E731
    assert share("describe") == pytest.approx(0.5) and share("no_image") == pytest.approx(0.2)
    assert share("water") == pytest.approx(0.3)
    assert float(w[0] / w[2]) == pytest.approx(3.0)  # UCM weighs ucm_weight times RSICD within a task
    assert torch.equal(sampling_weights(train, "", 3.0)[:3], torch.tensor([3.0, 3.0, 1.0]))  # v1: dataset only


def test_decoder_loss_mixes_rows_with_and_without_an_image() -> None:
    """A batch of one image conversation and one text-only one gives the same loss per row as each alone."""
    from transformers import LlamaConfig

    from finetune.mini.decoder import decoder_loss
    from model_adapter.mini import RemoteGLMMiniConfig, RemoteGLMMiniForConditionalGeneration

    torch.manual_seed(0)
    text = LlamaConfig(vocab_size=40, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                       num_key_value_heads=2, intermediate_size=64, pad_token_id=0, eos_token_id=1, bos_token_id=None)
    config = RemoteGLMMiniConfig(text_config=text, vision_widths=[8, 8, 8, 8], vision_depths=[1, 1, 1, 1],
                                 scene_heads={"ucm": ["a", "b"]}, image_token_id=5, pad_token_id=0, eos_token_id=1)
    model = RemoteGLMMiniForConditionalGeneration(config).eval()
    n = config.num_image_tokens
    g2 = config.vision_grid ** 2
    feats = {"global": torch.randn(2, 8), "probs": torch.softmax(torch.randn(2, 2), -1),
             "grid": torch.randn(2, 8, g2, 8).half()}
    with_img = [3] + [5] * n + [10, 11, 4, 12, 13, 1]
    text_only = [3, 10, 11, 4, 14, 15, 1]
    width = len(with_img)
    ids = torch.zeros(2, width, dtype=torch.long)
    ids[0], ids[1, : len(text_only)] = torch.tensor(with_img), torch.tensor(text_only)
    mask = (torch.arange(width)[None] < torch.tensor([[width], [len(text_only)]])).long()
    labels = torch.where(mask.bool() & (ids > 11), ids, torch.full_like(ids, -100))
    views = torch.zeros(2, dtype=torch.long)
    with torch.no_grad():
        both, _, count = decoder_loss(model, feats, ids, labels, mask, torch.tensor([1, -1]), views)
        a, _, ca = decoder_loss(model, feats, ids[:1], labels[:1], mask[:1], torch.tensor([1]), views[:1])
        b, _, cb = decoder_loss(model, feats, ids[1:, : len(text_only)], labels[1:, : len(text_only)],
                                mask[1:, : len(text_only)], torch.tensor([-1]), views[1:])
    assert count == ca + cb
    assert float(both) == pytest.approx((float(a) * ca + float(b) * cb) / count, rel=1e-4)


def test_warm_start_copies_the_decoder_and_refuses_a_model_of_another_shape(tmp_path: Path) -> None:
    """`decoder.init_from`: every projector / decoder weight of the start model arrives; a mismatched one is refused."""
    from safetensors.torch import load_file

    from finetune.mini.decoder import load_decoder_weights
    from model_adapter.mini import RemoteGLMMiniForConditionalGeneration

    shipped = Path(__file__).resolve().parents[3] / "checkpoints" / "remoteglm-mini"
    model = RemoteGLMMiniForConditionalGeneration.from_pretrained(shipped)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.startswith("model.vision."):
                p.zero_()
    load_decoder_weights(model, shipped)
    saved = load_file(shipped / "model.safetensors")
    own = model.state_dict()
    decoder_keys = [k for k in saved if not k.startswith("model.vision.")]
    assert decoder_keys and all(torch.equal(own[k], saved[k]) for k in decoder_keys)

    cfg = model.config
    cfg.text_config.hidden_size, cfg.text_config.intermediate_size = 64, 128
    cfg.text_config.head_dim = 16
    small = RemoteGLMMiniForConditionalGeneration(cfg)
    with pytest.raises(ValueError, match="does not fit"):
        load_decoder_weights(small, shipped)


def test_vision_from_takes_the_shipped_encoder_and_refuses_another_shape(tmp_path: Path) -> None:
    """`vision_from`: stage 1 returns the start model's encoder, weight for weight, without training or a checkpoint;
    an encoder of another config is refused."""
    from safetensors.torch import load_file

    from finetune.mini.pipeline import parse_config
    from finetune.mini.vision import stage_vision

    shipped = Path(__file__).resolve().parents[3] / "checkpoints" / "remoteglm-mini"
    cfg = parse_config(["--work", str(tmp_path), "--vision-from", str(shipped)])
    history: dict = {}
    encoder = stage_vision(cfg, {}, history)
    saved = {k.removeprefix("model.vision."): v for k, v in load_file(shipped / "model.safetensors").items()
             if k.startswith("model.vision.")}
    own = encoder.state_dict()
    assert set(own) == set(saved) and all(torch.equal(own[k], saved[k]) for k in saved)
    assert not encoder.training and history["vision_from"] == str(shipped)
    assert not (tmp_path / "vision.pt").exists()

    narrow = parse_config(["--work", str(tmp_path), "--vision-from", str(shipped), "--widths", "16,32,64,128"])
    with pytest.raises(ValueError, match="no vision encoder of this config"):
        stage_vision(narrow, {}, {})


def test_card_of_a_warm_start_names_its_start_model_and_command(tmp_path: Path) -> None:
    """A retrained decoder's card gives the warm-start command and says the encoder was taken over, not trained."""
    from finetune.mini.card import render_card

    shipped = Path(__file__).resolve().parents[3] / "checkpoints" / "remoteglm-mini"
    out = tmp_path / "model"
    shutil.copytree(shipped, out, ignore=shutil.ignore_patterns("eval"))
    cfg = json.loads((out / "training_config.json").read_text())
    cfg["vision_from"] = cfg["decoder"]["init_from"] = "checkpoints/remoteglm-mini"
    cfg["decoder"]["steps"] = 1000
    (out / "training_config.json").write_text(json.dumps(cfg))
    history = {"vision_from": "checkpoints/remoteglm-mini", "decoder_init": "checkpoints/remoteglm-mini",
               "seconds": {"features": 60.0, "decoder": 600.0}, "decoder": [{"step": 1000, "val_loss": 0.5}]}
    (out / "training_history.json").write_text(json.dumps(history))
    render_card(out)
    card = (out / "README.md").read_text()
    assert "--vision-from checkpoints/remoteglm-mini" in card and "--decoder.steps 1000" in card
    assert "--decoder.init-from checkpoints/remoteglm-mini" in card
    assert "Warm start" in card and "vision encoder taken over (0 min)" in card and "Last vision epoch" not in card


def test_card_renders_a_warm_start_command_that_parses_back():
    """The card's warm-start command uses the flags `python -m finetune.mini` takes (bools as --x / --no-x)."""
    import shlex

    from finetune.mini.card import training_command
    from finetune.mini.config import DecoderTrainConfig
    from finetune.mini.pipeline import parse_config

    dec = {**vars(DecoderTrainConfig()), "steps": 0, "init_from": "runs/warm/out", "scene_token_labels": False,
           "focus_ucm_scene_token": True}
    cmd = training_command({"vision_from": "runs/warm/out", "decoder": dec})
    argv = shlex.split(cmd.replace("\\\n", " "))[3:]  # after "python -m finetune.mini"
    cfg = parse_config(argv)
    assert cfg.vision_from == "runs/warm/out" and cfg.decoder.steps == 0
    assert cfg.decoder.scene_token_labels is False and cfg.decoder.focus_ucm_scene_token is True
