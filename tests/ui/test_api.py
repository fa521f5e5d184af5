"""The web chat over HTTP with gradio_client, as any program (or a browser tab) would use it."""

from __future__ import annotations

import inspect
import threading
import time

import pytest
from gradio_client import Client, handle_file

from tests.conftest import FIXTURES
from tests.ui.conftest import REFUSED, free_port, make_service
from ui.chat_view import ERROR_MARK, to_chatbot
from ui.web import build_demo, launch_options

AIRPLANE = str(FIXTURES / "ucm" / "airplane_192.jpg")
IMAGES = sorted(str(p) for p in (FIXTURES / "ucm").glob("*.jpg"))
GEN = ("zh", 0.0, 0.4, 12)  # greedy: the tiny model always writes 12 tokens


@pytest.fixture(scope="module")
def web_app(ui_backend, tmp_path_factory):
    from settings import Settings

    settings = Settings(data_dir=tmp_path_factory.mktemp("web-data"), max_new_tokens=12, max_upload_mb=1,
                        port=free_port())
    service = make_service(ui_backend, settings)
    demo = build_demo(service, settings)
    demo.queue()
    demo.launch(prevent_thread_lock=True, **launch_options(settings))
    yield f"http://127.0.0.1:{settings.port}", service
    demo.close()


def texts(message: dict) -> list[str]:
    return [part["text"] for part in message["content"] if part.get("type") == "text"]


def test_chat_endpoint_streams_the_answer_and_stores_it(web_app):
    url, service = web_app
    client = Client(url, verbose=False)
    job = client.submit({"text": "这张遥感图像展现了什么场景？", "files": [handle_file(AIRPLANE)]}, *GEN, api_name="/chat")
    updates = list(job)
    chat, textbox, sidebar, conversation_id = job.result()
    assert len(updates) >= 3, "several streamed updates, not one final answer"
    assert updates[0][1] == {"text": "", "files": []}  # the box is emptied once; later updates leave it alone
    user, answer = chat
    assert user["content"][0]["type"] == "file" and texts(user) == ["这张遥感图像展现了什么场景？"]
    stored = service.history(conversation_id)
    assert texts(answer) == [inspect.cleandoc(stored.messages[1].text)] and stored.messages[1].status == "complete"
    # the same browser session continues the same conversation
    chat, _, sidebar, same_id = client.predict({"text": "图中有多少架飞机？", "files": []}, *GEN, api_name="/chat")
    assert same_id == conversation_id and len(chat) == 4
    assert sidebar["choices"][0][1] == conversation_id  # newest activity first
    assert len(service.history(conversation_id).messages) == 4


@pytest.mark.parametrize("name", list(REFUSED))
def test_bad_upload_over_http_gets_a_message(web_app, bad_uploads, name):
    url, service = web_app
    client = Client(url, verbose=False)
    before = service.store.count()
    chat, _, _, _ = client.predict({"text": "图中有什么？", "files": [handle_file(str(bad_uploads[name]))]}, *GEN,
                                   api_name="/chat")
    assert len(chat) == 1 and texts(chat[0])[0].startswith(ERROR_MARK)
    assert REFUSED[name][1] in texts(chat[0])[0]
    assert service.store.count() == before


@pytest.mark.parametrize("text, words", [("", "请输入问题"), ("问" * 100_000, "问题过长")])
def test_empty_and_overlong_questions_over_http(web_app, text, words):
    url, _ = web_app
    client = Client(url, verbose=False)
    conversation_chat, _, _, _ = client.predict({"text": "图中有多少架飞机？", "files": [handle_file(AIRPLANE)]}, *GEN,
                                             api_name="/chat")
    chat, _, _, _ = client.predict({"text": text, "files": []}, *GEN, api_name="/chat")
    assert words in texts(chat[-1])[0]
    assert chat[:-1] == conversation_chat  # the stored conversation is shown unchanged


def test_upload_over_the_limit_is_refused_by_the_server(web_app, tmp_path):
    url, service = web_app
    big = tmp_path / "big.jpg"
    big.write_bytes((FIXTURES / "ucm" / "airplane_192.jpg").read_bytes() + b"\0" * (1024 * 1024 + 10))
    client = Client(url, verbose=False)
    before = service.store.count()
    with pytest.raises(Exception, match="(?i)size|large|413"):
        client.predict({"text": "图中有什么？", "files": [handle_file(str(big))]}, *GEN, api_name="/chat")
    assert service.store.count() == before


