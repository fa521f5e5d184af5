"""The API server over the batching transformers backend (issue 14 speed, issue 15 item 7 overload), for real.

20 concurrent clients all reach the model together and each gets its one-by-one greedy answer; past the server's
bound a request gets 503 `server_overloaded` with Retry-After and nothing else fails; a full backend queue
(`BackendBusy`) is a 503 status too, for a streaming request before any SSE header."""

from __future__ import annotations

import threading
import time

import httpx
import openai
import pytest
from openai import OpenAI

from model_adapter import load_backend
from server import create_app
from server.serving import ServerConfig
from tests.server.conftest import data_url
from tests.server.running import RunningServer

QUESTIONS = ["这张遥感图像展现了什么场景？", "图中有多少架飞机？", "Describe the image.", "有没有道路？", "你好"]


class Held:
    """Holds the scheduler's next batch until `release()`: requests sent meanwhile provably wait together."""

    def __init__(self, backend):
        self.backend, self.opened = backend, threading.Event()
        self.run = backend.scheduler.run_batch
        backend.scheduler.run_batch = self._held

    def _held(self, requests):
        self.opened.wait(60)
        self.run(requests)

    def release(self) -> None:
        self.opened.set()


def wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def in_progress(running) -> int:
    return httpx.get(f"http://127.0.0.1:{running.port}/health").json()["in_progress"]


def asks(airplane_jpg, harbor_jpg, n: int) -> list[dict]:
    """n different requests: images or none, different questions (prompt lengths) and token budgets."""
    out = []
    for i in range(n):
        content = [{"type": "text", "text": QUESTIONS[i % len(QUESTIONS)]}]
        if i % 3 != 2:
            content.insert(0, {"type": "image_url", "image_url": {"url": data_url((airplane_jpg, harbor_jpg)[i % 2])}})
        out.append(dict(model="remoteglm", messages=[{"role": "user", "content": content}], max_tokens=3 + i % 6,
                        temperature=0))
    return out


def answer(client: OpenAI, ask: dict, stream: bool) -> str:
    if not stream:
        return client.chat.completions.create(**ask).choices[0].message.content
    return "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(**ask, stream=True)
                   if c.choices)


def send_held(backend, client: OpenAI, requests: list[dict]) -> tuple[Held, dict[int, str], list[threading.Thread]]:
    """Hold the backend's next batch, then send every request from its own thread (odd ones streaming): the
    answers land in the dict by index once `held.release()` lets the batch run."""
    held = Held(backend)
    results: dict[int, str] = {}
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, answer(client, requests[i], i % 2)))
               for i in range(len(requests))]
    for t in threads:
        t.start()
    return held, results, threads


@pytest.fixture
def backend(tiny_glm4v_dir):
    backend = load_backend(model=str(tiny_glm4v_dir), device="cpu")  # max_batch_size 16, max_queue 32
    yield backend
    backend.close()


def test_twenty_concurrent_clients_are_all_answered_together_with_their_one_by_one_answers(
        backend, server_settings, airplane_jpg, harbor_jpg):
    requests = asks(airplane_jpg, harbor_jpg, 20)
    with RunningServer(create_app(backend, server_settings)) as running:
        client = OpenAI(base_url=running.url, api_key="EMPTY", max_retries=0)
        expected = [answer(client, ask, stream=False) for ask in requests]  # one by one
        held = Held(backend)
        results: dict[int, str] = {}
        errors: list[Exception] = []

        def run(i: int) -> None:
            try:
                results[i] = answer(client, requests[i], stream=i % 2 == 0)
            except Exception as exc:  # noqa: BLE001 - asserted below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(20)]
        batches = backend.scheduler.batches
        for t in threads:
            t.start()
        # all 20 admitted at once (the default bound is 16 + 8) and inside the backend: the first batch held,
        # the others in its queue, waiting together for the next batch
        wait_for(lambda: backend.scheduler.running + backend.scheduler.waiting == 20 and in_progress(running) == 20)
        held.release()
        for t in threads:
            t.join(120)
        assert not errors
        assert [results[i] for i in range(20)] == expected
        assert backend.scheduler.batches - batches <= 3  # shared batches (16 at most each), not 20 one-row runs
        assert in_progress(running) == 0


