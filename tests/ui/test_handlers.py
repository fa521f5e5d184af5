"""The web chat's handlers, called as plain functions on the tiny model and a real SQLite store."""

from __future__ import annotations

import json
import threading
import time

import pytest

from bot.titles import conversation_title
from storage import NotFound
from tests.conftest import FIXTURES
from tests.ui.conftest import CONVERTED, REFUSED, EndlessBackend, make_service
from ui.chat_view import ERROR_MARK, to_chatbot
from ui.handlers import EMPTY_INPUT, ChatHandlers

AIRPLANE = str(FIXTURES / "ucm" / "airplane_192.jpg")
HARBOR = str(FIXTURES / "ucm" / "harbor_1092.jpg")
GEN = ("zh", 0.0, 0.4, 12)  # lang, temperature (0: greedy, the tiny model always writes 12 tokens), top_p, max


def ask(handlers: ChatHandlers, text: str, files=(), conversation_id=None, editing=False) -> list[tuple]:
    return list(handlers.submit({"text": text, "files": list(files)}, conversation_id, editing, *GEN))


def last_bubble_text(chatbot) -> str:
    content = chatbot[-1]["content"]
    return content if isinstance(content, str) else content[-1]


def test_turn_streams_into_the_chat_and_is_stored(handlers):
    outs = ask(handlers, "这张遥感图像展现了什么场景？", [AIRPLANE])
    assert len(outs) >= 3, "the answer should arrive in several updates"
    first_chat, textbox, conversation_id, editing, sidebar, id_box = outs[0]
    assert id_box == conversation_id and outs[-1][5] == conversation_id  # shown for `app.py cli --conversation`
    assert first_chat[-1] == {"role": "assistant", "content": "⏳ 正在思考…"}  # user turn shown at once, then a
    # visible thinking indicator until the first token
    assert textbox == EMPTY_INPUT and editing is False
    assert handlers.after_turn(conversation_id) == ("", "这张遥感图像展现了什么场景？")  # title into the rename box
    assert conversation_id in [value for _, value in sidebar["choices"]] and sidebar["value"] == conversation_id
    view = handlers.service.history(conversation_id)
    assert [m.role for m in view.messages] == ["user", "assistant"]
    assert view.messages[1].status == "complete" and view.messages[0].images
    final_chat = outs[-1][0]
    assert final_chat == to_chatbot(view, "zh")
    assert final_chat[0]["content"][0] == {"path": str(view.messages[0].images[0].path)}
    assert final_chat[0]["content"][1] == "这张遥感图像展现了什么场景？"
    streamed = [o[0][-1]["content"] for o in outs[1:-2] if isinstance(o[0][-1]["content"], str)]
    assert all(view.messages[1].text.startswith(s) for s in streamed)  # each update is a prefix of the answer


def test_follow_up_question_continues_the_conversation(handlers):
    conversation_id = ask(handlers, "这张遥感图像展现了什么场景？", [AIRPLANE])[-1][2]
    outs = ask(handlers, "图中有多少架飞机？", conversation_id=conversation_id)
    assert outs[-1][2] == conversation_id
    view = handlers.service.history(conversation_id)
    assert [m.text for m in view.messages if m.role == "user"] == ["这张遥感图像展现了什么场景？", "图中有多少架飞机？"]
    assert len(outs[-1][0]) == 4


@pytest.mark.parametrize("name", list(REFUSED))
def test_bad_upload_gets_a_message_and_loses_nothing(handlers, bad_uploads, name):
    conversation_id = ask(handlers, "这张遥感图像展现了什么场景？", [AIRPLANE])[-1][2]
    before = handlers.service.history(conversation_id).messages
    chat, textbox, same_id, _, _, _ = ask(handlers, "图中有什么？", [str(bad_uploads[name])], conversation_id)[-1]
    assert same_id == conversation_id
    assert last_bubble_text(chat).startswith(ERROR_MARK) and REFUSED[name][1] in last_bubble_text(chat)
    assert chat[:-1] == to_chatbot(handlers.service.history(conversation_id), "zh")
    assert textbox != EMPTY_INPUT, "the input stays so the user can fix it"
    after = handlers.service.history(conversation_id).messages
    assert [(m.id, m.text, m.status) for m in after] == [(m.id, m.text, m.status) for m in before]


@pytest.mark.parametrize("name", list(REFUSED))
def test_bad_first_upload_leaves_no_empty_conversation(handlers, bad_uploads, name):
    chat, _, conversation_id, _, _, id_box = ask(handlers, "图中有什么？", [str(bad_uploads[name])])[-1]
    assert id_box == ""
    assert conversation_id is None and len(chat) == 1
    assert handlers.service.store.count() == 0


