"""Dynamic batching for a local model: requests that arrive while the model is busy join the next batch.

One scheduler thread owns the model. Callers `submit` requests (rendered prompt + generation settings) into a
bounded queue and read their answers from their own `Request.out` queue; the scheduler takes up to `max_batch`
waiting requests whose generation settings agree (same sampling values and seed; each keeps its own token budget),
runs them as one left-padded `generate()`, and hands each row its text as it is decoded (one queue put per chunk,
decoded incrementally on the generating thread). A row that ends (end token, its own token budget, its cancel
event) is answered at once and stops computing; the other rows go on undisturbed. A request cancelled while it
waits is answered 'cancelled' without ever reaching the model. A full queue raises `BackendBusy` at submission.
A new batch starts once arrivals pause for `GATHER_S`, so that a burst of callers shares it.

Requests that arrive while a batch runs join it at the next step where there is room (continuous batching by
recomputation, as vLLM readmits a preempted request): the running `generate()` stops after that step, and the next
one takes the unfinished rows (their prompt plus the tokens they have so far, prefilled again: a few milliseconds
on the mini, against a whole answer's wait) together with the newcomers. `model.generate` cannot take new rows
mid-call; this keeps it as the decode loop for every architecture. Under greedy decoding a row's answer is the
same with or without joins (tests/model_adapter/test_batching.py).

The model-specific part (processor, generate, decoding a finished row) is the `run_batch` callback of the backend
(`model_adapter/hf.py`); this module knows only requests, threads and token ids.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from model_adapter.base import BackendBusy, ChatMessage, Completion
from model_adapter.detokenize import Detokenizer

log = logging.getLogger(__name__)

# NOTE: a request is answered as soon as its row ends, while the scheduler thread may still be inside generate()
# for the other rows; a daemon thread that is still in torch's C++ code when the interpreter exits aborts the
# process ("terminate called without an active exception", exit status 134; seen 1 in 2 runs). So every scheduler
# is closed (its thread joined) at exit.
_OPEN: weakref.WeakSet[Scheduler] = weakref.WeakSet()

# A new batch waits while requests keep arriving less than GATHER_S apart (up to GATHER_MAX_S): concurrent callers
# that arrive a few milliseconds apart then share one batch instead of the first running alone.
GATHER_S = 0.005
GATHER_MAX_S = 0.05
# A running batch lets waiting requests join after at least this many steps since it (re)started, so that a stream
# of arrivals one by one does not prefill the running rows again at every step.
JOIN_AFTER_STEPS = 4


@atexit.register
def _close_all() -> None:
    for scheduler in list(_OPEN):
        scheduler.close()


@dataclass(eq=False)
class Request:
    messages: list[ChatMessage]
    prompt: str
    gen_kwargs: dict[str, Any]
    group: Hashable  # requests with equal groups may share one generate()
    cancel: threading.Event
    stream: bool
    seed: int | None = None
    out: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)  # str pieces, then Completion or exception
    tokens: list[int] = field(default_factory=list)  # new tokens so far (scheduler thread only)
    ended: str | None = None  # 'stop' | 'length' | 'cancelled' once the row needs no more tokens
    answered: bool = False
    detok: Detokenizer | None = None
    prompt_tokens: int = 0
    joins: int = 0  # times this row was carried into a new generate() so that waiting requests could join

    @property
    def tokens_left(self) -> int:
        return self.max_new_tokens - len(self.tokens)

    @property
    def max_new_tokens(self) -> int:
        return self.gen_kwargs["max_new_tokens"]

    def answer(self, item: Completion | BaseException) -> None:
        if not self.answered:
            self.answered = True
            self.out.put(item)

    def pieces(self) -> Iterator[str | Completion]:
        """The caller's side: text pieces (whatever queued up since the last read, joined), then the Completion.
        Raises the exception the scheduler hit."""
        while True:
            item = self.out.get()
            if isinstance(item, str):
                parts = [item]
                while True:  # catch up in one chunk when the reader fell behind
                    try:
                        item = self.out.get_nowait()
                    except queue.Empty:
                        item = None
                        break
                    if not isinstance(item, str):
                        break
                    parts.append(item)
                yield "".join(parts)
                if item is None:
                    continue
            if isinstance(item, BaseException):
                raise item
            yield item
            return


class Scheduler:
    """Bounded FIFO of requests and the thread that runs them in batches through `run_batch(requests)`.

    `run_batch` answers every row, except those it stopped early because `room_wanted` said waiting requests could
    join: the scheduler runs the rows left unanswered again at once, with the newcomers."""

    def __init__(self, run_batch: Callable[[list[Request]], None], max_batch: int, max_queue: int,
                 retry_after: Callable[[], float] = lambda: 1.0, gather_s: float = GATHER_S, join: bool = True):
        self.run_batch = run_batch
        self.max_batch = max(1, max_batch)
        self.max_queue = max(0, max_queue)
        self.retry_after = retry_after
        self.gather_s = gather_s
        self.join = join
        self._pending: deque[Request] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._batch: list[Request] = []  # the batch being generated now
        self.running = 0  # its rows
        self.batches = 0  # batches run so far, and the largest one (for benchmarks and tests)
        self.largest_batch = 0
        self.joins = 0  # times a running batch stopped so that waiting requests could join it
        _OPEN.add(self)

    def submit(self, requests: list[Request]) -> None:
        """Queue all of `requests` together (they can share the next batch), or none: BackendBusy when full."""
        with self._cond:
            if self._closed:
                raise RuntimeError("the backend is closed")
            if len(self._pending) + len(requests) > self.max_queue + (0 if self.running else self.max_batch):
                raise BackendBusy(
                    f"模型繁忙，请稍后再试 (the model is busy: {self.running} answers in progress and "
                    f"{len(self._pending)} waiting, queue limit {self.max_queue})", self.retry_after())
            self._pending.extend(requests)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="remoteglm-batcher", daemon=True)
                self._thread.start()
            self._cond.notify()

    @property
    def waiting(self) -> int:
        return len(self._pending)

    def close(self) -> None:
        """Refuse new requests, answer the waiting ones with an error, stop the running batch at its next step."""
        with self._cond:
            self._closed = True
            for request in self._batch:
                request.cancel.set()
            self._cond.notify()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)

    def _gather(self) -> None:
        """Let a burst of arrivals share the batch: wait while each new request follows the previous one within
        `gather_s` (at most GATHER_MAX_S in all, or until a batch is full). A lone request waits `gather_s` once."""
        deadline = time.monotonic() + GATHER_MAX_S
        while self.gather_s > 0 and not self._closed and len(self._pending) < self.max_batch:
            seen, left = len(self._pending), deadline - time.monotonic()
            if left <= 0:
                return
            self._cond.wait(min(self.gather_s, left))
            if len(self._pending) == seen:
                return

    def room_wanted(self, batch: list[Request]) -> bool:
        """Whether the running `batch` should stop after this step so that waiting requests join it: there is room
        and a waiting request could share its settings. Called by `run_batch` (through RowStreamer) every step."""
        if not self.join or not self._pending:
            return False
        alive = [r for r in batch if r.ended is None]
        if not alive or len(alive) >= self.max_batch:
            return False
        group = alive[0].group
        with self._cond:
            return any(r.group == group and not r.cancel.is_set() for r in self._pending)

    def _take(self, carried: list[Request]) -> list[Request]:
        batch: list[Request] = list(carried)
        kept: deque[Request] = deque()
        while self._pending:
            request = self._pending.popleft()
            if request.cancel.is_set():
                request.answer(Completion("", 0, 0, "cancelled", request.prompt))
            elif len(batch) < self.max_batch and (not batch or request.group == batch[0].group):
                batch.append(request)
            else:
                kept.append(request)
        self._pending = kept
        return batch

    def _loop(self) -> None:
        carried: list[Request] = []
        while True:
            with self._cond:
                while not carried and not self._pending and not self._closed:
                    self._cond.wait()
                if not carried:
                    self._gather()
                if self._closed:
                    for request in carried + list(self._pending):
                        request.answer(RuntimeError("the backend was closed"))
                    self._pending.clear()
                    return
                batch = self._take(carried)
                self._batch, self.running = batch, len(batch)
            if carried:
                self.joins += 1
            else:
                self.batches += 1
            self.largest_batch = max(self.largest_batch, len(batch))
            carried = []
            try:
                self.run_batch(batch)
                carried = [r for r in batch if not r.answered]
                for request in carried:
                    request.joins += 1
            except BaseException as exc:  # noqa: BLE001 - every waiting caller must hear about it
                log.exception("batch of %d failed", len(batch))
                for request in batch:
                    request.answer(exc)
            with self._cond:
                self._batch, self.running = [], 0


class RowStreamer:
    """`generate(streamer=...)` target: routes each step's (B,) new tokens to their requests.

    Decodes streaming rows incrementally and marks rows that ended; `finish(request)` answers an ended row at once.
    Also a stopping criterion: `generate` stops computing rows whose request ended (per-row, the others go on), and
    stops every row once `room_wanted(requests)` says waiting requests could join (`yielded` is then True: the
    rows not ended go on in the scheduler's next batch)."""

    def __init__(self, requests: list[Request], eos_ids: set[int], finish: Callable[[Request], None],
                 room_wanted: Callable[[list[Request]], bool] | None = None):
        self.requests = requests
        self.eos_ids = eos_ids
        self.finish = finish
        self.room_wanted = room_wanted
        self.prompt_seen = False
        self.steps = 0
        self.yielded = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # generate() first hands over the prompt
            self.prompt_seen = True
            return
        self.steps += 1
        for request, token in zip(self.requests, value.reshape(-1).tolist()):
            if request.ended is not None:
                continue
            request.tokens.append(token)
            if token in self.eos_ids:
                request.ended = "stop"
            else:
                if request.stream and (text := request.detok.step(token)):
                    request.out.put(text)
                if len(request.tokens) >= request.max_new_tokens:
                    request.ended = "length"
                elif request.cancel.is_set():
                    request.ended = "cancelled"
            if request.ended is not None:
                self.finish(request)

    def end(self) -> None:
        pass

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        for request in self.requests:  # a cancel set after the last put still stops the row at the next step
            if request.ended is None and request.cancel.is_set():
                request.ended = "cancelled"
                self.finish(request)
        done = [request.ended is not None for request in self.requests]
        if (not all(done) and self.room_wanted is not None and self.steps >= JOIN_AFTER_STEPS
                and self.room_wanted(self.requests)):
            self.yielded = True
            done = [True] * len(done)
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)
