"""Each bench/ script in its smallest mode on the tiny GLM-4V (or the shipped mini where the script needs its
scene head): it runs to the end and prints its named figures and ratios. Benchmarks, not timed tests: no figure's
value is asserted, only that it is there."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from settings import DEFAULT_MODEL_DIR, REPO_ROOT

NUMBER = r"[-+]?\d+(?:\.\d+)?"


def run_script(*argv: str, timeout: int = 240) -> str:
    """`python -m bench.NAME ...` as a user runs it (each script prints as it goes; some start servers)."""
    done = subprocess.run([sys.executable, "-m", *argv], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    return done.stdout


def has(out: str, pattern: str) -> None:
    assert re.search(pattern, out, re.MULTILINE), f"{pattern!r} not in:\n{out}"


def test_chat_turn_prints_ratios_to_bare_and_storage_latencies(tiny_glm4v_dir):
    out = run_script("bench.chat_turn", "--model", str(tiny_glm4v_dir), "--new-tokens", "2", "--reps", "1")
    for name in ("bare model.generate", r"service\.ask \(blocking\)", r"service\.send \(streamed\)"):
        has(out, rf"^{name} +median +{NUMBER} ms +p95 +{NUMBER} ms +ratio to bare {NUMBER}$")
    has(out, rf"^sqlite +append message +median +{NUMBER} ms")
    has(out, rf"^sqlite +load 1000 msgs +median +{NUMBER} ms")


def test_speed_prints_every_part_of_issue_14(tiny_glm4v_dir):
    out = run_script("bench.speed", "--model", str(tiny_glm4v_dir), "--new-tokens", "2", "--reps", "1",
                     "--concurrent", "1,3")
    has(out, rf"^bare generate, 1 torch thread\(s\) +median +{NUMBER} ms .* ratio to 1 thread {NUMBER}$")
    has(out, rf"^service\.send \(streamed\) +median .* ratio to bare {NUMBER}$")
    has(out, rf"^follow-up \(features cached\) .* ratio to first turn {NUMBER}")
    for n in (1, 3):
        has(out, rf"^ *{n} concurrent sessions +throughput +{NUMBER} tokens/s .* ratio to serial +{NUMBER} .* "
                 rf"stored as expected {n}/{n}")
    has(out, rf"^start-up python app\.py \(web UI\) +to first HTTP 200 +{NUMBER} s")
    has(out, rf"^start-up python -m server \(API\) +to first HTTP 200 +{NUMBER} s")


def test_load_prints_answered_refused_lost_and_the_ratio_to_one_client(tiny_glm4v_dir):
    out = run_script("bench.load", "--model", str(tiny_glm4v_dir), "--clients", "1,2", "--requests", "1",
                     "--max-tokens", "2")
    for n in (1, 2):
        has(out, rf"^ *{n} clients x 1 +answered +{n} +refused \(503\) +0 +lost +0 .* ratio to 1 client +{NUMBER}")


def test_memory_prints_rss_start_peak_and_idle(tiny_glm4v_dir):
    out = run_script("bench.memory", "--model", str(tiny_glm4v_dir), "--big-side", "600", "--idle", "0",
                     "--trim", "on")
    has(out, r"^trim after large decodes on:$")
    has(out, rf"^  RSS start {NUMBER} MB, peak {NUMBER} MB, after the run {NUMBER} MB, idle 0 s later {NUMBER} MB "
             rf"\(ratio to start {NUMBER}\)$")


def test_image_budget_refuses_the_bomb_and_decodes_the_allowed_scene():
    out = run_script("bench.image_budget")
    has(out, r"^bomb 8 x uint16 10000x10000: \S+ MB on disk$")
    has(out, rf"^  this +refused \(ImageTooLarge\) +{NUMBER} s +peak RSS +{NUMBER} MB +growth +{NUMBER} MB$")
    has(out, rf"^  this +decoded to \d+x\d+ +{NUMBER} s +peak RSS")


@pytest.mark.skipif(not (DEFAULT_MODEL_DIR / "config.json").exists(), reason="needs the shipped RemoteGLM-mini")
def test_landuse_scale_prints_tiles_per_second_and_peak_memory():
    out = run_script("bench.landuse", "--parts", "scale", "--side", "600", "--no-tta")
    has(out, rf"^scale +one view \(--no-tta\): \d+ tiles .* = {NUMBER} tiles/s .* peak memory {NUMBER} MB")


def test_gpu_lora_check_cpu_smoke_writes_its_table(tmp_path):
    out = run_script("bench.gpu_lora_check", "--out", str(tmp_path), "--cpu-smoke", "--tiny-steps", "2",
                     "--batch-size", "1", "--num-workers", "0", "--runs", "tiny-lora")
    table = (tmp_path / "table.md").read_text(encoding="utf-8")
    for run in ("tiny-lora",):
        assert re.search(rf"^\| {run} \| 2 \| 1 \| {NUMBER} \|", table, re.MULTILINE), table
    assert "samples/s" in out and (tmp_path / "results.json").is_file()
