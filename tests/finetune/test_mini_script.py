"""Script test of RemoteGLM-mini training: the real entry point, end to end for a few steps on fixture images,
writes a model that the Auto classes load and that generates; resuming the same command reuses the checkpoints."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


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

    from finetune.mini import main
    from finetune.mini_text import encode_conversation

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

    # Same command again: every stage resumes from its checkpoint and rewrites the model.
    before = torch.load(work / "decoder.pt", weights_only=False)["step"]
    assert main(args) == 0
    assert torch.load(work / "decoder.pt", weights_only=False)["step"] == before


def test_feature_cache_is_recomputed_for_another_encoder(tmp_path: Path, monkeypatch) -> None:
    from types import SimpleNamespace

    from finetune import mini_text
    from finetune.mini_images import ImageSet
    from model_adapter.mini.vision_remoteglm_mini import VisionEncoder

    torch.manual_seed(0)
    images = torch.randint(0, 256, (3, 32, 32, 3), dtype=torch.uint8)
    sets = {"ucm": ImageSet(images, torch.tensor([0, 1, 0]), ["train", "val", "test"], ["a", "b", "c"])}
    encoder = VisionEncoder(SimpleNamespace(vision_widths=[8, 8, 8, 8], vision_depths=[1, 1, 1, 1], vision_grid=2,
                                            scene_heads={"ucm": ["x", "y"]})).eval()
    calls = []
    real = mini_text.encode_views
    monkeypatch.setattr(mini_text, "encode_views", lambda *a, **k: calls.append(1) or real(*a, **k))
    path = tmp_path / "features.pt"

    first = mini_text.stage_features(sets, encoder, path)
    assert sorted(first["index"]) == ["ucm/a", "ucm/b"] and len(calls) == 1
    assert torch.equal(mini_text.stage_features(sets, encoder, path)["probs"], first["probs"]) and len(calls) == 1

    with torch.no_grad():
        encoder.scene_head.bias.copy_(torch.tensor([5.0, -5.0]))  # another scene head, same backbone
    again = mini_text.stage_features(sets, encoder, path)
    assert len(calls) == 2
    assert torch.equal(again["global"], first["global"]) and not torch.equal(again["probs"], first["probs"])
    assert torch.load(path, weights_only=False)["encoder_digest"].startswith(mini_text.state_digest(encoder))


def test_label_forced_scene_probabilities_use_the_true_class_of_training_images_only() -> None:
    from finetune.mini_images import ImageSet
    from finetune.mini_text import label_forced

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