@pytest.mark.parametrize("name", list(CONVERTED))
def test_16_bit_and_multiband_tiffs_are_converted(handlers, bad_uploads, name):
    chat, _, conversation_id, _, _, _ = ask(handlers, "这张遥感图像展现了什么场景？", [str(bad_uploads[name])])[-1]
    view = handlers.service.history(conversation_id)
    image = view.messages[0].images[0]
    assert (image.width, image.height) == (64, 64) and image.path.suffix == ".png"  # browsers can show it
    assert view.messages[1].status == "complete"


@pytest.mark.parametrize("text, words", [("", "请输入问题"), ("   \n ", "请输入问题"), ("遥" * 100_000, "问题过长")])
def test_empty_and_overlong_questions_are_refused(handlers, text, words):
    conversation_id = ask(handlers, "这张遥感图像展现了什么场景？", [AIRPLANE])[-1][2]
    chat = ask(handlers, text, conversation_id=conversation_id)[-1][0]
    assert words in last_bubble_text(chat)
    assert len(handlers.service.history(conversation_id).messages) == 2


def test_upload_over_the_size_limit_is_refused(handlers, tmp_path):
    big = tmp_path / "big.tif"
    big.write_bytes(b"\0" * int(2.5 * 1024 * 1024))  # settings.max_upload_mb is 2 in these tests
    chat = ask(handlers, "图中有什么？", [str(big)])[-1][0]
    assert "文件过大" in last_bubble_text(chat) and handlers.service.store.count() == 0


@pytest.fixture
def endless(ui_settings, tmp_path):
    backend = EndlessBackend()
    return ChatHandlers(make_service(backend, ui_settings), ui_settings, export_dir=tmp_path / "export"), backend


def test_stop_keeps_the_partial_answer(endless):
    handlers, backend = endless
    outs: list[tuple] = []
    worker = threading.Thread(target=lambda: outs.extend(ask(handlers, "请详细描述这张图像。", [AIRPLANE])))
    worker.start()
    assert backend.started.wait(10)
    handlers.stop()
    worker.join(10)
    assert not worker.is_alive()
    view = handlers.service.history(outs[-1][2])
    answer = view.messages[-1]
    assert answer.status == "interrupted" and answer.text.startswith("遥感")
    assert "已停止" in last_bubble_text(outs[-1][0])
    assert handlers.refresh(view.id, "zh") == outs[-1][0]


def test_cancelled_handler_keeps_the_partial_answer(endless):
    """Gradio's cancels= closes the running handler; the partial answer must still be stored."""
    handlers, _ = endless
    turn = handlers.submit({"text": "请详细描述这张图像。", "files": [AIRPLANE]}, None, False, *GEN)
    outs = [next(turn) for _ in range(5)]
    turn.close()
    answer = handlers.service.history(outs[-1][2]).messages[-1]
    assert answer.status == "interrupted" and answer.text.count("遥感") >= 3


def test_regenerate_gives_a_new_answer_and_keeps_the_earlier_one_in_view(handlers):
    conversation_id = ask(handlers, "这张遥感图像展现了什么场景？", [AIRPLANE])[-1][2]  # slider at 0: greedy
    old = handlers.service.history(conversation_id).messages[-1]
    outs = list(handlers.regenerate(conversation_id, *GEN))
    view = handlers.service.history(conversation_id)
    assert len(view.messages) == 2 and view.messages[-1].created_at > old.created_at  # SQLite may reuse the id
    assert view.messages[-1].status == "complete"
    assert [a.text for a in view.messages[0].alternatives] == [old.text]
    chat = outs[-1][0]
    assert chat == to_chatbot(view, "zh") and len(chat) == 3
    earlier = chat[1]
    assert earlier["role"] == "assistant" and earlier["content"] == old.text
    assert earlier["metadata"] == {"title": "较早的回答 1/2（点击展开）", "status": "done"}  # collapsed
    assert chat[2]["content"] == [view.messages[-1].text]
    # while the next answer streams in, both earlier ones are shown above it
    streaming = list(handlers.regenerate(conversation_id, *GEN))[0][0]
    assert len(streaming) == 4 and [b.get("metadata", {}).get("title") for b in streaming[1:3]] == [
        "较早的回答 1/3（点击展开）", "较早的回答 2/3（点击展开）"]


def test_regenerate_without_a_conversation_says_so(handlers):
    chat = list(handlers.regenerate(None, *GEN))[-1][0]
    assert "请先开始或打开一个对话" in last_bubble_text(chat)