def test_past_the_bound_is_503_with_retry_after_and_nothing_else_fails(backend, server_settings, airplane_jpg,
                                                                         harbor_jpg):
    requests = asks(airplane_jpg, harbor_jpg, 4)
    config = ServerConfig(max_concurrent=4)
    with RunningServer(create_app(backend, server_settings, config)) as running:
        client = OpenAI(base_url=running.url, api_key="EMPTY", max_retries=0)
        expected = [answer(client, ask, stream=False) for ask in requests]
        held, results, threads = send_held(backend, client, requests)
        wait_for(lambda: in_progress(running) == 4)
        for stream in (False, True):
            with pytest.raises(openai.InternalServerError) as caught:
                answer(client, requests[0], stream)
            response = caught.value.response
            assert response.status_code == 503 and response.headers["retry-after"] == "1"
            assert response.json()["error"]["code"] == "server_overloaded"
        held.release()
        for t in threads:
            t.join(120)
        assert [results.get(i) for i in range(4)] == expected  # the admitted ones are all answered
        assert answer(client, requests[0], True) == expected[0]  # room again
        assert in_progress(running) == 0


def test_a_full_backend_queue_is_503_before_any_stream_header(tiny_glm4v_dir, server_settings, airplane_jpg,
                                                              harbor_jpg):
    backend = load_backend(model=str(tiny_glm4v_dir), device="cpu", max_batch_size=2, max_queue=0)
    requests = asks(airplane_jpg, harbor_jpg, 2)
    # the server admits more than the backend holds: the backend's own refusal must reach the client as a 503
    with RunningServer(create_app(backend, server_settings, ServerConfig(max_concurrent=8))) as running:
        client = OpenAI(base_url=running.url, api_key="EMPTY", max_retries=0)
        expected = answer(client, requests[0], stream=False)
        held = Held(backend)
        first: list[str] = []
        thread = threading.Thread(target=lambda: first.append(answer(client, requests[0], stream=True)))
        thread.start()
        wait_for(lambda: backend.scheduler.running == 1)
        body = {**requests[1], "stream": True}
        response = httpx.post(f"{running.url}/chat/completions", json=body, timeout=30)
        assert response.status_code == 503 and not response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["retry-after"] == "1"
        error = response.json()["error"]
        assert error["code"] == "server_overloaded" and "busy" in error["message"]
        with pytest.raises(openai.InternalServerError) as caught:
            answer(client, requests[1], stream=False)
        assert caught.value.response.status_code == 503
        held.release()
        thread.join(120)
        assert first == [expected]  # the request that was taken is answered in full
        assert in_progress(running) == 0
        assert answer(client, requests[0], stream=True) == expected
    backend.close()


def test_a_server_in_front_of_an_openai_compatible_backend_forwards_concurrent_requests(
        backend, server_settings, airplane_jpg, harbor_jpg):
    """RemoteGLM's API over the `openai` backend (a vLLM-style remote server, here another RemoteGLM API on the tiny
    GLM-4V): the remote server batches, so requests are forwarded together, up to the backend's max_concurrency."""
    from model_adapter.openai_compat import OpenAIBackend

    requests = asks(airplane_jpg, harbor_jpg, 3)
    with RunningServer(create_app(backend, server_settings)) as remote:
        proxy_backend = OpenAIBackend(remote.url, model="remoteglm", max_concurrency=3)
        assert proxy_backend.max_concurrent == 3
        with RunningServer(create_app(proxy_backend, server_settings)) as front:
            client = OpenAI(base_url=front.url, api_key="EMPTY", max_retries=0)
            expected = [answer(client, ask, stream=False) for ask in requests]
            held, results, threads = send_held(backend, client, requests)
            wait_for(lambda: in_progress(remote) == 3)  # all three reached the remote model at once
            held.release()
            for t in threads:
                t.join(60)
            assert [results[i] for i in range(3)] == expected
