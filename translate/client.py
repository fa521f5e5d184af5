"""One chat-completions call to any OpenAI-compatible endpoint, with retries, backoff and a budget guard.

The `openai` client runs with its own retries off: this module decides what is retried (429, 5xx, timeouts,
connection errors; exponential backoff with jitter, honouring Retry-After) and counts every attempt against the
budget, because every attempt costs.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field

import openai


class BudgetExceeded(RuntimeError):
    """The next request would exceed --max-requests or --max-tokens."""


class FatalAPIError(RuntimeError):
    """An error no retry fixes (bad key, unknown model): the run stops."""


@dataclass
class Usage:
    """Counters shared by all worker threads."""

    requests: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class Budget:
    max_requests: int | None = None
    max_tokens: int | None = None

    def reserve(self, usage: Usage) -> None:
        """Count one request, or raise BudgetExceeded if the limits are reached."""
        with usage.lock:
            if self.max_requests is not None and usage.requests >= self.max_requests:
                raise BudgetExceeded(f"max requests {self.max_requests} reached")
            if self.max_tokens is not None and usage.total_tokens >= self.max_tokens:
                raise BudgetExceeded(f"max tokens {self.max_tokens} reached ({usage.total_tokens} used)")
            usage.requests += 1


@dataclass
class ChatClient:
    """Blocking chat completions with retries. `backoff` is the first wait in seconds (doubles each retry)."""

    base_url: str
    model: str
    api_key: str
    timeout: float = 60.0
    max_retries: int = 5
    backoff: float = 1.0
    max_backoff: float = 60.0
    temperature: float = 0.0
    budget: Budget = field(default_factory=Budget)
    usage: Usage = field(default_factory=Usage)

    def __post_init__(self) -> None:
        self._client = openai.OpenAI(base_url=self.base_url, api_key=self.api_key, timeout=self.timeout,
                                     max_retries=0)

    def _wait(self, attempt: int, retry_after: str | None) -> None:
        delay = min(self.max_backoff, self.backoff * 2 ** attempt) * (1 + random.random() * 0.25)
        if retry_after and retry_after.replace(".", "", 1).isdigit():
            delay = max(delay, min(self.max_backoff, float(retry_after)))
        time.sleep(delay)

    def _count_error(self, name: str) -> None:
        with self.usage.lock:
            self.usage.errors[name] = self.usage.errors.get(name, 0) + 1

    def complete(self, messages: list[dict]) -> str:
        """The assistant text; raises BudgetExceeded, FatalAPIError, or the last retryable error."""
        for attempt in range(self.max_retries + 1):
            self.budget.reserve(self.usage)
            if attempt:
                with self.usage.lock:
                    self.usage.retries += 1
            try:
                resp = self._client.chat.completions.create(model=self.model, messages=messages,
                                                            temperature=self.temperature)
            except (openai.RateLimitError, openai.InternalServerError) as err:
                self._count_error(str(err.status_code))
                if attempt == self.max_retries:
                    raise
                self._wait(attempt, err.response.headers.get("retry-after"))
            except (openai.APITimeoutError, openai.APIConnectionError) as err:
                self._count_error("timeout" if isinstance(err, openai.APITimeoutError) else "connection")
                if attempt == self.max_retries:
                    raise
                self._wait(attempt, None)
            except openai.APIStatusError as err:
                self._count_error(str(err.status_code))
                if err.status_code in (401, 403, 404):
                    raise FatalAPIError(f"HTTP {err.status_code} from {self.base_url}: {err.message}") from err
                raise
            else:
                if resp.usage is not None:
                    with self.usage.lock:
                        self.usage.prompt_tokens += resp.usage.prompt_tokens or 0
                        self.usage.completion_tokens += resp.usage.completion_tokens or 0
                return resp.choices[0].message.content or ""
        raise AssertionError("unreachable")