def test_edit_and_resend_the_last_question(handlers):
    conversation_id = ask(handlers, "这张遥感图像展现了什么场景？", [AIRPLANE])[-1][2]
    textbox, editing, notice = handlers.start_edit(conversation_id, "zh")
    assert textbox == {"text": "这张遥感图像展现了什么场景？", "files": []} and editing is True and notice
    outs = ask(handlers, "图中有多少架飞机？", conversation_id=conversation_id, editing=True)
    assert outs[-1][3] is False  # editing mode ends with the new answer
    view = handlers.service.history(conversation_id)
    assert [m.role for m in view.messages] == ["user", "assistant"]
    assert view.messages[0].text == "图中有多少架飞机？" and view.messages[0].images  # the image stays


def test_open_shows_the_stored_history_and_its_settings(handlers):
    turn = handlers.submit({"text": "这张遥感图像展现了什么场景？", "files": [HARBOR]}, None, False, "zh", 0.3, 0.7, 9)
    conversation_id = list(turn)[-1][2]
    other = ask(handlers, "图中有多少架飞机？", [AIRPLANE])[-1][2]
    chat, opened, editing, title, temperature, top_p, max_new, confirm, sidebar, id_box = handlers.open(
        conversation_id, "zh")
    assert id_box == conversation_id
    # the automatic title: the question, after the scene the first answer names (a sampled answer of the tiny
    # random model may name one by chance)
    answer = next(m.text for m in handlers.service.history(conversation_id).messages if m.role == "assistant")
    assert opened == conversation_id and editing is False
    assert title == conversation_title("这张遥感图像展现了什么场景？", answer)
    assert title.endswith("这张遥感图像展现了什么场景？")
    assert chat == to_chatbot(handlers.service.history(conversation_id), "zh") and chat[0]["content"][0]["path"]
    assert (temperature, top_p, max_new) == (0.3, 0.7, 9)
    assert [value for _, value in sidebar["choices"]] == [other, conversation_id]  # newest first
    assert handlers.open(other, "zh")[4:7] == GEN[1:]


def test_sliders_are_remembered_per_conversation(handlers):
    first = ask(handlers, "图中有多少架飞机？", [AIRPLANE])[-1][2]
    second = ask(handlers, "图中有多少架飞机？", [AIRPLANE])[-1][2]
    handlers.remember(first, 0.1, 0.95, 5)
    assert handlers.generation_of(first) == (0.1, 0.95, 5)
    assert handlers.generation_of(second) == GEN[1:]
    assert handlers.generation_of(None) == (0.8, 0.4, 12)  # a new conversation starts from the defaults
    handlers.remember(None, 0.1, 0.95, 5)  # nothing to remember yet: no error


def test_rename_and_delete(handlers):
    conversation_id = ask(handlers, "这张遥感图像展现了什么场景？", [AIRPLANE])[-1][2]
    image = handlers.service.history(conversation_id).messages[0].images[0].path
    sidebar = handlers.rename(conversation_id, "机场 1 号", "zh")
    assert sidebar["choices"][0][0].startswith("机场 1 号") and sidebar["value"] == conversation_id
    assert handlers.ask_delete(conversation_id)["visible"] is True
    assert handlers.cancel_delete()["visible"] is False
    chat, opened, *_ = handlers.delete(conversation_id, "zh")
    assert chat == [] and opened is None
    with pytest.raises(NotFound):
        handlers.service.history(conversation_id)
    assert not image.exists()


def test_export_markdown_json_and_html_are_self_contained(handlers, tmp_path):
    import base64
    import re

    conversation_id = ask(handlers, "这张遥感图像展现了什么场景？", [AIRPLANE])[-1][2]
    list(handlers.regenerate(conversation_id, *GEN))
    view = handlers.service.history(conversation_id)
    image = view.messages[0].images[0]
    stored = image.path.read_bytes()
    earlier, current = view.messages[0].alternatives[0].text, view.messages[1].text
    exported = {}
    for fmt in ("md", "json", "html"):
        update = handlers.export(conversation_id, fmt, "zh")
        assert update["visible"] is True and update["value"].endswith("." + fmt)
        exported[fmt] = open(update["value"], encoding="utf-8").read()
        assert str(image.path.parent) not in exported[fmt], f"{fmt} refers to this machine's image folder"
    image.path.unlink()  # "another machine": the exports still hold the image
    for fmt in ("md", "html"):
        uris = re.findall(r"data:image/jpeg;base64,([A-Za-z0-9+/=]+)", exported[fmt])
        assert [base64.b64decode(u) for u in uris] == [stored], fmt
        assert "这张遥感图像展现了什么场景？" in exported[fmt] and "较早的回答" in exported[fmt]
    assert current in exported["md"] and earlier in exported["md"]
    assert exported["html"].startswith("<!doctype html>") and "<script" not in exported["html"]
    data = json.loads(exported["json"])
    assert data["id"] == conversation_id and len(data["messages"]) == 2
    assert base64.b64decode(data["messages"][0]["images"][0]["data"]) == stored
    assert data["messages"][0]["earlier_answers"][0]["text"] == earlier and data["messages"][1]["text"] == current


