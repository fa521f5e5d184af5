"""settings.add_flags / config_from_flags: one helper turns any settings class into flags and environment variables."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel

from settings import Settings, add_flags, config_from_flags, config_from_argv


@dataclass
class Inner:
    steps: int = 10
    """Optimizer steps."""
    widths: tuple[int, ...] = (32, 64)


@dataclass
class Outer:
    data_root: Path = Path("../shared/data")
    """Where the datasets live."""
    mode: Literal["fast", "slow"] = "fast"
    resume: bool = False
    limit: int | None = None
    inner: Inner = field(default_factory=Inner)


class Model(BaseModel):
    rank: int = 8
    """LoRA rank."""
    name: str


def parse(config, argv, **kwargs):
    parser = argparse.ArgumentParser()
    add_flags(parser, config, **kwargs)
    return parser, config_from_flags(parser.parse_args(argv), config, **kwargs)


def test_dataclass_flags_nested_and_typed(monkeypatch):
    monkeypatch.delenv("REMOTEGLM_INNER__STEPS", raising=False)
    _, cfg = parse(Outer, ["--data-root", "/d", "--mode", "slow", "--resume", "--limit", "3",
                           "--inner.steps", "5", "--inner.widths", "8,16,32"])
    assert cfg == Outer(Path("/d"), "slow", True, 3, Inner(5, (8, 16, 32)))
    _, cfg = parse(Outer, [])
    assert cfg == Outer()


def test_environment_below_flags(monkeypatch):
    monkeypatch.setenv("REMOTEGLM_INNER__STEPS", "7")
    monkeypatch.setenv("REMOTEGLM_RESUME", "yes")
    _, cfg = parse(Outer, [])
    assert cfg.inner.steps == 7 and cfg.resume is True
    _, cfg = parse(Outer, ["--inner.steps", "9", "--no-resume"])
    assert cfg.inner.steps == 9 and cfg.resume is False


def test_help_carries_docstring_env_and_default():
    parser, _ = parse(Outer, [])
    text = parser.format_help()
    assert "Where the datasets live." in text and "REMOTEGLM_DATA_ROOT" in text
    assert "Optimizer steps." in text and "REMOTEGLM_INNER__STEPS" in text and "default: 32,64" in text


def test_literal_choices_refused_by_argparse(capsys):
    with pytest.raises(SystemExit):
        parse(Outer, ["--mode", "medium"])
    assert "invalid choice" in capsys.readouterr().err


def test_pydantic_model_required_field(capsys):
    _, cfg = parse(Model, ["--name", "x", "--rank", "16"])
    assert cfg == Model(name="x", rank=16)
    with pytest.raises(SystemExit):
        parse(Model, [])
    assert "--name" in capsys.readouterr().err


def test_settings_reads_its_environment_itself(monkeypatch):
    monkeypatch.setenv("REMOTEGLM_MAX_NEW_TOKENS", "77")
    _, s = parse(Settings, [])
    assert s.max_new_tokens == 77
    _, s = parse(Settings, ["--max-new-tokens", "12", "--quant", "4"])
    assert s.max_new_tokens == 12 and s.quant == 4


def test_two_configs_on_one_parser_kept_apart():
    parser = argparse.ArgumentParser()
    add_flags(parser, Inner, dest_prefix="a_")
    args = parser.parse_args(["--steps", "3"])
    assert config_from_flags(args, Inner, dest_prefix="a_") == Inner(steps=3)


def test_a_bad_environment_value_names_the_variable(monkeypatch, capsys):
    monkeypatch.setenv("REMOTEGLM_TEST_INNER__STEPS", "many")
    with pytest.raises(SystemExit) as stopped:
        config_from_argv(Outer, [], prog="demo", env_prefix="REMOTEGLM_TEST_")
    assert stopped.value.code == 2
    assert "REMOTEGLM_TEST_INNER__STEPS='many'" in capsys.readouterr().err
    monkeypatch.setenv("REMOTEGLM_TEST_INNER__STEPS", "3")
    assert config_from_argv(Outer, ["--limit", "2"], env_prefix="REMOTEGLM_TEST_") == Outer(limit=2, inner=Inner(steps=3))


def test_without_an_environment_prefix_nothing_is_read(monkeypatch):
    monkeypatch.setenv("INNER__STEPS", "3")
    monkeypatch.setenv("STEPS", "3")
    assert config_from_argv(Outer, [], env_prefix="") == Outer()
