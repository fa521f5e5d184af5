"""finetune/lora/ on tiny random Glm4v / Qwen2.5-VL checkpoints (CPU): masking, overfitting only the LoRA
weights, resume, adapter round trip through model_adapter, merged export, QLoRA, and the CLI end to end."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from finetune import lora
from imagery import load_image

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = ROOT / "tests" / "fixtures"
VISION = ("visual",)

SAMPLES = [
    {"id": "a", "image": "ucm/airplane_192.jpg", "messages": [
        {"role": "user", "content": "这张遥感图像展现了什么场景？"},
        {"role": "assistant", "content": "这是一个机场，有几架飞机停在停机坪上。"}]},
    {"id": "b", "image": "ucm/harbor_1092.jpg", "messages": [
        {"role": "user", "content": "What does this remote sensing image show?"},
        {"role": "assistant", "content": "Many boats are docked in the harbor."}]},
    {"id": "c", "image": "ucm/storagetanks_1992.jpg", "messages": [
        {"role": "user", "content": "这张遥感图像展现了什么场景？"}, {"role": "assistant", "content": "储罐"},
        {"role": "user", "content": "图中有多少个储罐？"}, {"role": "assistant", "content": "四"}]},
    {"id": "d", "image": "ucm/forest_796.jpg", "messages": [
        {"role": "user", "content": "Describe the image."},
        {"role": "assistant", "content": "This is a dense forest ."}]},
]


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def write_jsonl(rows: list[dict], path: Path) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def config(base: Path, tmp: Path, out: str = "out", samples: list[dict] = SAMPLES, **overrides) -> lora.TrainConfig:
    values = dict(base=str(base), data=write_jsonl(samples, tmp / "train.jsonl"), data_root=FIXTURES, out=tmp / out,
                  batch_size=2, grad_accum=1, num_workers=0, gradient_checkpointing=False, log_every=1)
    return lora.TrainConfig(**{**values, **overrides})


def base_weights(peft_model) -> dict[str, torch.Tensor]:
    """The frozen base's tensors under their original names (peft prefixes and base_layer stripped)."""
    out = {}
    for key, value in peft_model.state_dict().items():
        if "lora_" not in key:
            out[key.removeprefix("base_model.model.").replace(".base_layer", "")] = value
    return out


def test_masking_learns_only_assistant_tokens(tiny_model_dir):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    stops = lora.stop_token_ids(model, processor.tokenizer)
    image = load_image(FIXTURES / SAMPLES[2]["image"])
    row = lora.encode(processor, SAMPLES[2]["messages"], [image], stops, 4096)
    ids, labels = row["input_ids"], row["labels"]
    learned = labels != lora.IGNORE
    assert torch.equal(labels[learned], ids[learned])
    assert not learned[ids == processor.image_token_id].any()  # image tokens
    assert (ids == processor.image_token_id).sum() > 0
    text = processor.tokenizer.decode(ids[learned], skip_special_tokens=True)
    assert "".join(text.split()) == "储罐四"  # both assistant turns, nothing of the prompts
    # each assistant turn ends with a stop token the model must learn to emit
    assert sum(int(t) in stops for t in ids[learned]) == 2
    first = int(learned.nonzero()[0])
    prompt = processor.tokenizer.decode(ids[:first])
    assert "这张遥感图像展现了什么场景？" in prompt and processor.tokenizer.decode(ids[first:first + 1]) != ""


def test_original_format_rows_are_read(tmp_path):
    (tmp_path / "ucm" / "images").mkdir(parents=True)
    shutil.copy(FIXTURES / "ucm" / "airplane_192.jpg", tmp_path / "ucm" / "images" / "192.jpg")
    path = tmp_path / "orig.json"
    path.write_text(json.dumps([{"img": "./UCM/192.tif", "prompt": "描述这张图片", "label": "机场"}], ensure_ascii=False))
    [sample] = lora.read_samples(path, tmp_path)
    assert sample["image"] == "ucm/images/192.jpg"
    assert sample["messages"] == [{"role": "user", "content": "描述这张图片"}, {"role": "assistant", "content": "机场"}]


