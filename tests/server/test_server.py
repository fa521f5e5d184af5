"""The API server, run for real on a tiny GLM-4V, driven by the official `openai` client and `ChatOpenAI`."""

from __future__ import annotations

import json
import threading
import time

import httpx
import openai
import pytest
from langchain_core.messages import HumanMessage
from langchain_openai import ChatOpenAI
from openai import OpenAI
from pydantic import SecretStr

from server import create_app
from server.serving import ServerConfig, StopCutter
from tests.server.conftest import data_url
from tests.server.running import RunningServer, ScriptedBackend

QUESTION = "这张遥感图像展现了什么场景？"


def image_message(image: bytes) -> list[dict]:
    return [{"role": "user", "content": [{"type": "text", "text": QUESTION},
                                         {"type": "image_url", "image_url": {"url": data_url(image)}}]}]


@pytest.fixture(scope="module")
def client(server) -> OpenAI:
    return OpenAI(base_url=server.url, api_key="EMPTY", max_retries=0)


def test_models_lists_the_served_model(client, served_name):
    assert [m.id for m in client.models.list().data] == [served_name]


def test_openai_client_answers_an_image_question_with_usage(client, served_name, airplane_jpg):
    response = client.chat.completions.create(model=served_name, messages=image_message(airplane_jpg),
                                              max_tokens=6, temperature=0)
    assert response.object == "chat.completion" and response.model == served_name
    choice = response.choices[0]
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    assert 1 <= response.usage.completion_tokens <= 6
    assert response.usage.prompt_tokens > 5  # question plus image tokens
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens


def test_streaming_equals_blocking_under_greedy_decoding(client, served_name, airplane_jpg):
    kwargs = dict(model=served_name, messages=image_message(airplane_jpg), max_tokens=8, temperature=0)
    blocking = client.chat.completions.create(**kwargs)
    chunks = list(client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == blocking.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == blocking.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == blocking.usage.completion_tokens


def test_raw_sse_stream_ends_with_done(server, served_name, airplane_jpg):
    body = {"model": served_name, "messages": image_message(airplane_jpg), "max_tokens": 4, "stream": True}
    with httpx.stream("POST", f"{server.url}/chat/completions", json=body, timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in events)
    assert events[-1] == "data: [DONE]"
    assert json.loads(events[0][6:])["object"] == "chat.completion.chunk"


def test_chat_openai_invokes_and_streams_unchanged(server, served_name, airplane_jpg):
    llm = ChatOpenAI(base_url=server.url, api_key="EMPTY", model=served_name, temperature=0, max_tokens=6,
                     max_retries=0, stream_usage=True)  # usage in streams (on by default for api.openai.com only)
    message = HumanMessage(content=[{"type": "text", "text": QUESTION},
                                    {"type": "image_url", "image_url": {"url": data_url(airplane_jpg)}}])
    answer = llm.invoke([message])
    assert isinstance(answer.content, str)
    assert answer.usage_metadata["output_tokens"] >= 1
    streamed = list(llm.stream([message]))
    assert "".join(c.content for c in streamed) == answer.content
    assert sum(c.usage_metadata["output_tokens"] for c in streamed if c.usage_metadata) == \
        answer.usage_metadata["output_tokens"]


@pytest.fixture(scope="module")
def scripted(server_settings, allowed_dir):
    """A server whose backend records the messages it is handed (what the request was turned into)."""
    backend = ScriptedBackend(["机场"])
    app = create_app(backend, server_settings, ServerConfig(allowed_image_dir=allowed_dir))
    with RunningServer(app) as running:
        yield backend, OpenAI(base_url=running.url, api_key="EMPTY", max_retries=0)


def test_multi_turn_text_only_conversation(client, served_name, airplane_jpg, scripted):
    """An image question, its answer and a text-only follow-up: every turn reaches the model, in order, the image
    with the first question only, and the follow-up is answered."""
    follow_up = [{"role": "assistant", "content": "机场。"}, {"role": "user", "content": "图中有多少架飞机？"}]
    backend, scripted_client = scripted
    answer = scripted_client.chat.completions.create(model="scripted", messages=image_message(airplane_jpg) + follow_up)
    assert answer.choices[0].message.content == "机场"
    turns = backend.seen[-1]
    assert [(m.role, m.text, len(m.images)) for m in turns] == [
        ("user", QUESTION, 1), ("assistant", "机场。", 0), ("user", "图中有多少架飞机？", 0)]
    # on the real model the prompt holds the whole conversation: longer than the first turn alone
    first = client.chat.completions.create(model=served_name, messages=image_message(airplane_jpg), max_tokens=1)
    response = client.chat.completions.create(model=served_name, messages=image_message(airplane_jpg) + follow_up,
                                              max_tokens=4)
    assert response.usage.prompt_tokens > first.usage.prompt_tokens + 5
    assert response.usage.completion_tokens >= 1 and isinstance(response.choices[0].message.content, str)


def test_file_url_under_the_allowed_directory_is_read(client, served_name, allowed_dir, airplane_jpg, scripted):
    """A file: URL under the allowed directory reaches the model as that file's image, exactly as the same bytes
    sent as a data: URL do."""
    def ask(url: str, to: OpenAI = client, model: str = served_name):
        return to.chat.completions.create(
            model=model, max_tokens=3, temperature=0,
            messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                                   {"type": "text", "text": QUESTION}]}])

    backend, scripted_client = scripted
    ask((allowed_dir / "airplane.jpg").as_uri(), scripted_client, "scripted")
    from_file = backend.seen[-1][0].images
    ask(data_url(airplane_jpg), scripted_client, "scripted")
    from_data = backend.seen[-1][0].images
    assert len(from_file) == 1 and from_file[0].size == from_data[0].size
    assert from_file[0].tobytes() == from_data[0].tobytes()
    by_file, by_data = ask((allowed_dir / "airplane.jpg").as_uri()), ask(data_url(airplane_jpg))
    assert by_file.usage.prompt_tokens == by_data.usage.prompt_tokens  # the image's tokens are in the prompt
    assert by_file.choices[0].message.content == by_data.choices[0].message.content  # greedy: the same answer


