"""A full model queue (`BackendBusy`) in the conversation service, the terminal chat and the web chat (issue 15 item 7).

A real tiny GLM-4V whose scheduler takes one request and queues none is held inside its batch, so the next turn is
refused at submission: the user gets the bilingual busy message, and nothing of the refused turn is stored (a
regenerated or edited turn keeps what it had); once the model is free the same question is answered."""

from __future__ import annotations

import io
import threading
import time

import pytest

from bot.service import ConversationService, ServiceBusy
from model_adapter import ChatMessage, GenerationParams, load_backend, load_image
from settings import Settings
from storage import ConversationStore
from ui.chat_view import ERROR_MARK
from ui.cli import TerminalChat
from ui.handlers import ChatHandlers

GREEDY = GenerationParams(max_new_tokens=6, do_sample=False)


class Held:
    """Holds the backend's scheduler inside a batch of one request until released: its queue (0) is full."""

    def __init__(self, backend, airplane_jpg):
        self.backend, self.opened = backend, threading.Event()
        self.run = backend.scheduler.run_batch
        backend.scheduler.run_batch = self._held
        messages = [ChatMessage("user", "占位", [load_image(airplane_jpg)])]
        self.thread = threading.Thread(target=lambda: backend.generate(messages, GREEDY))
        self.thread.start()
        deadline = time.monotonic() + 30
        while backend.scheduler.running != 1:
            assert time.monotonic() < deadline, "the held request never started"
            time.sleep(0.01)

    def _held(self, requests):
        self.opened.wait(60)
        self.run(requests)

    def release(self) -> None:
        self.opened.set()
        self.thread.join(60)
        self.backend.scheduler.run_batch = self.run


@pytest.fixture
def service(tiny_glm4v_dir, tmp_path):
    backend = load_backend(model=str(tiny_glm4v_dir), max_batch_size=1, max_queue=0)
    settings = Settings(data_dir=tmp_path)
    service = ConversationService(backend, ConversationStore.from_settings(settings), settings)
    yield service
    backend.close()


def snapshot(service, conv_id):
    view = service.history(conv_id)
    return view.title, [(m.id, m.role, m.text, m.status, [r.sha256 for r in m.images]) for m in view.messages]


def images_on_disk(service) -> int:
    return sum(1 for p in service.store.images.root.rglob("*") if p.is_file())


def test_a_busy_model_refuses_the_turn_and_stores_nothing_of_it(service, airplane_jpg, harbor_jpg):
    conv = service.start().id
    service.ask(conv, "这张遥感图像展现了什么场景？", image=airplane_jpg, params=GREEDY)
    before, files = snapshot(service, conv), images_on_disk(service)
    fresh = service.start().id

    held = Held(service.backend, airplane_jpg)
    try:
        with pytest.raises(ServiceBusy) as refused:
            list(service.send(conv, "图中有多少架飞机？", image=harbor_jpg, params=GREEDY))
        assert "繁忙" in str(refused.value) and "busy" in str(refused.value) and refused.value.retry_after > 0
        assert snapshot(service, conv) == before  # no question, no failed answer
        assert images_on_disk(service) == files  # the new image was not kept either
        with pytest.raises(ServiceBusy):
            service.ask(fresh, "你好", image=harbor_jpg, params=GREEDY)  # a conversation's first turn
        assert snapshot(service, fresh) == ("", [])
        with pytest.raises(ServiceBusy):
            list(service.regenerate(conv, params=GREEDY))
        assert snapshot(service, conv) == before  # the old answer is still there
        with pytest.raises(ServiceBusy):
            list(service.edit_last(conv, "改过的问题", params=GREEDY))
        assert snapshot(service, conv) == before  # the question is unchanged, its answer kept
    finally:
        held.release()

    events = list(service.send(conv, "图中有多少架飞机？", image=harbor_jpg, params=GREEDY))  # the retry
    assert events[-1].kind == "done" and events[-1].status == "complete"
    roles = [m[1] for m in snapshot(service, conv)[1]]
    assert roles == ["user", "assistant", "user", "assistant"]
    list(service.edit_last(conv, "改过的问题", params=GREEDY))
    assert [m.text for m in service.history(conv).messages][2] == "改过的问题"


def test_terminal_chat_says_busy_and_keeps_the_image_for_the_retry(service, airplane_jpg, tmp_path):
    path = tmp_path / "scene.jpg"
    path.write_bytes(airplane_jpg)
    out = io.StringIO()
    chat = TerminalChat(service, out=out)
    chat.attach(str(path))
    held = Held(service.backend, airplane_jpg)
    try:
        chat.ask("这张遥感图像展现了什么场景？")
    finally:
        held.release()
    assert "模型繁忙" in out.getvalue() and "the model is busy" in out.getvalue()
    assert chat.state.image == airplane_jpg  # still attached: the retry sends it again
    assert chat.state.conversation_id is None  # the empty conversation was removed
    chat.ask("这张遥感图像展现了什么场景？")
    messages = service.history(chat.state.conversation_id).messages
    assert [m.role for m in messages] == ["user", "assistant"] and messages[0].images
    assert messages[1].status == "complete"


def test_web_chat_says_busy_and_hands_the_question_back(service, airplane_jpg, tmp_path):
    path = tmp_path / "scene.jpg"
    path.write_bytes(airplane_jpg)
    handlers = ChatHandlers(service, service.settings, export_dir=tmp_path / "export")
    gen = ("zh", 0.0, 0.4, 6)
    conv = list(handlers.submit({"text": "这张遥感图像展现了什么场景？", "files": [str(path)]}, None, False, *gen))[-1][2]
    before = snapshot(service, conv)
    held = Held(service.backend, airplane_jpg)
    try:
        follow_up = list(handlers.submit({"text": "图中有多少架飞机？", "files": []}, conv, False, *gen))[-1]
        first = list(handlers.submit({"text": "你好", "files": [str(path)]}, None, False, *gen))[-1]
    finally:
        held.release()
    chat, box, conversation_id = follow_up[:3]
    assert chat[-1]["content"].startswith(ERROR_MARK) and "模型繁忙" in chat[-1]["content"]
    assert box == {"text": "图中有多少架飞机？", "files": []}  # back in the input box for the retry
    assert conversation_id == conv and snapshot(service, conv) == before
    chat, box, conversation_id = first[:3]
    assert "模型繁忙" in chat[-1]["content"] and box == {"text": "你好", "files": [str(path)]}
    assert conversation_id is None and service.store.count() == 1  # no empty conversation left behind