@pytest.mark.parametrize("fmt, suffix", [("BMP", "bmp"), ("WEBP", "webp"), ("PNG", "png"), ("TIFF", "tif")])
def test_common_formats_are_accepted_and_shown(handlers, tmp_path, fmt, suffix):
    from PIL import Image

    path = tmp_path / f"scene.{suffix}"
    Image.open(AIRPLANE).convert("RGB").save(path, fmt)
    chat = ask(handlers, "这张遥感图像展现了什么场景？", [str(path)])[-1][0]
    shown = chat[0]["content"][0]["path"]
    assert shown.endswith((".png", ".jpg")), "stored in a format every browser shows"
    assert len(chat) == 2 and not str(chat[1]["content"][-1]).startswith(ERROR_MARK)


def test_question_sent_while_streaming_is_queued_then_answered(endless):
    """Enter during an answer: the box empties, the question shows as queued in every later update of the running
    turn (which never writes the box again), and its own turn then stores and answers it."""
    handlers, backend = endless
    updates: list[tuple] = []
    turn = handlers.submit({"text": "请详细描述这张图像。", "files": [AIRPLANE]}, None, False, *GEN)
    worker = threading.Thread(target=lambda: updates.extend(turn))
    worker.start()
    assert backend.started.wait(10)
    textbox, notice = handlers.enqueue({"text": "图中有多少架飞机？", "files": []}, "zh")
    assert textbox == EMPTY_INPUT and "已排队" in notice
    seen = len(updates)
    deadline = time.monotonic() + 10
    while len(updates) < seen + 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    handlers.stop()
    worker.join(10)
    later = updates[seen + 1:]
    assert later and all("排队中" in str(u[0][-1]["content"]) for u in later)
    assert all(u[1] != EMPTY_INPUT and u[1] != {"text": "图中有多少架飞机？", "files": []} for u in updates[1:])
    conversation_id = updates[-1][2]
    outs = ask(handlers, "图中有多少架飞机？", conversation_id=conversation_id)
    assert not any("排队中" in str(m["content"]) for m in outs[-1][0])  # its turn came: no longer queued
    view = handlers.service.history(conversation_id)
    assert [m.text for m in view.messages if m.role == "user"] == ["请详细描述这张图像。", "图中有多少架飞机？"]


def test_bands_of_a_multiband_tiff_can_be_chosen(handlers, bad_uploads):
    path = str(bad_uploads["gdal_4band_16bit.tif"])
    default = handlers.submit({"text": "这张遥感图像展现了什么场景？", "files": [path]}, None, False, *GEN)
    chosen = handlers.submit({"text": "这张遥感图像展现了什么场景？", "files": [path]}, None, False, *GEN, "4,3,2")
    refs = [handlers.service.history(list(turn)[-1][2]).messages[0].images[0] for turn in (default, chosen)]
    assert refs[0].sha256 != refs[1].sha256  # a different rendering is what the model saw
    chat = list(handlers.submit({"text": "图中有什么？", "files": [path]}, None, False, *GEN, "7,3,2"))[-1][0]
    assert "只有 4 个波段" in last_bubble_text(chat)


@pytest.mark.parametrize("lang, words", [("zh", "请先上传"), ("en", "upload one")])
def test_a_question_without_any_image_asks_for_one(handlers, lang, words):
    outs = list(handlers.submit({"text": "图中有多少架飞机？", "files": []}, None, False, lang, 0.0, 0.4, 12))
    chat, textbox, conversation_id = outs[-1][:3]
    assert len(outs) == 1 and words in last_bubble_text(chat) and last_bubble_text(chat).startswith(ERROR_MARK)
    assert textbox == {"text": "图中有多少架飞机？", "files": []}  # kept, to resend with an image
    assert conversation_id is None and handlers.service.store.count() == 0
    # once the conversation has an image, follow-ups without one are answered
    conversation_id = ask(handlers, "这张遥感图像展现了什么场景？", [AIRPLANE])[-1][2]
    chat = ask(handlers, "图中有多少架飞机？", conversation_id=conversation_id)[-1][0]
    assert len(chat) == 4 and not last_bubble_text(chat).startswith(ERROR_MARK)


