"""Chat-completion handlers: OpenAI request -> backend conversation -> response or SSE stream.

The boundary: this module turns protocol types (`server/protocol.py`) into `model_adapter` messages and back, and
owns the serving policy (API limits, admission to the model). HTTP wiring (routes, auth, body size, error
rendering) is in `server/app.py`. One generation path (`ChatServing._run`) serves both the blocking and the
streaming answer. Admission (`ModelGate`): at most `max_concurrent` requests are in progress (answering or
waiting), the rest are refused at once with 503 and `Retry-After`, so that overload never piles up. A batching
backend (`ChatBackend.max_concurrent` > 1: the transformers backend's scheduler) gets every admitted request at once
and answers them together; a backend that answers one request at a time gets them one after another.
"""

from __future__ import annotations

import asyncio
import binascii
import logging
import math
import threading
import time
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import anyio
from PIL import Image
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from imagery import ImageError, ImageTooLarge, load_image, probe_checked
from imagery.fetch import URLRefused, fetch_image_bytes
from model_adapter import BackendBusy, ChatBackend, ChatMessage, Completion, GenerationParams
from server.protocol import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    Choice,
    ChunkChoice,
    Delta,
    ErrorInfo,
    ErrorResponse,
    ModelCard,
    ModelList,
    ResponseMessage,
    Usage,
    completion_id,
)
from settings import Settings

log = logging.getLogger(__name__)

CHARS_PER_TOKEN_BOUND = 8  # no tokenizer packs more characters than this into one token on real text
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


class ServerConfig(BaseSettings):
    """API-server-only limits (environment REMOTEGLM_*, or flags of `python -m server`)."""

    model_config = SettingsConfigDict(env_prefix="REMOTEGLM_", use_attribute_docstrings=True, extra="ignore")

    served_model_name: str = "remoteglm"
    """Model id that /v1/models lists and responses carry (the README's examples use it). Requests may also name
    the model directory or its folder name."""

    max_waiting: int = Field(8, ge=0)
    """Requests that may wait beyond those the model answers at once (its batch: the transformers backend's
    max_batch_size, 1 for other backends); beyond that the server answers 503 with Retry-After at once."""

    max_concurrent: int | None = Field(None, ge=1)
    """Most requests in progress at once (answering plus waiting); beyond that 503 with Retry-After. Unset: the
    backend's batch size plus max_waiting (16 + 8 = 24 on the transformers backend, 1 + 8 on others)."""

    max_request_mb: float | None = Field(None, gt=0)
    """Largest request body in megabytes. Unset: max_upload_mb plus base64 overhead."""

    max_input_pixels: int = Field(100_000_000, ge=1)
    """Largest image (width x height, as declared by its header) a request may send; larger ones get 413.
    Accepted images are still downscaled to max_image_pixels before the model sees them."""

    max_images: int = Field(8, ge=1)
    """Most images in one request."""

    max_prompt_tokens: int = Field(8192, ge=1)
    """Longest prompt (all messages, in the model's text tokens) a request may send; longer ones get 400
    context_length_exceeded before they reach the model. The text is first checked at 8 characters per token,
    so a huge body is refused without tokenizing it."""

    allowed_image_dir: Path | None = None
    """file:// image URLs are read only under this directory. Unset: file URLs are refused."""

    allow_remote_images: bool = False
    """Fetch http(s) image URLs. Off by default: a public server would fetch whatever a client names."""


class APIError(Exception):
    """An error the client must see as an OpenAI-shaped body with this HTTP status."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.body = ErrorResponse(error=ErrorInfo(message=message, type=type, param=param, code=code))
        self.headers = headers


def bad_image(message: str, param: str | None = None) -> APIError:
    return APIError(400, message, code="invalid_image", param=param)


# --- admission ------------------------------------------------------------------------------------------------------
def overloaded(message: str, retry_after: float = 1.0) -> APIError:
    """503 server_overloaded with Retry-After (whole seconds, at least 1: the openai client waits that long)."""
    return APIError(503, message, type="server_error", code="server_overloaded",
                    headers={"Retry-After": str(max(1, math.ceil(retry_after)))})


class ModelGate:
    """At most `limit` requests in progress; `admit` refuses the rest. With `serial`, admitted requests reach the
    model one at a time (a backend that cannot batch); otherwise all at once (the backend batches and queues)."""

    def __init__(self, limit: int, serial: bool):
        self.limit = limit
        self.admitted = 0  # answering + waiting; touched on the event loop only
        self.lock = asyncio.Lock() if serial else None

    def admit(self) -> Ticket:
        if self.admitted >= self.limit:
            raise overloaded(f"server overloaded: {self.admitted} requests in progress or waiting (limit "
                             f"{self.limit}), try again shortly")
        self.admitted += 1
        return Ticket(self)


class Ticket:
    def __init__(self, gate: ModelGate):
        self.gate = gate
        self.released = False

    def release(self) -> None:
        """Idempotent: called when the answer ends, and again by the streaming response's background task."""
        if not self.released:
            self.released = True
            self.gate.admitted -= 1

    @asynccontextmanager
    async def model(self) -> AsyncIterator[None]:
        try:
            if self.gate.lock is None:
                yield
            else:
                async with self.gate.lock:
                    yield
        finally:
            self.release()


