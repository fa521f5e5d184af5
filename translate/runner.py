"""The translation run: units -> cache lookups -> batched concurrent requests -> validation -> output + report.

Flow per batch (a worker thread): ask for n numbered lines; a wrong line count is retried with a note, then the
batch is split into single-unit requests; every line is validated (translate/validate.py) and a rejected line is
retried alone with the problems as a note; after `max_attempts` it is a failure: listed in the report and in
`<out>.failures.jsonl`, never written to the output. Accepted lines go to the cache at once, so an interrupted run
(Ctrl-C, budget, crash) resumes where it stopped.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import openai
from tqdm import tqdm

from translate.cache import TranslationCache
from translate.captions import (Unit, image_units, read_reuse, sentence_units, write_merge, write_rewrite,
                                write_sentences)
from translate.client import Budget, BudgetExceeded, ChatClient, FatalAPIError
from translate.config import TranslateConfig
from translate.prompts import Prompt, load_prompt, parse_numbered
from translate.validate import check_paragraph, check_sentence


@dataclass(frozen=True)
class Mode:
    units: Callable[[list[Path]], list[Unit]]
    check: Callable[[Unit, str], list[str]]
    write: Callable
    one_per: str  # "sentence" | "image"


MODES: dict[str, Mode] = {
    "sentences": Mode(sentence_units, lambda u, zh: check_sentence(u.source, zh), write_sentences, "sentence"),
    "merge": Mode(image_units, lambda u, zh: check_paragraph(u.sentences, zh), write_merge, "image"),
    "rewrite": Mode(image_units, lambda u, zh: check_paragraph(u.sentences, zh), write_rewrite, "image"),
}


@dataclass
class Report:
    """What a run did; printed at the end and written to `<out>.report.json`."""

    mode: str
    model: str
    prompt_version: str
    units: int = 0
    cache_hits: int = 0
    reused: int = 0
    translated: int = 0
    failed: int = 0
    skipped: int = 0
    requests: int = 0
    retries: int = 0
    line_count_errors: int = 0
    validation_rejects: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    stopped: str | None = None
    seconds: float = 0.0
    output: str = ""
    failures_file: str | None = None

    def summary(self) -> str:
        lines = [f"{self.mode} with {self.model} (prompt {self.prompt_version}): {self.units} units",
                 f"  done: {self.translated} translated, {self.cache_hits} from cache, {self.reused} reused",
                 f"  failed: {self.failed}  skipped: {self.skipped}" + (f"  stopped: {self.stopped}" if self.stopped
                                                                       else ""),
                 f"  requests: {self.requests} ({self.retries} retries, {self.line_count_errors} wrong line counts, "
                 f"{self.validation_rejects} rejected lines)  errors: {self.errors or 'none'}",
                 f"  tokens: {self.total_tokens} ({self.prompt_tokens} prompt + {self.completion_tokens} completion)",
                 f"  {self.seconds:.1f}s -> {self.output}" + (f"; failures in {self.failures_file}"
                                                               if self.failures_file else "")]
        return "\n".join(lines)


class Run:
    """State of one run shared by the worker threads."""

    def __init__(self, cfg: TranslateConfig, client: ChatClient, prompt: Prompt, cache: TranslationCache,
                 mode: Mode, report: Report) -> None:
        self.cfg, self.client, self.prompt, self.cache = cfg, client, prompt, cache
        self.mode, self.report = mode, report
        self.results: dict[str, str] = {}
        self.failures: dict[str, dict] = {}
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.bar: tqdm | None = None

    def _tick(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def _accept(self, unit: Unit, zh: str) -> None:
        self.cache.put(self.cfg.model, self.prompt.version, unit.source, zh)
        with self.lock:
            self.results[unit.source] = zh
        self._tick()

    def _fail(self, unit: Unit, problems: list[str], answer: str | None = None) -> None:
        with self.lock:
            self.failures[unit.source] = {"source": unit.source, "problems": problems, "last_answer": answer,
                                          **({"image": unit.image} if unit.image else {})}
        self._tick()

    def batch(self, units: list[Unit], attempt: int = 0, note: str = "") -> None:
        """Translate units (one request), with the retry / split / validation policy of the module docstring."""
        if self.stop.is_set():
            return
        try:
            answer = self.client.complete(self.prompt.messages([u.source for u in units], note=note))
        except BudgetExceeded as err:
            self.report.stopped = str(err)
            self.stop.set()
            return
        except FatalAPIError as err:
            self.report.stopped = str(err)
            self.stop.set()
            return
        except (openai.APIError, OSError) as err:  # retries exhausted or a non-retryable 4xx
            for u in units:
                self._fail(u, [f"request failed: {type(err).__name__}: {err}"[:300]])
            return
        items = parse_numbered(answer, len(units))
        if items is None:
            with self.lock:
                self.report.line_count_errors += 1
            if attempt + 1 < self.cfg.max_attempts:
                return self.batch(units, attempt + 1, f"上次的回答行数不对：必须正好输出 {len(units)} 行编号译文。")
            if len(units) > 1:
                for u in units:
                    self.batch([u])
                return
            return self._fail(units[0], ["wrong line count"], answer)
        for unit, zh in zip(units, items):
            problems = self.mode.check(unit, zh)
            if not problems:
                self._accept(unit, zh)
                continue
            with self.lock:
                self.report.validation_rejects += 1
            if attempt + 1 < self.cfg.max_attempts:
                self.batch([unit], attempt + 1, "上次译文的问题：" + "；".join(problems))
            else:
                self._fail(unit, problems, zh)


def _failures_path(out: Path) -> Path:
    return out.with_name(out.name + ".failures.jsonl")


def run(cfg: TranslateConfig, client: ChatClient | None = None) -> Report:
    """Run one translation job (see the module docstring); `client` may be injected by tests."""
    cfg = cfg.resolved()
    t0 = time.perf_counter()
    mode = MODES[cfg.mode]
    prompt = load_prompt(cfg.mode, cfg.prompt_dir) if cfg.prompt_dir else load_prompt(cfg.mode)
    client = client or ChatClient(base_url=cfg.base_url, model=cfg.model, api_key=cfg.api_key, timeout=cfg.timeout,
                                  max_retries=cfg.max_retries, backoff=cfg.backoff,
                                  budget=Budget(cfg.max_requests, cfg.max_tokens))
    report = Report(mode=cfg.mode, model=cfg.model, prompt_version=prompt.version, output=str(cfg.out))
    cache = TranslationCache(cfg.cache)
    state = Run(cfg, client, prompt, cache, mode, report)
    units = mode.units(cfg.captions)
    reuse = read_reuse(cfg.reuse) if cfg.reuse and mode.one_per == "sentence" else {}
    report.units = len(units)

    pending = []
    for u in units:
        if u.source in reuse:
            report.reused += 1
        elif (hit := cache.get(cfg.model, prompt.version, u.source)) is not None:
            state.results[u.source] = hit
            report.cache_hits += 1
        else:
            pending.append(u)
    batches = [pending[i:i + cfg.batch_size] for i in range(0, len(pending), cfg.batch_size)]
    state.bar = tqdm(total=len(pending), desc=f"translate {cfg.mode}", unit=mode.one_per, disable=not cfg.progress)
    pool = ThreadPoolExecutor(max_workers=cfg.concurrency)
    try:
        for fut in [pool.submit(state.batch, b) for b in batches]:
            fut.result()
    except KeyboardInterrupt:  # Ctrl-C: stop scheduling first, then let in-flight requests finish into the cache
        state.stop.set()
        report.stopped = "interrupted"
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        state.bar.close()
        cache.close()

    translated_now = len(state.results) - report.cache_hits
    report.translated = translated_now
    report.failed = len(state.failures)
    report.skipped = len(pending) - translated_now - report.failed
    report.requests, report.retries = client.usage.requests, client.usage.retries
    report.prompt_tokens, report.completion_tokens = client.usage.prompt_tokens, client.usage.completion_tokens
    report.total_tokens = client.usage.total_tokens
    report.errors = dict(client.usage.errors)

    start = cfg.id_start if cfg.id_start is not None else (max(i for i, _ in reuse.values()) + 1 if reuse else 0)
    pairs, k = [], 0
    for u in units:
        if u.source in reuse:
            pairs.append((reuse[u.source][0], u, reuse[u.source][1]))
            continue
        if u.source in state.results:
            pairs.append((start + k, u, state.results[u.source]))
        k += 1  # ids follow first appearance, so a failed unit leaves a gap and a rerun fills it
    Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
    mode.write(pairs, Path(cfg.out), {"model": cfg.model, "prompt_version": prompt.version})
    fpath = _failures_path(Path(cfg.out))
    if state.failures:
        with open(fpath, "w", encoding="utf-8") as f:
            for row in state.failures.values():
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        report.failures_file = str(fpath)
    elif fpath.exists():
        fpath.unlink()
    report.seconds = time.perf_counter() - t0
    Path(cfg.out).with_name(Path(cfg.out).name + ".report.json").write_text(
        json.dumps(asdict(report), ensure_ascii=False, indent=1), encoding="utf-8")
    return report
