"""The one interface every vision-language backend implements, and the types that cross it.

A backend takes a conversation (`ChatMessage`s: role, text, PIL images already loaded and converted to RGB)
and `GenerationParams`, and either returns a `Completion` or streams `StreamChunk`s whose last one carries the
`Completion`. Backends know nothing about storage, LangChain or the UI (those live in `bot/` and above).
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from PIL import Image

from settings import ORIGINAL_GENERATION_DEFAULTS

Role = Literal["system", "user", "assistant"]
FinishReason = Literal["stop", "length", "cancelled"]


@dataclass
class ChatMessage:
    role: Role
    text: str = ""
    images: list[Image.Image] = field(default_factory=list)  # shown before the text, in order


@dataclass(frozen=True)
class GenerationParams:
    """What the caller asks for; None means "the backend's default" (see `resolve_generation`)."""

    max_new_tokens: int | None = None
    temperature: float | None = None  # 0 -> greedy
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None
    do_sample: bool | None = None  # False forces greedy whatever the temperature
    seed: int | None = None

    def merged(self, other: GenerationParams | Mapping[str, Any] | None) -> GenerationParams:
        """A copy where the values set in `other` win."""
        if other is None:
            return self
        values = other if isinstance(other, Mapping) else vars(other)
        return replace(self, **{k: v for k, v in values.items() if v is not None and k in vars(self)})


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason
    prompt: str = ""  # the rendered prompt as the model saw it (image tokens collapsed), for inspection


class BackendBusy(RuntimeError):
    """The backend's bounded queue is full: the request was not started; try again after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: float = 1.0):
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class StreamChunk:
    text: str  # new text since the previous chunk
    completion: Completion | None = None  # set on the last chunk only


def model_generation_defaults(own: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The sampling values a checkpoint's generation_config sets (`own`: its non-default values, as
    `GenerationConfig.to_diff_dict()` or the generation_config.json file gives them), temperature 0 where it asks
    for greedy decoding (RemoteGLM-mini does), then the user's explicit `overrides`."""
    defaults = {k: own[k] for k in ORIGINAL_GENERATION_DEFAULTS if k in own}
    if own.get("do_sample") is False:
        defaults["temperature"] = 0.0
    defaults.update(overrides or {})
    return defaults


def resolve_generation(
    params: GenerationParams, model_defaults: Mapping[str, Any], max_new_tokens: int, limit: int
) -> dict[str, Any]:
    """Turn `params` into `generate()` keyword arguments.

    Precedence: explicit params > the model's own generation_config values > the original project's defaults
    (temperature 0.8, top_p 0.4, top_k 100, repetition_penalty 1.2). max_new_tokens is clamped to `limit`."""
    sampling = {**ORIGINAL_GENERATION_DEFAULTS, **{k: v for k, v in model_defaults.items() if v is not None}}
    for name in ORIGINAL_GENERATION_DEFAULTS:
        value = getattr(params, name)
        if value is not None:
            sampling[name] = value
    greedy = params.do_sample is False or sampling["temperature"] == 0
    kwargs: dict[str, Any] = {
        "max_new_tokens": max(1, min(params.max_new_tokens or max_new_tokens, limit)),
        "repetition_penalty": sampling["repetition_penalty"],
        "do_sample": not greedy,
    }
    if not greedy:
        kwargs.update(temperature=sampling["temperature"], top_p=sampling["top_p"], top_k=sampling["top_k"])
    return kwargs


class ChatBackend(ABC):
    """A vision-language chat model that answers conversations."""

    model_name: str
    # How many requests the backend computes at once (a batching backend answers that many together); callers
    # such as the API server admit this many plus their own bounded wait.
    max_concurrent: int = 1

    @abstractmethod
    def stream(
        self, messages: list[ChatMessage], params: GenerationParams | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[StreamChunk]:
        """Yield the answer piece by piece; the last chunk carries the `Completion`.

        Setting `cancel` (or closing the iterator) stops generation; the completion then says 'cancelled'."""

    def generate(self, messages: list[ChatMessage], params: GenerationParams | None = None) -> Completion:
        completion = None
        for chunk in self.stream(messages, params):
            completion = chunk.completion or completion
        assert completion is not None, "a backend stream must end with a completion"
        return completion

    def generate_batch(
        self, conversations: list[list[ChatMessage]], params: GenerationParams | None = None
    ) -> list[Completion]:
        """Answer several independent conversations; backends that can batch override this."""
        return [self.generate(messages, params) for messages in conversations]

    def render_prompt(self, messages: list[ChatMessage]) -> str:
        """The prompt text the model would see for `messages` (for inspection and tests)."""
        raise NotImplementedError

    def count_prompt_tokens(self, messages: list[ChatMessage]) -> int | None:
        """Text tokens of the prompt for `messages`, counted without running the model (each image adds its own
        number, bounded by the pixel cap); None when the backend cannot tell (a remote server counts itself)."""
        return None

    def close(self) -> None:
        """Release what the backend holds (GPU memory, HTTP connections)."""