# --- stop strings ---------------------------------------------------------------------------------------------------
class StopCutter:
    """Cut a text stream before the first stop string, holding back a tail that could still become one."""

    def __init__(self, stops: list[str] | None):
        self.stops = stops or []
        self.hold = max((len(s) - 1 for s in self.stops), default=0)
        self.pending = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        self.pending += text
        cut = min((i for i in (self.pending.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            ready, self.pending, self.stopped = self.pending[:cut], "", True
            return ready
        ready = self.pending[: len(self.pending) - self.hold]
        self.pending = self.pending[len(ready):]
        return ready

    def flush(self) -> str:
        tail, self.pending = self.pending, ""
        return tail


@dataclass
class Finished:
    completion: Completion
    finish_reason: str  # 'stop' | 'length'

    @property
    def usage(self) -> Usage:
        c = self.completion
        return Usage(prompt_tokens=c.prompt_tokens, completion_tokens=c.completion_tokens,
                     total_tokens=c.prompt_tokens + c.completion_tokens)


def sse(payload: str) -> str:
    return f"data: {payload}\n\n"


# --- handlers -------------------------------------------------------------------------------------------------------
class ChatServing:
    def __init__(self, backend: ChatBackend, settings: Settings, config: ServerConfig | None = None):
        self.backend = backend
        self.settings = settings
        self.config = config or ServerConfig()
        self.model_name = self.config.served_model_name or backend.model_name
        self.aliases = {self.model_name, backend.model_name, settings.model, Path(settings.model).name, "remoteglm"}
        batch = max(1, backend.max_concurrent)
        self.gate = ModelGate(self.config.max_concurrent or batch + self.config.max_waiting, serial=batch == 1)

    @property
    def max_request_bytes(self) -> int:
        mb = self.config.max_request_mb or self.settings.max_upload_mb * 4 / 3 + 1  # base64 grows data by 4/3
        return int(mb * 1024 * 1024)

    def models(self) -> ModelList:
        return ModelList(data=[ModelCard(id=self.model_name)])

    # --- request -> backend ------------------------------------------------------------------------------------
    def check_model(self, request: ChatCompletionRequest) -> None:
        if request.model not in self.aliases:
            raise APIError(404, f"the model '{request.model}' does not exist; this server serves "
                                f"'{self.model_name}' (see GET /v1/models)", code="model_not_found", param="model")

    def to_messages(self, request: ChatCompletionRequest) -> list[ChatMessage]:
        """Protocol messages -> backend messages, images decoded, checked and downscaled. Raises APIError."""
        count = sum(1 for m in request.messages if isinstance(m.content, list)
                    for p in m.content if p.type == "image_url")
        if count > self.config.max_images:
            raise APIError(400, f"too many images: {count}, at most {self.config.max_images} per request",
                           code="too_many_images", param="messages")
        chars = sum(len(m.content) if isinstance(m.content, str) else
                    sum(len(p.text) for p in m.content if p.type == "text") if m.content else 0
                    for m in request.messages)
        if chars > CHARS_PER_TOKEN_BOUND * self.config.max_prompt_tokens:
            raise self._too_long(f"{chars:,} characters")
        converted = []
        for i, message in enumerate(request.messages):
            if message.content is None or isinstance(message.content, str):
                converted.append(ChatMessage(ROLES[message.role], message.content or ""))
                continue
            texts, images = [], []
            for j, part in enumerate(message.content):
                if part.type == "text":
                    texts.append(part.text)
                else:
                    images.append(self.load_image(part.image_url.url, f"messages.{i}.content.{j}.image_url"))
            converted.append(ChatMessage(ROLES[message.role], "\n".join(texts), images))
        tokens = self.backend.count_prompt_tokens(converted)
        if tokens is not None and tokens > self.config.max_prompt_tokens:
            raise self._too_long(f"{tokens:,} tokens")
        return converted

    def _too_long(self, size: str) -> APIError:
        return APIError(400, f"the prompt is too long: {size}, this server accepts at most "
                             f"{self.config.max_prompt_tokens:,} prompt tokens; shorten the messages",
                        code="context_length_exceeded", param="messages")

    def load_image(self, url: str, param: str) -> Image.Image:
        data = self.image_bytes(url, param)
        limit = int(self.settings.max_upload_mb * 1024 * 1024)
        if len(data) > limit:
            raise APIError(413, f"image too large: {len(data)} bytes, limit {limit}", code="image_too_large",
                           param=param)
        self.check_pixels(data, param)
        try:
            return load_image(data, self.settings.max_image_pixels)
        except ImageTooLarge as exc:  # over the readers' own limit (max_input_pixels set above it)
            raise APIError(413, f"image too large: {exc}", code="image_too_large", param=param) from exc
        except ImageError as exc:
            raise bad_image(str(exc), param) from exc

    def image_bytes(self, url: str, param: str) -> bytes:
        """Data URLs (base64); file:// URLs only under allowed_image_dir; http(s) only with allow_remote_images."""
        allowed = self.config.allowed_image_dir
        if urlparse(url).scheme == "file" and allowed is None:
            raise bad_image("file:// image URLs are disabled on this server; send a data URL, or start the server "
                            "with REMOTEGLM_ALLOWED_IMAGE_DIR / --allowed-image-dir", param)
        try:
            return fetch_image_bytes(url, allowed, paths=False, remote=self.config.allow_remote_images,
                                     strict_data=True)
        except (URLRefused, FileNotFoundError) as exc:  # outside allowed_image_dir: refused before any file access
            raise bad_image(str(exc), param) from exc
        except binascii.Error as exc:
            raise bad_image(f"the image data URL is not valid base64: {exc}", param) from exc
        except Exception as exc:  # noqa: BLE001 - network and file errors all mean "cannot get this image"
            raise bad_image(f"cannot read the image at {url[:200]}: {exc}", param) from exc

    def check_pixels(self, data: bytes, param: str) -> None:
        """Refuse images over max_input_pixels, or whose width x height x bands x bytes per sample is over that
        many pixels' decode budget, from their header alone (`imagery.probe`, GDAL-only TIFFs included): 413."""
        try:
            probe_checked(data, self.config.max_input_pixels)
        except ImageTooLarge as exc:
            raise APIError(413, f"image too large: {exc}", code="image_too_large", param=param) from exc
        except ImageError as exc:
            raise bad_image(str(exc), param) from exc

    def params(self, request: ChatCompletionRequest) -> GenerationParams:
        return GenerationParams(
            max_new_tokens=request.max_completion_tokens or request.max_tokens,
            temperature=request.temperature, top_p=request.top_p, top_k=request.top_k,
            repetition_penalty=request.repetition_penalty, seed=request.seed,
            do_sample=False if request.temperature == 0 else None,
        )

    async def prepare(self, request: ChatCompletionRequest) -> tuple[Ticket, list[ChatMessage]]:
        """Admit the request (or 503) and decode its images off the event loop (or 400 / 413)."""
        self.check_model(request)
        ticket = self.gate.admit()
        try:
            messages = await anyio.to_thread.run_sync(self.to_messages, request)
        except BaseException:
            ticket.release()
            raise
        return ticket, messages

    # --- generation --------------------------------------------------------------------------------------------
    async def _run(self, ticket: Ticket, messages: list[ChatMessage], request: ChatCompletionRequest
                   ) -> AsyncIterator[str | Finished]:
        """Wait for the model, then yield answer text pieces and finally `Finished`."""
        cancel = threading.Event()
        cutter = StopCutter(request.stop)
        async with ticket.model():
            iterator = self.backend.stream(messages, self.params(request), cancel)
            pending: asyncio.Future | None = None

            async def next_chunk():
                # shielded: a cancelled request (client gone) must not abandon a thread still inside the iterator,
                # which could then be neither closed nor resumed
                nonlocal pending
                pending = asyncio.ensure_future(anyio.to_thread.run_sync(next, iterator, None))
                chunk = await asyncio.shield(pending)
                pending = None
                return chunk

            try:
                completion = None
                while (chunk := await next_chunk()) is not None:
                    completion = chunk.completion or completion
                    if cutter.stopped:
                        continue  # wait for the backend's final chunk after asking it to stop
                    ready = cutter.feed(chunk.text)
                    if cutter.stopped:
                        cancel.set()
                    if ready:
                        yield ready
                if tail := cutter.flush():
                    yield tail
                if completion is None:
                    raise RuntimeError("the backend ended without a completion")
                yield Finished(completion, "length" if completion.finish_reason == "length" else "stop")
            finally:
                cancel.set()  # a client that went away stops generation at once
                with anyio.CancelScope(shield=True):
                    if pending is not None:
                        await pending  # the backend's next step, cut short by `cancel`
                    await anyio.to_thread.run_sync(iterator.close)

    async def complete(self, request: ChatCompletionRequest, ticket: Ticket,
                       messages: list[ChatMessage]) -> ChatCompletionResponse:
        parts, finished = [], None
        try:
            async with aclosing(self._run(ticket, messages, request)) as items:
                async for item in items:
                    if isinstance(item, Finished):
                        finished = item
                    else:
                        parts.append(item)
        except Exception as exc:  # noqa: BLE001 - rendered as an error body; the connection stays usable
            raise as_api_error(exc) from exc
        finally:
            ticket.release()
        assert finished is not None
        return ChatCompletionResponse(
            model=self.model_name, usage=finished.usage,
            choices=[Choice(message=ResponseMessage(content="".join(parts)), finish_reason=finished.finish_reason)],
        )

    async def open_stream(self, request: ChatCompletionRequest, ticket: Ticket,
                          messages: list[ChatMessage]) -> Answer:
        """Start the answer and wait for its first piece, so that a refusal (the backend's queue is full: 503,
        or a failure: 500) is still an HTTP status, not an event inside a stream that already said 200."""
        items = self._run(ticket, messages, request)
        try:
            first = await anext(items)
        except BaseException as exc:
            with anyio.CancelScope(shield=True):
                await items.aclose()
            ticket.release()
            if isinstance(exc, Exception):
                raise as_api_error(exc) from exc
            raise
        return Answer(self, request, ticket, items, first)


class Answer:
    """A started streaming answer: `events()` renders it as server-sent events, `close()` (the response's
    background task, run even when the client left before the stream began) stops generation and frees the
    ticket."""

    def __init__(self, serving: ChatServing, request: ChatCompletionRequest, ticket: Ticket,
                 items: AsyncIterator[str | Finished], first: str | Finished):
        self.serving, self.request, self.ticket, self.items, self.first = serving, request, ticket, items, first

    async def events(self) -> AsyncIterator[str]:
        """A role chunk, content chunks, a finish chunk, optionally usage, then [DONE]."""
        request, model = self.request, self.serving.model_name
        rid, created = completion_id(), int(time.time())

        def chunk(delta: Delta, finish: str | None = None) -> str:
            body = ChatCompletionChunk(id=rid, created=created, model=model,
                                       choices=[ChunkChoice(delta=delta, finish_reason=finish)])
            return sse(body.model_dump_json(exclude_none=True))

        async def items() -> AsyncIterator[str | Finished]:
            yield self.first
            async for item in self.items:
                yield item

        try:
            yield chunk(Delta(role="assistant", content=""))
            async with aclosing(self.items), aclosing(items()) as all_items:
                async for item in all_items:
                    if isinstance(item, Finished):
                        yield chunk(Delta(), item.finish_reason)
                        if request.stream_options and request.stream_options.include_usage:
                            usage = ChatCompletionChunk(id=rid, created=created, model=model,
                                                        choices=[], usage=item.usage)
                            yield sse(usage.model_dump_json())
                    else:
                        yield chunk(Delta(content=item))
        except Exception as exc:  # noqa: BLE001 - headers are sent: the error can only travel in the stream
            yield sse(as_api_error(exc).body.model_dump_json())
        finally:
            self.ticket.release()
        yield "data: [DONE]\n\n"

    async def close(self) -> None:  # a coroutine, so that Starlette runs it on the event loop, not in a thread
        with anyio.CancelScope(shield=True):
            await self.items.aclose()  # a no-op when the stream ran to its end
        self.ticket.release()


def as_api_error(exc: Exception) -> APIError:
    """What a failure while answering looks like to the client: its own APIError, 503 for a full backend queue
    (BackendBusy, with the backend's Retry-After), else 500 (logged with its traceback)."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, BackendBusy):
        return overloaded(str(exc), exc.retry_after)
    log.error("generation failed", exc_info=exc)
    return APIError(500, f"generation failed: {exc}", type="server_error")
