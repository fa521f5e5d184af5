"""Command line of `python -m finetune.lora`: `train` (flags from `TrainConfig`) and `export`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from pydantic import ValidationError

from finetune.lora.config import TrainConfig
from finetune.lora.export import export
from finetune.lora.samples import InputError
from finetune.lora.training import train
from settings import add_flags, config_from_flags


ENV_PREFIX = "REMOTEGLM_LORA_"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m finetune.lora", description="LoRA / QLoRA fine-tuning of a VLM.")
    sub = p.add_subparsers(dest="command", required=True)
    add_flags(sub.add_parser("train", help="train a LoRA adapter"), TrainConfig, env_prefix=ENV_PREFIX)
    e = sub.add_parser("export", help="merge an adapter into its base and save a plain model directory")
    e.add_argument("--base", required=True, help="the base the adapter was trained on")
    e.add_argument("--adapter", required=True, help="adapter directory written by `train`")
    e.add_argument("--out", required=True, help="output model directory")
    e.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"],
                   help="weights dtype of the merged model; 'auto' keeps the base checkpoint's")
    e.add_argument("--trust-remote-code", action="store_true")
    return p


def _cmd_train(args: argparse.Namespace) -> int:
    try:  # flags, then REMOTEGLM_LORA_* variables, then the defaults
        cfg = config_from_flags(args, TrainConfig, env_prefix=ENV_PREFIX)
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