def test_collate_pads_right_and_joins_images(tiny_qwen2_5_vl_dir):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_qwen2_5_vl_dir)
    rows = [lora.encode(processor, s["messages"], [load_image(FIXTURES / s["image"])], {2}, 4096) for s in SAMPLES[:2]]
    batch = lora.collate(rows, pad_id=0)
    n = max(len(r["input_ids"]) for r in rows)
    assert batch["input_ids"].shape == batch["labels"].shape == (2, n)
    short = min(range(2), key=lambda i: len(rows[i]["input_ids"]))
    assert batch["labels"][short, len(rows[short]["labels"]):].eq(lora.IGNORE).all()
    assert batch["attention_mask"][short, len(rows[short]["labels"]):].eq(0).all()
    assert batch["pixel_values"].shape[0] == sum(r["pixel_values"].shape[0] for r in rows)
    assert batch["image_grid_thw"].shape == (2, 3)


def confident_copy(base: Path, out: Path) -> Path:
    """The tiny checkpoint with its output layer scaled up. Its random lm_head (std 0.02, 64 dims) caps every logit
    near 1.3, so no adapter could push the loss far below ln(vocab); a x25 head can express a memorised answer."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(base)
    with torch.no_grad():
        model.lm_head.weight.mul_(25)
    model.save_pretrained(out)
    AutoProcessor.from_pretrained(base).save_pretrained(out)
    return out


@pytest.fixture(scope="module", params=["glm4v", "qwen2_5_vl"])
def overfit(request, tmp_path_factory):
    """One short high-learning-rate run per architecture on a fixed batch of 2 samples."""
    tmp = tmp_path_factory.mktemp(f"overfit-{request.param}")
    base = confident_copy(request.getfixturevalue(f"tiny_{request.param}_dir"), tmp / "base")
    cfg = config(base, tmp, samples=SAMPLES[:2], max_steps=20, lr=1e-2, warmup_ratio=0.0, lora_dropout=0.0,
                 save_every=100)
    return base, cfg, lora.train(cfg)


def test_overfit_lowers_loss_and_changes_only_lora(overfit):
    from transformers import AutoModelForImageTextToText

    base, cfg, result = overfit
    losses = [r["loss"] for r in result.summary["history"]]
    assert result.summary["finished"] and len(losses) == 20
    assert losses[-1] < 0.2 * losses[0], losses
    fresh = AutoModelForImageTextToText.from_pretrained(base).state_dict()
    trained = base_weights(result.model)
    assert fresh.keys() == trained.keys()
    assert all(torch.equal(fresh[k], trained[k]) for k in fresh), "a base weight changed"
    names = lora.lora_module_names(result.model)
    assert names and not any("visual" in n for n in names)
    assert all(p.requires_grad == ("lora_" in n) for n, p in result.model.named_parameters())
    saved = load_file(cfg.out / "adapter_model.safetensors")
    assert saved and all("lora_" in k for k in saved)
    assert any(v.abs().sum() > 0 for k, v in saved.items() if "lora_B" in k)  # B starts at zero: it moved


def test_projector_gets_lora_only_when_asked(tiny_model_dir, tmp_path):
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    from peft import LoraConfig, get_peft_model

    assert not any("visual" in n for n in lora.lora_targets(model, VISION, include_projector=False))
    targets = lora.lora_targets(model, VISION, include_projector=True)
    names = lora.lora_module_names(get_peft_model(model, LoraConfig(r=2, target_modules=targets)))
    assert sorted(n.removeprefix("base_model.model.") for n in names) == sorted(targets)
    assert any("merger" in n for n in names)
    assert not any("visual" in n and "merger" not in n for n in names)  # never the vision tower itself
    assert not any(n.endswith("lm_head") for n in names)


def test_adapter_loads_through_model_adapter_and_export_matches(overfit, tmp_path):
    from transformers import AutoModelForImageTextToText

    from model_adapter import ChatMessage, load_backend

    base, cfg, _ = overfit
    messages = [ChatMessage("user", "这张遥感图像展现了什么场景？", [load_image(FIXTURES / "ucm" / "beach_392.jpg")])]

    def logits(backend) -> torch.Tensor:
        _, inputs, _ = backend._prepare([messages], None)
        with torch.no_grad():
            return backend.model(**inputs).logits, inputs

    plain, inputs = logits(load_backend(model=str(base), device="cpu", dtype="float32"))
    tuned_backend = load_backend(model=str(base), adapter=str(cfg.out), device="cpu", dtype="float32")
    tuned, _ = logits(tuned_backend)
    assert (plain - tuned).abs().max() > 1e-2  # the adapter changes the output
    assert tuned_backend.generate(messages).text is not None

    merged_dir = lora.export(str(base), cfg.out, tmp_path / "merged")
    assert (merged_dir / "config.json").is_file() and not (merged_dir / "adapter_config.json").exists()
    merged = AutoModelForImageTextToText.from_pretrained(merged_dir, dtype=torch.float32)
    with torch.no_grad():
        merged_logits = merged(**inputs).logits
    torch.testing.assert_close(merged_logits, tuned, atol=1e-4, rtol=1e-4)


def test_resume_gives_the_same_adapter_as_a_straight_run(tiny_glm4v_dir, tmp_path):
    # 4 samples, batch 1, 2 micro-batches per step: 2 steps per epoch; stopping at step 3 is mid-epoch 2.
    common = dict(batch_size=1, grad_accum=2, max_steps=6, save_every=3, lr=5e-3, lora_dropout=0.1, seed=3)
    straight = lora.train(config(tiny_glm4v_dir, tmp_path, "straight", **common))
    first = lora.train(config(tiny_glm4v_dir, tmp_path, "split", stop_after=3, **common))
    assert first.summary["steps"] == 3 and not first.summary["finished"]
    assert not (tmp_path / "split" / "adapter_model.safetensors").exists()
    resumed = lora.train(config(tiny_glm4v_dir, tmp_path, "split", resume="latest", **common))
    assert resumed.summary["steps"] == 6 and resumed.summary["finished"]
    a = load_file(tmp_path / "straight" / "adapter_model.safetensors")
    b = load_file(tmp_path / "split" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=1e-5)
    steps = [r["step"] for r in resumed.summary["history"]]
    assert steps == sorted(set(steps)) and steps[-1] == 6  # the log continues, no repeated steps
    straight_losses = {r["step"]: r["loss"] for r in straight.summary["history"]}
    for r in resumed.summary["history"]:
        assert r["loss"] == pytest.approx(straight_losses[r["step"]], rel=1e-5)


def test_qlora_trains_on_cpu_with_bitsandbytes(tiny_glm4v_dir, tmp_path):
    pytest.importorskip("bitsandbytes")
    import bitsandbytes as bnb

    result = lora.train(config(tiny_glm4v_dir, tmp_path, qlora=True, max_steps=2, lr=1e-3))
    assert result.summary["finished"]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in result.summary["history"])
    quantized = [n for n, m in result.model.named_modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert quantized and not any("visual" in n for n in quantized)  # the vision tower stays unquantized
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()
    merged = lora.export(str(tiny_glm4v_dir), tmp_path / "out", tmp_path / "merged")  # into the unquantized base
    assert list(merged.glob("*.safetensors"))


def test_a_fresh_run_refuses_an_out_dir_with_checkpoints(tiny_glm4v_dir, tmp_path):
    lora.train(config(tiny_glm4v_dir, tmp_path, max_steps=1))
    with pytest.raises(ValueError, match="--resume latest"):
        lora.train(config(tiny_glm4v_dir, tmp_path, max_steps=1))


def test_script_trains_and_exports_end_to_end(tiny_qwen2_5_vl_dir, tmp_path):
    train = write_jsonl(SAMPLES, tmp_path / "train.jsonl")
    val = tmp_path / "val.json"  # the original project's format
    val.write_text(json.dumps([{"img": "ucm/beach_392.jpg", "prompt": "描述这张图片", "label": "海滩"}], ensure_ascii=False))
    out, merged = tmp_path / "run", tmp_path / "merged"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [sys.executable, "-m", "finetune.lora", "train", "--base", str(tiny_qwen2_5_vl_dir), "--data", str(train),
         "--val", str(val), "--data-root", str(FIXTURES), "--out", str(out), "--max-steps", "4", "--batch-size", "2",
         "--grad-accum", "1", "--save-every", "2", "--eval-every", "2", "--num-workers", "0", "--lora-rank", "4",
         "--no-gradient-checkpointing"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads(run.stdout[run.stdout.index("{"):])
    assert summary["steps"] == 4 and summary["finished"]
    for name in ("adapter_config.json", "adapter_model.safetensors", "loss.png", "metrics.jsonl", "train_config.json"):
        assert (out / name).is_file(), name
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 4
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "val_loss" in r] == [2, 4]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-0000002", "step-0000004"]
    assert (out / "checkpoints" / "step-0000004" / "adapter" / "adapter_model.safetensors").is_file()

    run = subprocess.run(
        [sys.executable, "-m", "finetune.lora", "export", "--base", str(tiny_qwen2_5_vl_dir), "--adapter", str(out),
         "--out", str(merged)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    from transformers import AutoProcessor

    assert (merged / "config.json").is_file() and list(merged.glob("*.safetensors"))
    assert AutoProcessor.from_pretrained(merged).apply_chat_template(  # the processor travels with the weights
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False).endswith("assistant\n")


def test_two_process_ddp_run_checkpoints_every_rank(tiny_glm4v_dir, tmp_path):
    """The same entry point under a 2-process launcher (gloo on CPU): what `accelerate launch` does on GPUs."""
    train = write_jsonl(SAMPLES * 2, tmp_path / "train.jsonl")
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "ACCELERATE_USE_CPU": "true"}
    with socket.socket() as s:  # a free port: other test runs may share this machine
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    args = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port,
            "-m", "finetune.lora", "train", "--base", str(tiny_glm4v_dir), "--data", str(train), "--data-root",
            str(FIXTURES), "--out", str(out), "--max-steps", "4", "--save-every", "2", "--batch-size", "1",
            "--grad-accum", "2", "--num-workers", "0", "--log-every", "1", "--no-gradient-checkpointing"]
    first = subprocess.run(args + ["--stop-after", "2"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    second = subprocess.run(args + ["--resume", "latest"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.count('"finished": true') == 1  # one summary, from rank 0
    step2 = out / "checkpoints" / "step-0000002"
    assert (step2 / "random_states_0.pkl").is_file() and (step2 / "random_states_1.pkl").is_file()
    assert [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4]
    assert (out / "adapter_model.safetensors").is_file()


def test_shipped_launch_configs_parse():
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DeepSpeedPlugin

    configs = ROOT / "finetune" / "configs"
    assert load_config_from_file(str(configs / "ddp.yaml")).distributed_type == "MULTI_GPU"
    for stage in (2, 3):
        launch = load_config_from_file(str(configs / f"zero{stage}.yaml"))
        assert launch.distributed_type == "DEEPSPEED"
        assert (ROOT / launch.deepspeed_config["deepspeed_config_file"]).is_file()
        plugin = DeepSpeedPlugin(hf_ds_config=str(configs / f"zero{stage}.json"), zero3_init_flag=stage == 3)
        plugin.set_mixed_precision("bf16")
        assert plugin.zero_stage == stage and plugin.deepspeed_config["bf16"]["enabled"] is True
