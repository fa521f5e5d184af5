"""The FastAPI application: routes, API-key check, request-size limit and OpenAI-shaped error bodies.

    app = create_app(load_backend(settings), settings)      # any ChatBackend; run it with uvicorn

Every error leaves as `{"error": {"message", "type", "param", "code"}}` with its HTTP status: 400 unusable image,
401 missing or wrong API key, 404 unknown model or route, 413 request or image too large, 422 invalid request,
503 overloaded. The key check and the size limit run in one ASGI middleware (`Guard`) before any body is read.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable
from typing import TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from model_adapter import ChatBackend
from server.protocol import ChatCompletionRequest, ChatCompletionResponse, ErrorInfo, ErrorResponse, ModelList
from server.serving import APIError, ChatServing, ServerConfig
from settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")
CLIENT_CLOSED = 499  # nginx's status for "the client closed the request"; nobody reads it, logs show it


class ClientGone(Exception):
    """The client disconnected before its non-streaming answer was ready."""


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it as soon as the client disconnects (raises ClientGone then).

    Starlette stops a streaming response when its client leaves, but a blocking handler would run to the end
    with nobody waiting: here the request's receive channel is watched for `http.disconnect` meanwhile."""
    task = asyncio.ensure_future(work)
    gone = asyncio.Event()

    async def watch() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                gone.set()
                task.cancel()
                return

    watcher = asyncio.create_task(watch())
    try:
        return await task
    except asyncio.CancelledError:
        if gone.is_set():
            raise ClientGone() from None
        raise
    finally:
        watcher.cancel()

# HTTP errors raised by the framework itself (unknown route, wrong method, body too large) -> OpenAI type / code.
HTTP_ERRORS = {
    404: ("invalid_request_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    413: ("invalid_request_error", "request_too_large"),
}


def error_response(status: int, message: str, type: str, code: str | None = None, param: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    body = ErrorResponse(error=ErrorInfo(message=message, type=type, param=param, code=code))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


# Routes behind the API key besides /v1/: the schema and its viewers describe the whole API.
PROTECTED_PATHS = ("/docs", "/redoc", "/openapi.json")


class Guard:
    """API key and body size, checked for /v1/ routes (and the API docs) before the application reads anything."""

    def __init__(self, app: ASGIApp, api_key: str | None, max_body: int):
        self.app = app
        self.expected = f"Bearer {api_key}".encode() if api_key else None
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path.startswith("/v1/") or path.startswith(PROTECTED_PATHS)):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if self.expected is not None and not hmac.compare_digest(headers.get(b"authorization", b""), self.expected):
            response = error_response(401, "invalid or missing API key: send the header 'Authorization: Bearer "
                                           "<key>' with the key the server was started with",
                                      "authentication_error", "invalid_api_key")
            await response(scope, receive, send)
            return
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_body:
            await self._too_large(int(declared))(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:  # chunked uploads declare no length: count as they arrive
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_body:
                raise HTTPException(413, self._message(received))
            return message

        await self.app(scope, limited, send)

    def _message(self, size: int) -> str:
        return f"request too large: over {size:,} bytes, limit {self.max_body:,} bytes"

    def _too_large(self, size: int) -> JSONResponse:
        return error_response(413, self._message(size), *HTTP_ERRORS[413])


def create_app(backend: ChatBackend, settings: Settings, config: ServerConfig | None = None) -> FastAPI:
    """An OpenAI-compatible chat-completions app answering with `backend`."""
    serving = ChatServing(backend, settings, config)
    app = FastAPI(title="RemoteGLM", summary="OpenAI-compatible chat completions for remote-sensing images")
    app.state.serving = serving
    api_key = settings.api_key.get_secret_value() if settings.api_key else None
    app.add_middleware(Guard, api_key=api_key, max_body=serving.max_request_bytes)

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.body.model_dump(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        loc = [str(part) for part in first.get("loc", ()) if part != "body"]
        message = "; ".join(f"{'.'.join(str(p) for p in e['loc'] if p != 'body') or 'body'}: {e['msg']}"
                            for e in errors[:5])
        return error_response(422, message, "invalid_request_error", "invalid_request", ".".join(loc) or None)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        type_, code = HTTP_ERRORS.get(exc.status_code, ("invalid_request_error" if exc.status_code < 500
                                                        else "server_error", None))
        return error_response(exc.status_code, str(exc.detail), type_, code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("request failed")
        return error_response(500, f"internal error: {exc}", "server_error")

    @app.get("/health")
    async def health() -> dict[str, object]:
        return {"status": "ok", "model": serving.model_name, "in_progress": serving.gate.admitted}

    @app.get("/v1/models", response_model=ModelList)
    async def models() -> ModelList:
        return serving.models()

    @app.post("/v1/chat/completions", response_model=ChatCompletionResponse,
              responses={status: {"model": ErrorResponse} for status in (400, 401, 404, 413, 422, 503)})
    async def chat_completions(request: ChatCompletionRequest, http_request: Request):
        ticket, messages = await serving.prepare(request)
        try:
            if request.stream:
                # Headers go out with the first piece of the answer: a full queue is still a 503. The background
                # task stops generation and frees the ticket even when the client left before the stream started.
                answer = await unless_disconnected(http_request, serving.open_stream(request, ticket, messages))
                return StreamingResponse(answer.events(), media_type="text/event-stream",
                                         background=BackgroundTask(answer.close))
            return await unless_disconnected(http_request, serving.complete(request, ticket, messages))
        except ClientGone:
            log.info("client disconnected: generation cancelled")
            return error_response(CLIENT_CLOSED, "client disconnected", "invalid_request_error", "client_closed")

    return app
