"""The OpenAI-compatible backend against our own server running a tiny GLM-4V (the protocol vLLM speaks)."""

from __future__ import annotations

import base64
import io
import threading

import pytest
from PIL import Image
from pydantic import SecretStr
from starlette.responses import JSONResponse

from bot.service import ConversationService
from model_adapter import ChatMessage, GenerationParams, load_backend, load_image
from model_adapter.openai_compat import BackendError, OpenAIBackend, sampling_kwargs, to_openai_messages
from server import create_app
from settings import Settings
from tests.server.running import RunningServer, ScriptedBackend

GREEDY = GenerationParams(max_new_tokens=8, do_sample=False)
QUESTION = "这张遥感图像展现了什么场景？"


@pytest.fixture(scope="module")
def hf_backend(tiny_glm4v_dir):
    return load_backend(model=str(tiny_glm4v_dir), device="cpu")


@pytest.fixture(scope="module")
def served(hf_backend, tiny_glm4v_dir, tmp_path_factory):
    settings = Settings(model=str(tiny_glm4v_dir), data_dir=tmp_path_factory.mktemp("served"))
    with RunningServer(create_app(hf_backend, settings)) as running:
        yield running


@pytest.fixture(scope="module")
def image(airplane_jpg):
    return load_image(airplane_jpg)


def test_messages_become_image_url_parts_with_lossless_pixels(image):
    converted = to_openai_messages([ChatMessage("system", "你是遥感助手。"), ChatMessage("user", QUESTION, [image]),
                                    ChatMessage("assistant", "机场。")])
    assert converted[0] == {"role": "system", "content": "你是遥感助手。"}
    parts = converted[1]["content"]
    assert [p["type"] for p in parts] == ["image_url", "text"] and parts[1]["text"] == QUESTION
    url = parts[0]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    decoded = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert decoded.size == image.size and decoded.tobytes() == image.tobytes()
    assert converted[2] == {"role": "assistant", "content": "机场。"}


def test_sampling_sends_only_what_was_set():
    assert sampling_kwargs(GenerationParams(), {}, 512, 4096) == {"max_tokens": 512}
    kwargs = sampling_kwargs(GenerationParams(max_new_tokens=9000, do_sample=False, top_k=5, seed=3),
                             {"repetition_penalty": 1.2, "temperature": 0.7}, 512, 4096)
    assert kwargs == {"max_tokens": 4096, "temperature": 0.0, "seed": 3,
                      "extra_body": {"top_k": 5, "repetition_penalty": 1.2}}


def test_same_answer_as_the_local_model_blocking_and_streaming(served, hf_backend, image):
    remote = OpenAIBackend(served.url, model=hf_backend.model_name)
    messages = [ChatMessage("user", QUESTION, [image])]
    local = hf_backend.generate(messages, GREEDY)
    blocking = remote.generate(messages, GREEDY)
    assert (blocking.text, blocking.prompt_tokens, blocking.completion_tokens) == \
        (local.text, local.prompt_tokens, local.completion_tokens)
    chunks = list(remote.stream(messages, GREEDY))
    assert "".join(c.text for c in chunks) == local.text
    final = chunks[-1].completion
    assert (final.text, final.prompt_tokens, final.completion_tokens) == \
        (local.text, local.prompt_tokens, local.completion_tokens)
    assert final.finish_reason == local.finish_reason
    batch = remote.generate_batch([messages, [ChatMessage("user", "图中有多少架飞机？", [image])]], GREEDY)
    assert batch[0].text == local.text and len(batch) == 2


def test_from_settings_asks_the_server_which_model_it_serves(served, hf_backend):
    backend = load_backend(Settings(backend="openai", openai_base_url=served.url))
    assert isinstance(backend, OpenAIBackend)
    assert backend.model_name == "remoteglm"  # the server's served id, not the checkpoint's directory name
    named = load_backend(Settings(backend="openai", openai_base_url=served.url, model=hf_backend.model_name))
    assert named.model_name == hf_backend.model_name  # the checkpoint's own name is an alias the server accepts
    assert named.generate([ChatMessage("user", QUESTION)], GREEDY).completion_tokens >= 1


