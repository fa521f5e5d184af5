"""`python -m finetune.evaluate` end to end on a tiny GLM-4V: no images is an error naming the data root, a partial
set is counted, results are named by model + adapter + dataset + split and their path printed, a mismatched
adapter is refused, a baseline over a handful of images says so."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = ROOT / "tests" / "fixtures"
FAST = ["--tasks", "scene_en,scene_zh", "--device", "cpu", "--batch-size", "8"]


def data_root(root: Path, images: int = 8) -> Path:
    """The real layout (`ucm/dataset.json`, `ucm/images/<n>.jpg`) with the 8 fixture test images, or fewer."""
    ucm = json.loads((FIXTURES / "ucm" / "captions.json").read_text())
    (root / "ucm" / "images").mkdir(parents=True)
    for im in ucm["images"][:images]:
        stem = im["filename"].rsplit(".", 1)[0]
        shutil.copy(next((FIXTURES / "ucm").glob(f"*_{stem}.jpg")), root / "ucm" / "images" / f"{stem}.jpg")
    (root / "ucm" / "dataset.json").write_text(json.dumps(ucm))
    return root


def evaluate(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "finetune.evaluate", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def one_line_error(run: subprocess.CompletedProcess) -> str:
    assert run.returncode == 2, (run.stdout + run.stderr)[-2000:]
    # (progress bars of the model load and bitsandbytes' import notice may precede it)
    lines = [x for x in run.stderr.splitlines() if "error" in x.lower()]
    assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr[-2000:]
    return lines[0]


def test_no_images_is_an_error_naming_the_data_root(tiny_glm4v_dir, tmp_path):
    empty = tmp_path / "nothing-here"
    line = one_line_error(evaluate("--model", str(tiny_glm4v_dir), "--data-root", str(empty),
                                   "--out", str(tmp_path / "out"), *FAST))
    assert str(empty) in line and "--data-root" in line and "REMOTEGLM_DATA_ROOT" in line
    assert not (tmp_path / "out").exists()  # nothing written, earlier results untouched


def test_partial_images_are_counted_and_results_named_and_printed(tiny_glm4v_dir, tmp_path):
    root = data_root(tmp_path / "data", images=3)
    run = evaluate("--model", str(tiny_glm4v_dir), "--out", str(tmp_path / "out"), *FAST,
                   env={"REMOTEGLM_DATA_ROOT": str(root)})
    assert run.returncode == 0, run.stderr[-3000:]
    assert "only 3 of 8 ucm test images" in run.stdout
    stem = f"{tiny_glm4v_dir.name}_ucm_test"
    assert f"results: {tmp_path / 'out' / stem}.md" in run.stdout
    report = json.loads((tmp_path / "out" / f"{stem}.json").read_text())
    assert report["tasks"]["scene_en"]["n"] == 3


def test_base_and_adapter_results_do_not_overwrite_each_other(tiny_glm4v_dir, tmp_path):
    from finetune import lora

    root = data_root(tmp_path / "data")
    sample = {"image": "ucm/images/192.jpg", "messages": [{"role": "user", "content": "这张遥感图像展现了什么场景？"},
                                                   {"role": "assistant", "content": "机场"}]}
    (tmp_path / "train.jsonl").write_text(json.dumps(sample, ensure_ascii=False) + "\n")
    lora.train(lora.TrainConfig(base=str(tiny_glm4v_dir), data=tmp_path / "train.jsonl", data_root=root,
                                out=tmp_path / "lora", max_steps=1, batch_size=1, grad_accum=1, num_workers=0,
                                gradient_checkpointing=False, lora_rank=2))
    base = evaluate("--model", str(tiny_glm4v_dir), "--data-root", str(root), "--limit", "2", *FAST)
    tuned = evaluate("--model", str(tiny_glm4v_dir), "--adapter", str(tmp_path / "lora"), "--data-root", str(root),
                     "--limit", "2", *FAST)
    assert base.returncode == 0 and tuned.returncode == 0, (base.stderr + tuned.stderr)[-3000:]
    assert "FutureWarning" not in tuned.stderr
    paths = [Path(re.search(r"results: (\S+)\.md", r.stdout).group(1)) for r in (base, tuned)]
    try:
        assert paths[0] != paths[1] and all(p.parent == ROOT / "runs" / "eval" for p in paths)
        assert paths[1].name == f"{tiny_glm4v_dir.name}+lora_ucm_test_first2"
        assert json.loads(paths[0].with_suffix(".json").read_text())["adapter"] is None
        assert json.loads(paths[1].with_suffix(".json").read_text())["adapter"] == str(tmp_path / "lora")
    finally:
        for p in paths:
            for f in p.parent.glob(p.name + "*"):
                f.unlink()


def test_help_example_adapter_is_the_folder_training_writes():
    from finetune.lora import TrainConfig

    run = evaluate("--help")
    assert run.returncode == 0
    adapter = re.search(r"--adapter ([a-z]\S+)", run.stdout).group(1)
    assert (ROOT / adapter) == TrainConfig.model_fields["out"].default  # runs/lora holds adapter_config.json


@pytest.fixture(scope="module")
def glm_adapter(tiny_glm4v_dir, tmp_path_factory):
    from finetune import lora

    tmp = tmp_path_factory.mktemp("glm-adapter")
    sample = {"image": "ucm/airplane_192.jpg", "messages": [{"role": "user", "content": "q"},
                                                            {"role": "assistant", "content": "机场"}]}
    (tmp / "train.jsonl").write_text(json.dumps(sample, ensure_ascii=False) + "\n")
    lora.train(lora.TrainConfig(base=str(tiny_glm4v_dir), data=tmp / "train.jsonl", data_root=FIXTURES,
                                out=tmp / "lora", max_steps=1, batch_size=1, grad_accum=1, num_workers=0,
                                gradient_checkpointing=False, lora_rank=2))
    return tmp / "lora"


def test_adapter_of_another_architecture_is_refused(glm_adapter, tiny_qwen2_5_vl_dir, tmp_path):
    root = data_root(tmp_path / "data", images=1)
    line = one_line_error(evaluate("--model", str(tiny_qwen2_5_vl_dir), "--adapter", str(glm_adapter),
                                   "--data-root", str(root), "--out", str(tmp_path / "out"), *FAST))
    assert "glm4v" in line and "qwen2_5_vl" in line and str(glm_adapter) in line


def test_adapter_with_missing_target_modules_is_refused(glm_adapter, tiny_glm4v_dir, tmp_path):
    from model_adapter import load_backend
    from model_adapter.hf import ModelLoadError

    moved = shutil.copytree(glm_adapter, tmp_path / "moved")
    config = json.loads((moved / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "elsewhere/unknown-base"  # not resolvable: only the module names can tell
    config["target_modules"] = list(config["target_modules"]) + ["model.language_model.layers.0.mlp.gate_proj"]
    (moved / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="gate_proj"):
        load_backend(model=str(tiny_glm4v_dir), adapter=str(moved), device="cpu")


def test_adapter_on_a_copy_of_its_base_warns(glm_adapter, tiny_glm4v_dir, tmp_path, caplog):
    from model_adapter import load_backend

    copy = shutil.copytree(tiny_glm4v_dir, tmp_path / "copy-of-base")
    with caplog.at_level("WARNING", logger="model_adapter.hf"):
        load_backend(model=str(copy), adapter=str(glm_adapter), device="cpu")
    assert any("was trained on" in r.message and str(copy) in r.message for r in caplog.records)
    caplog.clear()
    with caplog.at_level("WARNING", logger="model_adapter.hf"):
        load_backend(model=str(tiny_glm4v_dir), adapter=str(glm_adapter), device="cpu")
    assert not any("was trained on" in r.message for r in caplog.records)


@pytest.mark.skipif(shutil.which("java") is None, reason="the English caption metrics need a Java runtime")
def test_stock_sentence_baseline_over_few_images_says_so(tiny_glm4v_dir, tmp_path):
    root = data_root(tmp_path / "data")
    run = evaluate("--model", str(tiny_glm4v_dir), "--data-root", str(root), "--limit", "5", "--out",
                   str(tmp_path / "out"), "--tasks", "describe_en", "--device", "cpu")
    assert run.returncode == 0, run.stderr[-3000:]
    row = next(x for x in run.stdout.splitlines() if x.startswith("| class stock sentence"))
    assert "over only 5 images" in row


def test_question_following_report_grades_the_answers_it_saved(tmp_path):
    """The "questions" task on the shipped mini: every held-out intent asked, first turns filled by the model's own
    answer, each saved answer re-graded to the same verdict, rates in the report."""
    from finetune.data import intents

    root = data_root(tmp_path / "data", images=4)
    model = ROOT / "checkpoints" / "remoteglm-mini"
    run = evaluate("--model", str(model), "--data-root", str(root), "--out", str(tmp_path / "out"),
                   "--tasks", "questions", "--device", "cpu", "--batch-size", "16")
    assert run.returncode == 0, run.stderr[-3000:]
    stem = "remoteglm-mini_ucm_test"
    rep = json.loads((tmp_path / "out" / f"{stem}.json").read_text())["questions"]
    assert rep["images"] == 4 and {"no_image", "unanswerable", "language", "translate", "refer_back"} <= set(
        rep["per_intent"])
    assert 0.0 <= rep["mean_over_intents"] <= 1.0 and rep["n"] == sum(rep["n_per_intent"].values())
    rows = [json.loads(x) for x in (tmp_path / "out" / f"{stem}_questions.jsonl").read_text().splitlines()]
    assert len(rows) == rep["n"]
    for r in rows:
        item = intents.FollowItem(**{k: v for k, v in r.items()})
        assert intents.grade(item) == r["meta"]["correct"]
        if r["needs_first"]:  # the second turn carries the model's own first answer
            assert r["first_answer"] and r["messages"][1] == {"role": "assistant", "content": r["first_answer"]}
        assert (r["image"] is None) == (r["intent"] == "no_image")
    assert "Question following" in (tmp_path / "out" / f"{stem}.md").read_text()