class ScriptedBackend(EndlessBackend):
    """Answers each turn with the next scripted text (what the model says is not what these tests are about)."""

    model_name = "scripted"

    def __init__(self, answers: list[str]):
        super().__init__()
        self.answers = list(answers)

    def stream(self, messages, params=None, cancel=None):
        from model_adapter import Completion, StreamChunk

        text = self.answers.pop(0)
        for i in range(0, len(text), 4):
            yield StreamChunk(text[i:i + 4])
        yield StreamChunk("", Completion(text, 1, len(text), "stop"))


@pytest.fixture
def scripted(ui_settings, tmp_path):
    backend = ScriptedBackend(["这是一个机场，停着几架飞机。", "有三架飞机。", "图中是一个港口，停着许多船。",
                               "This is a dense residential area.", "还是机场。"])
    return ChatHandlers(make_service(backend, ui_settings), ui_settings, export_dir=tmp_path / "export")


def test_history_titles_say_the_scene_and_the_question(scripted):
    airport = ask(scripted, "这张遥感图像展现了什么场景？", [AIRPLANE])[-1][2]
    assert scripted.service.history(airport).title == "机场 · 这张遥感图像展现了什么场景？"
    ask(scripted, "图中有多少架飞机？", conversation_id=airport)
    assert scripted.service.history(airport).title == "机场 · 这张遥感图像展现了什么场景？"  # the first answer names it
    harbor = ask(scripted, "这张遥感图像展现了什么场景？", [HARBOR])[-1][2]
    sidebar = ask(scripted, "What is this?", [AIRPLANE])[-1][4]
    labels = [label for label, _ in sidebar["choices"]]
    assert labels[0].startswith("dense residential area · What is this?")
    assert labels[1].startswith("港口 · 这张遥感图像展现了什么场景？") and labels[2].startswith("机场 · ")
    scripted.rename(harbor, "我的港口", "zh")
    list(scripted.regenerate(harbor, *GEN))  # a title the user chose is kept
    assert scripted.service.history(harbor).title == "我的港口"


def test_regenerate_samples_again_when_the_candidate_repeats_an_earlier_answer(ui_settings, tmp_path):
    backend = ScriptedBackend(["这是一个机场。", "这是一个机场。", "图中是机场，停着几架飞机。"])
    handlers = ChatHandlers(make_service(backend, ui_settings), ui_settings, export_dir=tmp_path / "export")
    conversation_id = ask(handlers, "这张遥感图像展现了什么场景？", [AIRPLANE])[-1][2]
    outs = list(handlers.regenerate(conversation_id, *GEN))
    view = handlers.service.history(conversation_id)
    assert [m.text for m in view.messages if m.role == "assistant"] == ["图中是机场，停着几架飞机。"]
    assert [a.text for a in view.messages[0].alternatives] == ["这是一个机场。"]  # the repeat was not stored twice
    shown = [last_bubble_text(out[0]) for out in outs]
    assert "图中是机" in shown and not any("机场。图中" in text for text in shown)  # the next one starts afresh
    assert outs[-1][0] == to_chatbot(view, "zh") and outs[-1][0][1]["content"] == "这是一个机场。"


def test_history_search_finds_titles_questions_and_answers(scripted):
    airport = ask(scripted, "这张遥感图像展现了什么场景？", [AIRPLANE])[-1][2]
    ask(scripted, "图中有多少架飞机？", conversation_id=airport)
    harbor = ask(scripted, "这张遥感图像展现了什么场景？", [HARBOR])[-1][2]
    ids = lambda update: [value for _, value in update["choices"]]  # noqa: E731
    assert ids(scripted.search("港口", "zh", None)) == [harbor]
    assert ids(scripted.search("三架", "zh", None)) == [airport]  # words of an answer
    assert ids(scripted.search("多少架", "zh", None)) == [airport]  # words of a question
    assert ids(scripted.search("100%", "zh", None)) == []  # LIKE wildcards are literal
    # the filter stays while the tab works on: a new turn lists only matching conversations
    scripted.search("港口", "zh", None)
    assert ids(ask(scripted, "图中有多少艘船？", conversation_id=harbor)[-1][4]) == [harbor]
    assert set(ids(scripted.search("", "zh", None))) == {airport, harbor}
