"""A backend that calls any OpenAI-compatible chat-completions server instead of running the model here.

vLLM serving GLM-4.1V (+ our LoRA adapter), our own `python app.py serve`, or a cloud API: the whole app (web chat,
CLI, conversation service, agent) runs on it by configuration alone:

    REMOTEGLM_BACKEND=openai REMOTEGLM_OPENAI_BASE_URL=http://gpu-box:8000/v1 python app.py
    backend = OpenAIBackend.from_settings(Settings(backend="openai", openai_base_url="http://127.0.0.1:8000/v1"))

Images travel as PNG data URLs in `image_url` parts (lossless: the server sees the pixels the app saw). Sampling
values the caller did not set are left to the server, which applies the model's own defaults. Retries (connection
errors, 408/409/429/5xx with the server's Retry-After) come from the `openai` client and happen only before any
answer text arrived, so a streamed answer is never duplicated. The boundary: no storage, no LangChain here.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
from PIL import Image

from model_adapter.base import ChatBackend, ChatMessage, Completion, GenerationParams, StreamChunk
from imagery import image_bytes
from settings import DEFAULT_MODEL_DIR, Settings

log = logging.getLogger(__name__)

# Served names tried, in order, when no model name was configured (vLLM lists the base first, adapters after it).
PREFERRED_MODEL_NAMES = ("remoteglm",)
# Sampling fields the OpenAI API itself defines; the others are vLLM extensions and travel in `extra_body`.
STANDARD_FIELDS = {"temperature": "temperature", "top_p": "top_p", "seed": "seed"}
EXTENSION_FIELDS = {"top_k": "top_k", "repetition_penalty": "repetition_penalty"}


class BackendError(RuntimeError):
    """The OpenAI-compatible server could not answer; the message says what to check."""


_URL_CACHE: OrderedDict[tuple, str] = OrderedDict()
_URL_CACHE_SIZE = 8


def image_url(image: Image.Image, fmt: str = "PNG") -> str:
    """A data URL of `image`. Conversations resend their image every turn, so recent URLs are cached by content.

    NOTE: PNG at compress_level 1 encodes a 1024 x 1024 scene in ~90 ms instead of ~310 ms at the default level
    (measured on this project's CPU box) for ~20 % more bytes; the pixels are the same either way."""
    key = (fmt, image.mode, image.size, hashlib.blake2b(image.tobytes(), digest_size=16).digest())
    if key in _URL_CACHE:
        _URL_CACHE.move_to_end(key)
        return _URL_CACHE[key]
    buffer = io.BytesIO()
    if fmt.upper() == "PNG":
        image.save(buffer, "PNG", compress_level=1)
        mime = "png"
    else:
        buffer.write(image_bytes(image, fmt))
        mime = "jpeg" if fmt.upper() in ("JPG", "JPEG") else fmt.lower()
    url = f"data:image/{mime};base64,{base64.b64encode(buffer.getvalue()).decode()}"
    _URL_CACHE[key] = url
    while len(_URL_CACHE) > _URL_CACHE_SIZE:
        _URL_CACHE.popitem(last=False)
    return url


def to_openai_messages(messages: list[ChatMessage], image_format: str = "PNG") -> list[dict[str, Any]]:
    """Our messages -> chat-completions messages; images (before the text, as the model saw them) as data URLs."""
    converted = []
    for m in messages:
        if not m.images:
            converted.append({"role": m.role, "content": m.text})
            continue
        parts: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": image_url(image, image_format)}}
                                       for image in m.images]
        if m.text:
            parts.append({"type": "text", "text": m.text})
        converted.append({"role": m.role, "content": parts})
    return converted


def sampling_kwargs(params: GenerationParams, overrides: dict[str, Any], max_new_tokens: int,
                    limit: int) -> dict[str, Any]:
    """GenerationParams (over settings overrides) -> `create()` keyword arguments; unset values are not sent."""
    values = {**overrides, **{k: v for k, v in vars(params).items() if v is not None}}
    kwargs: dict[str, Any] = {"max_tokens": max(1, min(params.max_new_tokens or max_new_tokens, limit))}
    if params.do_sample is False:
        values["temperature"] = 0.0
    kwargs.update({wire: values[name] for name, wire in STANDARD_FIELDS.items() if name in values})
    extra = {wire: values[name] for name, wire in EXTENSION_FIELDS.items() if name in values}
    if extra:
        kwargs["extra_body"] = extra
    return kwargs


def _finish(reason: str | None, cancelled: bool) -> str:
    if cancelled:
        return "cancelled"
    return "length" if reason == "length" else "stop"