def test_ten_concurrent_sessions_get_their_own_answers(web_app):
    url, service = web_app
    results: dict[int, tuple] = {}
    errors: list[BaseException] = []

    def session(i: int) -> None:
        try:
            client = Client(url, verbose=False)
            question = f"第 {i} 个会话：图中有多少架飞机？"
            first = client.predict({"text": question, "files": [handle_file(IMAGES[i % len(IMAGES)])]}, *GEN,
                                   api_name="/chat")
            second = client.predict({"text": f"第 {i} 个会话的追问", "files": []}, *GEN, api_name="/chat")
            results[i] = (question, first, second)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=session, args=(i,)) for i in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    assert not errors, errors
    assert sorted(results) == list(range(10))
    conversation_ids = {second[3] for _, _, second in results.values()}
    assert len(conversation_ids) == 10, "each session has its own conversation"
    for i, (question, first, second) in results.items():
        chat, _, _, conversation_id = second
        assert first[3] == conversation_id
        stored = service.history(conversation_id)
        assert [m.text for m in stored.messages if m.role == "user"] == [question, f"第 {i} 个会话的追问"]
        # gr.Chatbot shows text through inspect.cleandoc (outer whitespace trimmed)
        assert [texts(m)[-1] for m in chat] == [inspect.cleandoc(m.text) for m in stored.messages]
        assert all(m.status == "complete" for m in stored.messages)
        expected = to_chatbot(stored, "zh")
        assert len(chat) == len(expected) == 4


def test_login_is_required_when_configured(ui_backend, tmp_path):
    from pydantic import SecretStr

    from settings import Settings

    settings = Settings(data_dir=tmp_path, port=free_port(), auth_user="analyst", auth_password=SecretStr("s3cret"))
    demo = build_demo(make_service(ui_backend, settings), settings)
    demo.queue()
    demo.launch(prevent_thread_lock=True, **launch_options(settings))
    try:
        url = f"http://127.0.0.1:{settings.port}"
        with pytest.raises(Exception):
            Client(url, verbose=False).predict({"text": "图中有什么？", "files": []}, *GEN, api_name="/chat")
        chat, _, _, _ = Client(url, auth=("analyst", "s3cret"), verbose=False).predict(
            {"text": "图中有多少架飞机？", "files": [handle_file(AIRPLANE)]}, *GEN, api_name="/chat")
        assert len(chat) == 2
    finally:
        demo.close()


def test_binds_localhost_by_default():
    from settings import Settings

    options = launch_options(Settings())
    assert options["server_name"] == "127.0.0.1" and options["auth"] is None
    assert options["max_file_size"] == 50 * 1024 * 1024


def test_stop_over_http_keeps_the_partial_answer(tmp_path):
    from settings import Settings
    from tests.ui.conftest import EndlessBackend

    settings = Settings(data_dir=tmp_path, port=free_port())
    backend = EndlessBackend(delay=0.02)
    service = make_service(backend, settings)
    demo = build_demo(service, settings)
    demo.queue()
    demo.launch(prevent_thread_lock=True, **launch_options(settings))
    try:
        client = Client(f"http://127.0.0.1:{settings.port}", verbose=False)
        job = client.submit({"text": "请详细描述这张图像。", "files": [handle_file(AIRPLANE)]}, *GEN, api_name="/chat")
        assert backend.started.wait(30)
        client.predict(api_name="/stop")  # the same browser session's stop button
        deadline = time.monotonic() + 20
        while not job.done() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert job.done(), "stop must end the running answer"
        conversation = service.store.list(limit=1)[0]
        answer = service.history(conversation.id).messages[-1]
        assert answer.status == "interrupted" and answer.text.startswith("遥感")
        # the session can go on asking after a stop
        backend.started.clear()
        job = client.submit({"text": "继续", "files": []}, *GEN, api_name="/chat")
        assert backend.started.wait(30)
        client.predict(api_name="/stop")
        deadline = time.monotonic() + 20
        while not job.done() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [m.status for m in service.history(conversation.id).messages] == [
            "complete", "interrupted", "complete", "interrupted"]
    finally:
        demo.close()
