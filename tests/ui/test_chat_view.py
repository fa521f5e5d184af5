"""How stored conversations look in the web chat, and the interface strings."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from storage import ConversationView, ImageRef, MessageView
from ui.chat_view import conversation_choices, message_text, to_chatbot
from ui.i18n import STRINGS, t

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)
REF = ImageRef("ab" * 32, "ab.jpg", Path("/data/images/ab.jpg"), 256, 256)


def message(role: str, text: str, status: str = "complete", images=(), error=None) -> MessageView:
    return MessageView(1, role, text, status, list(images), NOW, error)


def test_images_come_before_the_question_in_one_bubble():
    view = ConversationView("c1", "机场", "mini", {}, NOW, NOW,
                            [message("user", "图中有多少架飞机？", images=[REF]), message("assistant", "三架。")])
    assert to_chatbot(view, "zh") == [
        {"role": "user", "content": [{"path": "/data/images/ab.jpg"}, "图中有多少架飞机？"]},
        {"role": "assistant", "content": ["三架。"]},
    ]


def test_image_only_question_has_no_empty_text():
    view = ConversationView("c1", "", None, {}, NOW, NOW, [message("user", "", images=[REF])])
    assert to_chatbot(view, "zh")[0]["content"] == [{"path": "/data/images/ab.jpg"}]


def test_unfinished_answers_say_so():
    assert message_text(message("assistant", "这是一个", "interrupted"), "zh") == "这是一个\n\n*（已停止，保留部分回答）*"
    assert "Generation failed: CUDA out of memory" in message_text(
        message("assistant", "", "error", error="CUDA out of memory"), "en")
    assert message_text(message("user", "问题", "complete"), "zh") == "问题"


def test_sidebar_choices_keep_the_store_order_and_name_untitled_ones():
    views = [ConversationView("new", "", None, {}, NOW, NOW), ConversationView("old", "港口", None, {}, NOW, NOW)]
    assert conversation_choices(views, "zh") == [("未命名对话 · 11-27 12:00", "new"), ("港口 · 11-27 12:00", "old")]


def test_every_string_exists_in_both_languages():
    assert STRINGS["zh"].keys() == STRINGS["en"].keys()
    assert t("fr", "new") == STRINGS["zh"]["new"]  # unknown language: Chinese
    assert t("en", "too_big", size=60.0, limit=50) == "File too large (60.0 MB); the limit is 50 MB."