class OpenAIBackend(ChatBackend):
    def __init__(
        self,
        base_url: str,
        api_key: str = "EMPTY",
        model: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 2,
        max_new_tokens: int = 512,
        max_new_tokens_limit: int = 4096,
        generation_overrides: dict[str, Any] | None = None,
        image_format: str = "PNG",
        max_concurrency: int = 4,
    ):
        self.base_url = base_url
        self.client = openai.OpenAI(base_url=base_url, api_key=api_key, timeout=timeout, max_retries=max_retries)
        self._model = model
        self.max_new_tokens = max_new_tokens
        self.max_new_tokens_limit = max_new_tokens_limit
        self.overrides = dict(generation_overrides or {})
        self.image_format = image_format
        self.max_concurrency = max_concurrency
        # the remote server (vLLM) batches by itself: callers may send this many requests at once
        self.max_concurrent = max(1, max_concurrency)

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenAIBackend:
        # The default --model is the local mini checkpoint's directory: against a server it means "whatever
        # the server serves", so ask it (GET /v1/models) instead of sending a path it never heard of.
        model = None if settings.model == str(DEFAULT_MODEL_DIR) else settings.model
        return cls(
            settings.openai_base_url, settings.openai_api_key.get_secret_value(), model,
            timeout=settings.openai_timeout, max_new_tokens=settings.max_new_tokens,
            max_new_tokens_limit=settings.max_new_tokens_limit, generation_overrides=settings.generation_overrides(),
        )

    @property
    def model_name(self) -> str:
        if self._model is None:
            served = [m.id for m in self._call(self.client.models.list).data]
            if not served:
                raise BackendError(f"the server at {self.base_url} serves no model")
            self._model = next((n for n in PREFERRED_MODEL_NAMES if n in served), served[0])
            log.info("using served model %s from %s", self._model, self.base_url)
        return self._model

    def request(self, messages: list[ChatMessage], params: GenerationParams | None) -> dict[str, Any]:
        """The one request builder for the blocking and the streaming path."""
        return {
            "model": self.model_name,
            "messages": to_openai_messages(messages, self.image_format),
            **sampling_kwargs(params or GenerationParams(), self.overrides, self.max_new_tokens,
                              self.max_new_tokens_limit),
        }

    def _call(self, function, *args, **kwargs):
        try:
            return function(*args, **kwargs)
        except openai.APIError as exc:
            raise self._error(exc) from exc

    def _error(self, exc: openai.APIError) -> BackendError:
        if isinstance(exc, openai.APITimeoutError):
            return BackendError(f"the model server at {self.base_url} did not answer in time ({exc}); raise "
                                "--openai-timeout or check the server's load")
        if isinstance(exc, openai.APIConnectionError):
            return BackendError(f"cannot reach the model server at {self.base_url} ({exc}); start it "
                                "(`python app.py serve` or `vllm serve ...`) or fix --openai-base-url")
        if isinstance(exc, openai.AuthenticationError):
            return BackendError(f"the model server at {self.base_url} refused the API key; set --openai-api-key")
        if isinstance(exc, openai.NotFoundError):
            return BackendError(f"the model server at {self.base_url} does not serve '{self._model}' ({exc}); "
                                "set --model to a name from its /v1/models")
        status = getattr(exc, "status_code", None)
        prefix = f"the model server at {self.base_url} answered {status}" if status else \
            f"the model server at {self.base_url} failed"
        return BackendError(f"{prefix}: {exc.message}")

    # --- generation -----------------------------------------------------------------------------------------------
    def generate(self, messages: list[ChatMessage], params: GenerationParams | None = None) -> Completion:
        response = self._call(self.client.chat.completions.create, **self.request(messages, params))
        choice = response.choices[0]
        usage = response.usage
        return Completion(
            text=choice.message.content or "",
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            finish_reason=_finish(choice.finish_reason, False),
        )

    def generate_batch(self, conversations: list[list[ChatMessage]],
                       params: GenerationParams | None = None) -> list[Completion]:
        """Concurrent requests: a vLLM server batches them itself."""
        if len(conversations) <= 1:
            return [self.generate(messages, params) for messages in conversations]
        self.model_name  # noqa: B018 - resolve once, before the threads
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(conversations))) as pool:
            return list(pool.map(lambda messages: self.generate(messages, params), conversations))

    def stream(
        self, messages: list[ChatMessage], params: GenerationParams | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[StreamChunk]:
        cancel = cancel or threading.Event()
        response = self._call(self.client.chat.completions.create, **self.request(messages, params), stream=True,
                              stream_options={"include_usage": True})
        parts: list[str] = []
        finish, usage = None, None
        try:
            for chunk in response:
                if cancel.is_set():
                    break
                usage = chunk.usage or usage
                for choice in chunk.choices:
                    finish = choice.finish_reason or finish
                    if choice.delta.content:
                        parts.append(choice.delta.content)
                        yield StreamChunk(choice.delta.content)
        except openai.APIError as exc:
            raise self._error(exc) from exc
        finally:
            response.close()  # closing the connection is how a server learns to stop generating
        yield StreamChunk("", Completion(
            text="".join(parts),
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else len(parts),
            finish_reason=_finish(finish, cancel.is_set()),
        ))

    def close(self) -> None:
        self.client.close()
