"""The one command-line entry: `python app.py NAME ...` (and the installed `remoteglm`) looks NAME up in
`app.COMMANDS`, imports that module only then and hands it the rest of the command line."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import types

import pytest

import app
from settings import REPO_ROOT

MODULE_COMMANDS = {"translate": "translate.__main__", "build-data": "finetune.data", "train-lora": "finetune.lora",
                   "train-mini": "finetune.mini", "evaluate": "finetune.evaluate"}


def run_app(*argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "app.py", *argv], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=120, env=env)


def test_help_lists_the_table_one_line_each():
    out = run_app("--help").stdout
    lines = out.splitlines()
    for name in app.COMMANDS:
        assert sum(line.strip().startswith(f"{name} ") for line in lines) == 1, name
    assert set(app.COMMANDS) == {"web", "cli", "serve", "users", *MODULE_COMMANDS, "bench"}


@pytest.mark.parametrize("name", sorted(MODULE_COMMANDS))
def test_each_entry_hands_the_rest_of_argv_to_its_modules_main(monkeypatch, name):
    seen = {}
    fake = types.ModuleType(MODULE_COMMANDS[name])
    fake.main = lambda argv: seen.setdefault("argv", argv) and 7
    monkeypatch.setitem(sys.modules, MODULE_COMMANDS[name], fake)
    assert app.main([name, "run", "--out", "x"]) == 7
    assert seen["argv"] == ["run", "--out", "x"]


def test_bench_runs_the_named_script_with_the_rest(monkeypatch):
    seen = {}
    fake = types.ModuleType("bench.speed")
    fake.main = lambda argv: seen.setdefault("argv", argv) and None  # bench mains return None: success
    monkeypatch.setitem(sys.modules, "bench.speed", fake)
    assert app.main(["bench", "speed", "--reps", "1"]) == 0 and seen["argv"] == ["--reps", "1"]


def test_bench_without_a_name_lists_the_scripts(capsys):
    assert app.main(["bench"]) == 0
    out = capsys.readouterr().out
    for script in ("speed", "chat_turn", "load", "image_budget"):
        assert f"  {script} " in out
    assert app.main(["bench", "nope"]) == 2 and "nope" in capsys.readouterr().err


def test_module_help_and_usage_errors_become_exit_codes():
    done = run_app("translate", "--help")
    assert done.returncode == 0 and "{run,check}" in done.stdout
    done = run_app("train-mini", "--help")  # a package run through its __main__
    assert done.returncode == 0 and "--data-root" in done.stdout
    assert run_app("evaluate", "--no-such-flag").returncode == 2


def test_translate_check_runs_end_to_end(tmp_path):
    good = tmp_path / "zh.jsonl"
    good.write_text(json.dumps({"id": 0, "en": "many planes are parked at the airport .",
                                "zh": "机场停着许多飞机。"}, ensure_ascii=False) + "\n", encoding="utf-8")
    done = run_app("translate", "check", str(good))
    assert done.returncode in (0, 1) and f"{good}: " in done.stdout and "pass" in done.stdout


def test_choosing_a_command_imports_nothing_heavy():
    code = ("import sys, app; app.main(['bench']); app.main(['translate', 'check', '--help']); "
            "print(sorted(m for m in ('torch', 'transformers', 'gradio') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout + done.stderr


@pytest.mark.skipif(importlib.util.find_spec("setuptools") is None, reason="setuptools is needed to build the package")
def test_pip_install_gives_the_remoteglm_command(tmp_path):
    # built from a copy of the sources: setuptools writes build/ and *.egg-info next to what it builds
    source = tmp_path / "src"
    shutil.copytree(REPO_ROOT, source, ignore=shutil.ignore_patterns(
        ".*", "__pycache__", "build", "*.egg-info", "checkpoints", "data", "artifacts", "runs", "docs", "examples",
        "tests", "fixtures"))
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", str(source), "--no-deps", "--no-build-isolation",
                    "--target", str(target), "--quiet", "--no-warn-script-location"], check=True, timeout=300,
                   cwd=tmp_path, capture_output=True)
    env = dict(os.environ, PYTHONPATH=str(target))
    done = subprocess.run([sys.executable, str(target / "bin" / "remoteglm"), "--help"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: remoteglm") and all(f"  {name} " in done.stdout for name in app.COMMANDS)
    assert (target / "translate" / "prompts" / "sentences.txt").is_file()  # the package data travels with it