# --- errors ------------------------------------------------------------------------------------------------------
def assert_openai_error(exc: openai.APIStatusError, status: int, code: str | None = None) -> dict:
    assert exc.status_code == status
    body = exc.response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]
    if code:
        assert body["error"]["code"] == code
    return body["error"]


@pytest.mark.parametrize("url", ["data:image/png;base64,bm90IGFuIGltYWdl", "data:image/png;base64,@@@",
                                 "https://example.com/a.jpg", "ftp://x/y.jpg"])
def test_unusable_image_is_400(client, served_name, url):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=served_name, messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": QUESTION}]}])
    error = assert_openai_error(caught.value, 400, "invalid_image")
    assert error["param"] == "messages.0.content.0.image_url"


def test_file_url_outside_the_allowed_directory_is_400(client, served_name, tmp_path, airplane_jpg, allowed_dir):
    (tmp_path / "secret.jpg").write_bytes(airplane_jpg)
    messages = []
    for url in [(tmp_path / "secret.jpg").as_uri(), "file:///etc/passwd", (tmp_path / "missing.jpg").as_uri(),
                (allowed_dir / ".." / tmp_path.name / "secret.jpg").as_uri()]:
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model=served_name, messages=[{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": url}}]}])
        messages.append(assert_openai_error(caught.value, 400, "invalid_image")["message"])
    assert len(set(messages)) == 1 and "only allowed under" in messages[0]  # existing or not: the same answer


@pytest.mark.parametrize("change", [
    {"messages": []}, {"n": 2}, {"temperature": 5}, {"max_tokens": 0}, {"messages": [{"role": "tool", "content": "x"}]},
    {"tools": [{"type": "function", "function": {"name": "f"}}]},
])
def test_invalid_request_is_422(server, served_name, change):
    body = {"model": served_name, "messages": [{"role": "user", "content": "hi"}], **change}
    response = httpx.post(f"{server.url}/chat/completions", json=body, timeout=30)
    assert response.status_code == 422
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert response.json()["error"]["param"]


def test_malformed_json_is_422(server):
    response = httpx.post(f"{server.url}/chat/completions", content=b"{not json",
                          headers={"content-type": "application/json"}, timeout=30)
    assert response.status_code == 422 and "error" in response.json()


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert_openai_error(caught.value, 404, "model_not_found")


def test_api_key_is_required_when_set(tiny_backend, server_settings, airplane_jpg):
    settings = server_settings.model_copy(update={"api_key": SecretStr("s3cret")})
    with RunningServer(create_app(tiny_backend, settings)) as running:
        for key in ("EMPTY", "s3cret-not"):
            with pytest.raises(openai.AuthenticationError) as caught:
                OpenAI(base_url=running.url, api_key=key, max_retries=0).models.list()
            assert_openai_error(caught.value, 401, "invalid_api_key")
        assert httpx.post(f"{running.url}/chat/completions", json={}).status_code == 401  # before validation
        good = OpenAI(base_url=running.url, api_key="s3cret", max_retries=0)
        answer = good.chat.completions.create(model=tiny_backend.model_name, messages=image_message(airplane_jpg),
                                              max_tokens=2)
        assert answer.usage.completion_tokens >= 1
        assert httpx.get(f"http://127.0.0.1:{running.port}/health").status_code == 200  # health needs no key


def test_request_and_image_size_limits_are_413(tiny_backend, server_settings, airplane_jpg):
    config = ServerConfig(max_request_mb=0.05, max_input_pixels=100 * 100)
    with RunningServer(create_app(tiny_backend, server_settings, config)) as running:
        client = OpenAI(base_url=running.url, api_key="EMPTY", max_retries=0)
        with pytest.raises(openai.APIStatusError) as caught:  # the 256x256 fixture has more than 100x100 pixels
            client.chat.completions.create(model=tiny_backend.model_name, messages=image_message(airplane_jpg))
        assert_openai_error(caught.value, 413, "image_too_large")
        big = {"model": tiny_backend.model_name, "messages": [{"role": "user", "content": "x" * 60_000}]}
        response = httpx.post(f"{running.url}/chat/completions", json=big)
        assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"

        def chunked():  # no Content-Length: the limit is counted while the body arrives
            yield json.dumps(big).encode()

        response = httpx.post(f"{running.url}/chat/completions", content=chunked(),
                              headers={"content-type": "application/json"})
        assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"


def test_overload_is_503_and_the_queue_drains(server_settings):
    gate = threading.Event()
    backend = ScriptedBackend(["飞", "机"], gate=gate)
    with RunningServer(create_app(backend, server_settings, ServerConfig(max_waiting=1))) as running:
        client = OpenAI(base_url=running.url, api_key="EMPTY", max_retries=0)
        ask = dict(model="scripted", messages=[{"role": "user", "content": "hi"}])
        results: list[str] = []
        first = threading.Thread(target=lambda: results.append(client.chat.completions.create(**ask)
                                                               .choices[0].message.content))
        first.start()
        assert backend.started.wait(10)
        second = threading.Thread(target=lambda: results.append(client.chat.completions.create(**ask)
                                                                .choices[0].message.content))
        second.start()
        for _ in range(200):  # until the second request is admitted and waiting
            if httpx.get(f"http://127.0.0.1:{running.port}/health").json()["in_progress"] == 2:
                break
            threading.Event().wait(0.02)
        with pytest.raises(openai.InternalServerError) as caught:
            client.chat.completions.create(**ask)
        assert_openai_error(caught.value, 503, "server_overloaded")
        assert caught.value.response.headers["retry-after"] == "1"
        gate.set()
        first.join(10)
        second.join(10)
        assert results == ["飞机", "飞机"]
        assert client.chat.completions.create(**ask).choices[0].message.content == "飞机"


def test_stop_strings_cut_the_answer_and_stop_generation(server_settings):
    backend = ScriptedBackend(["这是", "一个机", "场。", "后面", "不要"])
    with RunningServer(create_app(backend, server_settings)) as running:
        client = OpenAI(base_url=running.url, api_key="EMPTY", max_retries=0)
        ask = dict(model="scripted", messages=[{"role": "user", "content": "hi"}], stop=["机场"])
        assert client.chat.completions.create(**ask).choices[0].message.content == "这是一个"
        streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(**ask,
                                                                                                     stream=True))
        assert streamed == "这是一个"
        assert backend.cancelled == [True, True]


def test_client_disconnect_cancels_generation(server_settings):
    backend = ScriptedBackend([str(i) for i in range(500)])
    with RunningServer(create_app(backend, server_settings)) as running:
        body = {"model": "scripted", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        with httpx.stream("POST", f"{running.url}/chat/completions", json=body) as response:
            next(response.iter_lines())
        for _ in range(200):
            if backend.cancelled:
                break
            threading.Event().wait(0.02)
        assert backend.cancelled == [True]
        assert httpx.get(f"http://127.0.0.1:{running.port}/health").json()["in_progress"] == 0


@pytest.mark.parametrize("pieces,stops,expected", [
    (["ab", "cd", "ef"], ["cd"], "ab"), (["a", "b", "c"], ["bc"], "a"), (["abc"], ["x"], "abc"),
    (["a", "b"], None, "ab"),
])
def test_stop_cutter(pieces, stops, expected):
    cutter = StopCutter(stops)
    out = "".join(cutter.feed(p) for p in pieces if not cutter.stopped) + cutter.flush()
    assert out == expected


def test_concurrent_requests_get_their_one_by_one_answers(client, served_name, airplane_jpg, harbor_jpg):
    """Three requests in flight at the same time (their spans overlap) get exactly the answers they get one by one."""
    asks = [dict(model=served_name, messages=image_message(image), max_tokens=6, temperature=0)
            for image in (airplane_jpg, harbor_jpg, airplane_jpg)]
    sequential = [client.chat.completions.create(**ask).choices[0].message.content for ask in asks]
    results: dict[int, str] = {}
    spans: dict[int, tuple[float, float]] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(3)

    def run(i: int) -> None:
        try:
            barrier.wait(10)
            start = time.perf_counter()
            results[i] = client.chat.completions.create(**asks[i]).choices[0].message.content
            spans[i] = (start, time.perf_counter())
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and len(results) == 3, errors
    assert max(s for s, _ in spans.values()) < min(e for _, e in spans.values()), spans  # all three in flight at once
    assert [results[i] for i in range(3)] == sequential


class BrokenBackend(ScriptedBackend):
    def stream(self, messages, params=None, cancel=None):
        yield from super().stream(messages, params, cancel)
        raise RuntimeError("CUDA out of memory")


def test_backend_failure_is_a_500_body_or_a_stream_error_event(server_settings):
    backend = BrokenBackend(["半"])
    with RunningServer(create_app(backend, server_settings)) as running:
        client = OpenAI(base_url=running.url, api_key="EMPTY", max_retries=0)
        ask = dict(model="scripted", messages=[{"role": "user", "content": "hi"}])
        with pytest.raises(openai.InternalServerError) as caught:
            client.chat.completions.create(**ask)
        assert "CUDA out of memory" in assert_openai_error(caught.value, 500)["message"]
        with pytest.raises(openai.APIError, match="CUDA out of memory"):
            list(client.chat.completions.create(**ask, stream=True))
        with httpx.stream("POST", f"{running.url}/chat/completions", json={**ask, "stream": True}) as response:
            events = [line for line in response.iter_lines() if line]
        assert events[-1] == "data: [DONE]" and "error" in json.loads(events[-2][6:])
        assert httpx.get(f"http://127.0.0.1:{running.port}/health").json()["in_progress"] == 0
