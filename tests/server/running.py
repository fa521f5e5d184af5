"""Run an ASGI app for real: uvicorn in a daemon thread on a free 127.0.0.1 port (used by server, backend and
agent tests), and small scripted backends for behaviour a random tiny model cannot show (stop strings, a
model that is busy on purpose)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import uvicorn

from model_adapter import ChatBackend, ChatMessage, Completion, GenerationParams, StreamChunk


class RunningServer:
    def __init__(self, app) -> None:
        # proto=IPPROTO_TCP so that asyncio sets TCP_NODELAY on accepted connections, as uvicorn.run does
        # (with proto 0, keep-alive requests stall ~40 ms on Nagle + delayed ACK).
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> RunningServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


class ScriptedBackend(ChatBackend):
    """Streams `pieces`; if `gate` is given, waits for it before the first piece (a busy model)."""

    model_name = "scripted"

    def __init__(self, pieces: list[str], gate: threading.Event | None = None) -> None:
        self.pieces = pieces
        self.gate = gate
        self.started = threading.Event()
        self.seen: list[list[ChatMessage]] = []
        self.cancelled: list[bool] = []

    def stream(self, messages: list[ChatMessage], params: GenerationParams | None = None,
               cancel: threading.Event | None = None) -> Iterator[StreamChunk]:
        cancel = cancel or threading.Event()
        self.seen.append(messages)
        self.started.set()
        if self.gate is not None:
            self.gate.wait(10)
        sent = []
        try:
            for piece in self.pieces:
                if cancel.is_set():
                    break
                sent.append(piece)
                yield StreamChunk(piece)
                time.sleep(0.01)
        finally:
            self.cancelled.append(cancel.is_set())
        reason = "cancelled" if cancel.is_set() else "stop"
        yield StreamChunk("", Completion("".join(sent), 7, len(sent), reason))
