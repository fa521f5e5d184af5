"""`python -m finetune.lora` as a user meets it: bad input is one clear line and exit code 2 before any model is
loaded, a resumed run continues its clock, the help text renders, no deprecation noise (tiny GLM-4V, CPU)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = ROOT / "tests" / "fixtures"
GOOD = {"id": "a", "image": "ucm/airplane_192.jpg", "messages": [
    {"role": "user", "content": "这张遥感图像展现了什么场景？"}, {"role": "assistant", "content": "这是一个机场。"}]}
GOOD2 = {"id": "b", "image": "ucm/harbor_1092.jpg", "messages": [
    {"role": "user", "content": "What does this remote sensing image show?"},
    {"role": "assistant", "content": "Many boats are docked in the harbor."}]}


def lora_cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "finetune.lora", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def one_line_error(run: subprocess.CompletedProcess) -> str:
    assert run.returncode == 2, run.stderr[-2000:]
    lines = [x for x in run.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr[-2000:]
    assert "Loading weights" not in run.stdout + run.stderr  # refused before the model was loaded
    return lines[0]


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(x + "\n" for x in lines), encoding="utf-8")
    return path


def train_args(base, data, out, *extra) -> list[str]:
    return ["train", "--base", str(base), "--data", str(data), "--data-root", str(FIXTURES), "--out", str(out),
            "--batch-size", "1", "--grad-accum", "1", "--num-workers", "0", "--lora-rank", "2", "--log-every", "1",
            *extra]


def test_train_help_renders_its_percent_signs():
    run = lora_cli("train", "--help")
    assert run.returncode == 0, run.stderr
    assert "option_strings" not in run.stdout and "about 30%" in " ".join(run.stdout.split())


def test_malformed_jsonl_line_names_file_and_line(tiny_glm4v_dir, tmp_path):
    data = write_lines(tmp_path / "train.jsonl", [json.dumps(GOOD), "", json.dumps(GOOD2), '{"id": "c", broken'])
    line = one_line_error(lora_cli(*train_args(tiny_glm4v_dir, data, tmp_path / "out")))
    assert f"{data}:4:" in line and "not valid JSON" in line


def test_missing_image_is_found_before_training(tiny_glm4v_dir, tmp_path):
    data = write_lines(tmp_path / "train.jsonl", [json.dumps(GOOD), json.dumps({**GOOD2, "image": "ucm/nope.jpg"})])
    line = one_line_error(lora_cli(*train_args(tiny_glm4v_dir, data, tmp_path / "out")))
    assert f"{data}:2:" in line and "ucm/nope.jpg" in line and str(FIXTURES) in line and "--data-root" in line


def test_a_sample_without_an_assistant_turn_is_refused(tiny_glm4v_dir, tmp_path):
    data = write_lines(tmp_path / "train.jsonl", [json.dumps({**GOOD, "messages": GOOD["messages"][:1]})])
    line = one_line_error(lora_cli(*train_args(tiny_glm4v_dir, data, tmp_path / "out")))
    assert f"{data}:1:" in line and "assistant" in line


@pytest.mark.parametrize("base, says", [("", "--base is empty"), ("/no/such/model", "no such model directory")])
def test_unusable_base_is_refused_up_front(base, says, tmp_path):
    data = write_lines(tmp_path / "train.jsonl", [json.dumps(GOOD)])
    assert says in one_line_error(lora_cli(*train_args(base, data, tmp_path / "out")))


def test_empty_data_file_is_refused(tiny_glm4v_dir, tmp_path):
    data = write_lines(tmp_path / "train.jsonl", [])
    assert "no samples" in one_line_error(lora_cli(*train_args(tiny_glm4v_dir, data, tmp_path / "out")))


def test_resume_continues_the_clock_and_reruns_are_checked_up_front(tiny_glm4v_dir, tmp_path):
    data = write_lines(tmp_path / "train.jsonl", [json.dumps(GOOD), json.dumps(GOOD2)])
    out = tmp_path / "run"
    first = lora_cli(*train_args(tiny_glm4v_dir, data, out, "--max-steps", "4", "--stop-after", "2"))
    assert first.returncode == 0, first.stderr[-3000:]
    assert "FutureWarning" not in first.stderr, first.stderr[-3000:]  # gradient checkpointing is on by default

    again = one_line_error(lora_cli(*train_args(tiny_glm4v_dir, data, out, "--max-steps", "4")))
    assert "already holds checkpoints" in again and "--resume latest" in again
    other = one_line_error(lora_cli(*train_args(tiny_glm4v_dir, data, out, "--max-steps", "4", "--resume", "latest",
                                                "--lora-rank", "8")))
    assert "another run" in other and "--lora-rank 2 -> 8" in other

    resumed = lora_cli(*train_args(tiny_glm4v_dir, data, out, "--max-steps", "4", "--resume", "latest"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    elapsed = [r["elapsed_s"] for r in records]
    assert elapsed == sorted(elapsed) and elapsed[2] > elapsed[1], elapsed  # continues after the resume

    export = lora_cli("export", "--base", str(tiny_glm4v_dir), "--adapter", str(out), "--out", str(tmp_path / "m"))
    assert export.returncode == 0, export.stderr[-3000:]
    assert "FutureWarning" not in export.stderr, export.stderr[-3000:]


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs a git checkout")
def test_the_documented_export_folder_is_ignored_by_git():
    run = subprocess.run(["git", "check-ignore", "-q", "merged/model.safetensors"], cwd=ROOT)
    assert run.returncode == 0, "merged/ (the README's export --out) is not in .gitignore"
