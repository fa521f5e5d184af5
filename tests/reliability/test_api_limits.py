"""No cheap denial of service on the API (issue 15, item 2).

Prompt-token and body limits are checked before the request reaches the model; a client that disconnects has
its request cancelled, whether it streams or waits for the whole answer, and whether it was running or queued.
Bad inputs are table-driven: each gets its HTTP status and OpenAI error code, and the server stays usable."""

from __future__ import annotations

import base64
import io
import threading
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from model_adapter import ChatBackend, Completion, StreamChunk
from server import ServerConfig, create_app
from settings import Settings
from tests.server.running import RunningServer


class EndlessBackend(ChatBackend):
    """Answers 'x' every 10 ms until cancelled (or max_tokens); counts tokens as characters; remembers what it was asked."""

    model_name = "endless"

    def __init__(self) -> None:
        self.running = 0
        self.calls = 0
        self.cancelled_at: list[float] = []
        self.lock = threading.Lock()

    def count_prompt_tokens(self, messages) -> int:
        return sum(len(m.text) for m in messages)

    def stream(self, messages, params=None, cancel=None):
        cancel = cancel or threading.Event()
        with self.lock:
            self.running += 1
            self.calls += 1
        produced, budget = 0, (params.max_new_tokens if params and params.max_new_tokens else None) or 6000
        try:
            while produced < budget and not cancel.is_set():  # a minute at most
                yield StreamChunk("x")
                produced += 1
                time.sleep(0.01)
            yield StreamChunk("", Completion("", 1, 1, "cancelled" if cancel.is_set() else "stop"))
        finally:  # cancelled by the event, or closed by the server (GeneratorExit at the yield)
            if produced < budget:
                self.cancelled_at.append(time.monotonic())
            with self.lock:
                self.running -= 1

@pytest.fixture
def server(tmp_path):
    backend = EndlessBackend()
    config = ServerConfig(max_prompt_tokens=1000, max_request_mb=1, max_waiting=4)
    with RunningServer(create_app(backend, Settings(data_dir=tmp_path), config)) as running:
        yield running, backend


def body(text: str = "hi", **extra) -> dict:
    return {"model": "remoteglm", "messages": [{"role": "user", "content": text}], **extra}


def png_data_url(width: int, height: int) -> str:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((height, width, 3), np.uint8)).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


BAD_INPUTS = [  # (name, request body or raw bytes, status, error code)
    ("prompt over the token limit", body("字" * 1001), 400, "context_length_exceeded"),
    ("100 000-character prompt", body("a" * 100_000), 400, "context_length_exceeded"),
    ("tokens summed over messages", {"model": "remoteglm", "messages": [
        {"role": "user", "content": "a" * 600}, {"role": "assistant", "content": "b" * 600}]},
     400, "context_length_exceeded"),
    ("text parts count too", {"model": "remoteglm", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "a" * 1200}]}]}, 400, "context_length_exceeded"),
    ("body over the size limit", body("a" * 2_000_000), 413, "request_too_large"),
    ("not JSON", b"{not json", 422, "invalid_request"),
    ("no messages", {"model": "remoteglm"}, 422, "invalid_request"),
    ("unknown model", {**body(), "model": "gpt-x"}, 404, "model_not_found"),
    ("image not base64", {"model": "remoteglm", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}]}]}, 400, "invalid_image"),
    ("file URL", {"model": "remoteglm", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]}]}, 400, "invalid_image"),
    ("negative max_tokens", body(max_tokens=-1), 422, "invalid_request"),
]


@pytest.mark.parametrize("name,payload,status,code", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_inputs_are_refused_before_the_model_runs(server, name, payload, status, code):
    running, backend = server
    kwargs = {"content": payload} if isinstance(payload, bytes) else {"json": payload}
    started = time.perf_counter()
    response = httpx.post(running.url + "/chat/completions", timeout=30,
                          headers={"Content-Type": "application/json"}, **kwargs)
    assert (response.status_code, response.json()["error"]["code"]) == (status, code), response.text[:300]
    assert time.perf_counter() - started < 5
    assert backend.calls == 0  # refused before any generation work
    ok = httpx.post(running.url + "/chat/completions", json=body(max_tokens=3, stream=True), timeout=30)
    assert ok.status_code == 200  # the server is still usable


def wait_idle(running, backend, within: float = 5.0) -> float:
    """Seconds until the backend stopped and the server admits nobody; fails past `within`."""
    started = time.monotonic()
    while time.monotonic() - started < within:
        health = httpx.get(f"http://127.0.0.1:{running.port}/health", timeout=5).json()
        if backend.running == 0 and health["in_progress"] == 0:
            return time.monotonic() - started
        time.sleep(0.05)
    pytest.fail(f"still busy {within} s after the client left: running={backend.running}, {health}")


def test_non_streaming_client_that_gives_up_cancels_generation(server):
    running, backend = server
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(running.url + "/chat/completions", json=body(), timeout=1.0)
    wait_idle(running, backend)
    assert backend.cancelled_at, "generation ran on after the client left"


def test_streaming_client_that_leaves_cancels_generation(server):
    running, backend = server
    with httpx.stream("POST", running.url + "/chat/completions", json=body(stream=True), timeout=10) as response:
        for line in response.iter_lines():
            if '"x"' in line:
                break
    wait_idle(running, backend)
    assert backend.cancelled_at


def test_queued_requests_of_clients_that_left_free_their_places(server):
    running, backend = server
    threads = [threading.Thread(target=lambda: pytest.raises(httpx.ReadTimeout, httpx.post,
                                                             running.url + "/chat/completions", json=body(),
                                                             timeout=1.0)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wait_idle(running, backend)
    assert backend.calls <= 4
