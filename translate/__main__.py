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
import json
import sys
from pathlib import Path

from translate.config import ConfigError, TranslateConfig


def _cmd_run(args: argparse.Namespace) -> int:
    from translate.runner import run  # imports openai / tqdm only when needed

    cfg = TranslateConfig(
        captions=[Path(p) for p in args.captions], out=Path(args.out), mode=args.mode, base_url=args.base_url,
        model=args.model, api_key=args.api_key, batch_size=args.batch_size, concurrency=args.concurrency,
        max_retries=args.max_retries, backoff=args.backoff, timeout=args.timeout, max_attempts=args.max_attempts,
        max_requests=args.max_requests, max_tokens=args.max_tokens, cache=Path(args.cache), id_start=args.id_start,
        reuse=[Path(p) for p in args.reuse], prompt_dir=Path(args.prompt_dir) if args.prompt_dir else None,
        progress=not args.no_progress)
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


def _parser() -> argparse.ArgumentParser:
    d = TranslateConfig(captions=[], out=Path("."))
    p = argparse.ArgumentParser(prog="python -m translate", description="Translate remote-sensing captions.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="translate Karpathy-format caption files")
    r.add_argument("captions", nargs="+", help="dataset.json files (Karpathy format)")
    r.add_argument("--out", required=True)
    r.add_argument("--mode", choices=("sentences", "merge", "rewrite"), default=d.mode)
    r.add_argument("--base-url", default="", help="OpenAI-compatible endpoint (env REMOTEGLM_TRANSLATE_BASE_URL)")
    r.add_argument("--model", default="", help="model name (env REMOTEGLM_TRANSLATE_MODEL)")
    r.add_argument("--api-key", default="", help="API key (env REMOTEGLM_TRANSLATE_API_KEY or OPENAI_API_KEY)")
    r.add_argument("--batch-size", type=int, default=d.batch_size)
    r.add_argument("--concurrency", type=int, default=d.concurrency)
    r.add_argument("--max-retries", type=int, default=d.max_retries)
    r.add_argument("--backoff", type=float, default=d.backoff)
    r.add_argument("--timeout", type=float, default=d.timeout)
    r.add_argument("--max-attempts", type=int, default=d.max_attempts)
    r.add_argument("--max-requests", type=int, default=None)
    r.add_argument("--max-tokens", type=int, default=None)
    r.add_argument("--cache", default=str(d.cache))
    r.add_argument("--id-start", type=int, default=None)
    r.add_argument("--reuse", action="append", default=[], help="existing {id,en,zh} file to keep (repeatable)")
    r.add_argument("--prompt-dir", default=None)
    r.add_argument("--no-progress", action="store_true")
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