def test_whole_conversation_service_runs_on_the_openai_backend(served, hf_backend, tmp_path, airplane_jpg):
    settings = Settings(backend="openai", openai_base_url=served.url, data_dir=tmp_path, max_new_tokens=6)
    service = ConversationService.from_settings(settings)
    conv = service.start()
    events = list(service.send(conv.id, QUESTION, image=airplane_jpg))
    assert [e.kind for e in events][0] == "user" and events[-1].kind == "done"
    follow = service.ask(conv.id, "图中有多少架飞机？")  # the image comes back from storage for turn two
    stored = service.history(conv.id)
    assert [m.role for m in stored.messages] == ["user", "assistant", "user", "assistant"]
    assert stored.model == "remoteglm"
    assert stored.messages[1].status == "complete" and stored.messages[1].completion_tokens >= 1
    assert follow.prompt_tokens > stored.messages[1].prompt_tokens  # the second prompt carries the first turn


def test_cancel_stops_the_remote_stream(tmp_path):
    backend = ScriptedBackend([str(i) for i in range(500)])
    with RunningServer(create_app(backend, Settings(data_dir=tmp_path))) as running:
        remote = OpenAIBackend(running.url, model="scripted")
        cancel = threading.Event()
        chunks = []
        for chunk in remote.stream([ChatMessage("user", "hi")], cancel=cancel):
            chunks.append(chunk)
            if len(chunks) == 3:
                cancel.set()
        assert chunks[-1].completion.finish_reason == "cancelled"
        assert chunks[-1].completion.text == "012"
        for _ in range(200):  # the server saw the connection close and stopped its model
            if backend.cancelled:
                break
            threading.Event().wait(0.02)
        assert backend.cancelled == [True]


class FailFirst:
    """ASGI wrapper: the first `failures` chat requests get 503 (an overloaded replica)."""

    def __init__(self, app, failures: int):
        self.app, self.failures, self.seen = app, failures, 0

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].endswith("/chat/completions"):
            self.seen += 1
            if self.failures > 0:
                self.failures -= 1
                response = JSONResponse({"error": {"message": "busy", "type": "server_error", "param": None,
                                                   "code": "server_overloaded"}}, 503, {"retry-after-ms": "10"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def test_retries_an_overloaded_server_then_gives_a_clear_error(tmp_path):
    app = FailFirst(create_app(ScriptedBackend(["好"]), Settings(data_dir=tmp_path)), failures=2)
    with RunningServer(app) as running:
        remote = OpenAIBackend(running.url, model="scripted", max_retries=2)
        assert remote.generate([ChatMessage("user", "hi")]).text == "好"
        assert app.seen == 3
        app.failures = 5
        with pytest.raises(BackendError, match="answered 503"):
            list(remote.stream([ChatMessage("user", "hi")]))


def test_timeouts_auth_and_unreachable_servers_raise_backend_errors(tmp_path):
    busy = ScriptedBackend(["x"], gate=threading.Event())
    settings = Settings(data_dir=tmp_path, api_key=SecretStr("k"))
    with RunningServer(create_app(busy, settings)) as running:
        with pytest.raises(BackendError, match="did not answer in time"):
            OpenAIBackend(running.url, api_key="k", model="scripted", timeout=0.3, max_retries=0).generate(
                [ChatMessage("user", "hi")])
        busy.gate.set()
        with pytest.raises(BackendError, match="API key"):
            OpenAIBackend(running.url, api_key="wrong", model="scripted", max_retries=0).generate(
                [ChatMessage("user", "hi")])
        with pytest.raises(BackendError, match="does not serve"):
            OpenAIBackend(running.url, api_key="k", model="nope", max_retries=0).generate([ChatMessage("user", "hi")])
    with pytest.raises(BackendError, match="cannot reach"):
        OpenAIBackend(running.url, model="scripted", max_retries=0).generate([ChatMessage("user", "hi")])


def test_chat_remoteglm_runs_on_the_openai_backend(served, hf_backend, image, airplane_jpg):
    from langchain_core.messages import HumanMessage

    from bot.chat_model import ChatRemoteGLM

    llm = ChatRemoteGLM(backend_kind="openai", base_url=served.url, temperature=0, max_tokens=8)
    message = HumanMessage(content=[
        {"type": "image", "base64": base64.b64encode(airplane_jpg).decode(), "mime_type": "image/jpeg"},
        {"type": "text", "text": QUESTION}])
    answer = llm.invoke([message])
    assert answer.content == hf_backend.generate([ChatMessage("user", QUESTION, [image])], GREEDY).text
    assert answer.usage_metadata["output_tokens"] >= 1
