"""Command line of the translation tool.

    export REMOTEGLM_TRANSLATE_BASE_URL=https://api.deepseek.com/v1 REMOTEGLM_TRANSLATE_MODEL=deepseek-chat
    export REMOTEGLM_TRANSLATE_API_KEY=sk-...
    python -m translate run ../shared/data/ucm/dataset.json ../shared/data/sydney/dataset.json \
        --out runs/translate/captions_zh.jsonl                       # the shipped data/zh/captions_zh.jsonl format
    python -m translate run NEW/dataset.json --reuse data/zh/captions_zh.jsonl --out new_zh.jsonl   # extend
    python -m translate run ../shared/data/ucm/dataset.json --mode merge --out runs/translate/ucm_merge.json
    python -m translate check data/zh/captions_zh.jsonl                # validate an existing translation file

Exit codes: 0 all done, 1 some units failed, 2 bad settings, 3 stopped early (budget, fatal API error, Ctrl-C).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from settings import add_flags, config_from_flags
from translate.config import ENV_PREFIX, ConfigError, TranslateConfig

# set by hand below: a positional, a required flag and a repeatable one; every other field through settings.add_flags
BY_HAND = ("captions", "out", "reuse")


def _cmd_run(args: argparse.Namespace) -> int:
    from translate.runner import run  # imports openai / tqdm only when needed

    cfg = config_from_flags(args, TranslateConfig, env_prefix=ENV_PREFIX)
    try:
        report = run(cfg)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(report.summary())
    if report.stopped:
        return 3
    return 1 if report.failed else 0


def _cmd_check(args: argparse.Namespace) -> int:
    from translate.validate import check_sentence

    total = bad = 0
    for line in Path(args.file).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        total += 1
        problems = check_sentence(row["en"], row["zh"])
        if problems:
            bad += 1
            if args.verbose:
                print(json.dumps({"id": row["id"], "en": row["en"], "zh": row["zh"], "problems": problems},
                                 ensure_ascii=False))
    print(f"{args.file}: {total - bad}/{total} pass ({100 * (total - bad) / max(1, total):.2f} %)")
    return 0 if bad == 0 else 1


def _field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(TranslateConfig)]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m translate", description="Translate remote-sensing captions.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="translate Karpathy-format caption files")
    r.add_argument("captions", nargs="+", type=Path, help="dataset.json files (Karpathy format)")
    r.add_argument("--out", required=True, type=Path, help="output file: JSONL for sentences / rewrite, a JSON list "
                   "for merge")
    r.add_argument("--reuse", action="append", type=Path, default=argparse.SUPPRESS, metavar="FILE",
                   help="existing {id,en,zh} file whose translations are kept (repeatable)")
    add_flags(r, TranslateConfig, names=[n for n in _field_names() if n not in BY_HAND], env_prefix=ENV_PREFIX)
    c = sub.add_parser("check", help="validate an existing {id,en,zh} translation file")
    c.add_argument("file")
    c.add_argument("-v", "--verbose", action="store_true", help="print every failing line")
    return p


COMMANDS = {"run": _cmd_run, "check": _cmd_check}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return COMMANDS[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
