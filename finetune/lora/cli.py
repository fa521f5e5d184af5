"""Command line of `python -m finetune.lora`: `train` (flags from `TrainConfig`) and `export`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from finetune.lora.config import TrainConfig
from finetune.lora.samples import InputError
from finetune.lora.training import train
from finetune.lora.export import export


def _add_fields(parser: argparse.ArgumentParser, model: type[BaseModel]) -> None:
    """One flag per config field, help text from the field's docstring."""
    for name, field in model.model_fields.items():
        flag = "--" + name.replace("_", "-")
        # `int | None` -> int; Literal[...] and plain types stay as they are
        kind = field.annotation
        if isinstance(kind, types.UnionType):
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        # argparse %-formats help strings: a literal % must be doubled
        kwargs: dict[str, Any] = {"help": (field.description or "").replace("%", "%%"), "dest": name}
        if field.is_required():
            kwargs["required"] = True
        else:
            kwargs["default"] = argparse.SUPPRESS
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(kind) is Literal:
            kwargs["choices"] = typing.get_args(kind)
        else:
            kwargs["type"] = kind if kind in (int, float) else str
        parser.add_argument(flag, **kwargs)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m finetune.lora", description="LoRA / QLoRA fine-tuning of a VLM.")
    sub = p.add_subparsers(dest="command", required=True)
    _add_fields(sub.add_parser("train", help="train a LoRA adapter"), TrainConfig)
    e = sub.add_parser("export", help="merge an adapter into its base and save a plain model directory")
    e.add_argument("--base", required=True, help="the base the adapter was trained on")
    e.add_argument("--adapter", required=True, help="adapter directory written by `train`")
    e.add_argument("--out", required=True, help="output model directory")
    e.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"],
                   help="weights dtype of the merged model; 'auto' keeps the base checkpoint's")
    e.add_argument("--trust-remote-code", action="store_true")
    return p


def _cmd_train(args: argparse.Namespace) -> int:
    values = {k: v for k, v in vars(args).items() if k != "command"}
    try:
        cfg = TrainConfig(**values)
    except ValidationError as exc:  # name the flag, not the field
        problems = [f"--{str(e['loc'][0]).replace('_', '-')}: {e['msg']}" for e in exc.errors()]
        print("python -m finetune.lora train: error: " + "; ".join(problems), file=sys.stderr)
        return 2
    try:
        summary = train(cfg).summary
    except InputError as exc:
        print(f"python -m finetune.lora train: error: {exc}", file=sys.stderr)
        return 2
    summary.pop("history")
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary, indent=1))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    print(export(args.base, Path(args.adapter), Path(args.out), args.dtype, args.trust_remote_code))
    return 0


COMMANDS = {"train": _cmd_train, "export": _cmd_export}


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    return COMMANDS[args.command](args)
