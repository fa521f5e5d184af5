"""Headless Chromium against `python app.py`: what happens while an answer is still streaming.

A question sent during streaming must never be lost: it leaves the box, shows in the chat as queued, and is
answered next (issue 13, item 1). Screenshots under artifacts/.
"""

from __future__ import annotations

import pytest

from settings import Settings
from storage import ConversationStore
from tests.ui.conftest import AppProcess, free_port
from tests.ui.test_browser import AIRPLANE, ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, open_chat, pytestmark, send, wait_stored

__all__ = ["pytestmark"]

QUESTION = "请详细描述这张图像。"
SECOND = "图中有多少架飞机？"


def test_question_sent_while_an_answer_streams_is_queued_and_answered(tiny_glm4v_dir, tmp_path):
    pytest.importorskip("playwright", reason="pip install -r requirements-dev.txt (playwright)")
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    port = free_port()
    # greedy and long: the tiny model writes all 1500 tokens, so the first answer streams for seconds
    app = AppProcess("--model", str(tiny_glm4v_dir), "--data-dir", str(tmp_path), "--port", str(port),
                     "--max-new-tokens", "1500", "--temperature", "0")
    store = ConversationStore.from_settings(Settings(data_dir=tmp_path))
    try:
        app.wait_for("ready")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1400, "height": 1100}, locale="zh-CN")
            open_chat(page, f"http://127.0.0.1:{port}")
            page.set_input_files("#question input[type=file]", str(AIRPLANE))
            page.wait_for_selector("#question img", timeout=30_000)
            send(page, QUESTION)
            bot = page.locator("#chatbot .message.bot").last
            expect(bot).not_to_have_text("", timeout=30_000)
            send(page, SECOND)  # the first answer is still streaming
            expect(page.locator("#question textarea")).to_have_value("", timeout=5_000)
            queued = page.locator("#chatbot .message.user").last
            expect(queued).to_contain_text(SECOND, timeout=10_000)
            expect(queued).to_contain_text("排队中")
            expect(page.locator("#notice")).to_contain_text("已排队")
            page.screenshot(path=str(ARTIFACTS / "web_chat_queued_question.png"), full_page=True)
            first = store.get(store.list(limit=1)[0].id)
            assert first.messages[-1].status == "streaming", "the test must send during streaming"

            conversation_id = wait_stored(store, 4, timeout=180)
            view = store.get(conversation_id)
            assert [m.text for m in view.messages if m.role == "user"] == [QUESTION, SECOND]
            assert [m.status for m in view.messages if m.role == "assistant"] == ["complete", "complete"]
            expect(page.locator("#chatbot .message.bot")).to_have_count(2, timeout=30_000)
            expect(page.locator("#chatbot .message.user").last).not_to_contain_text("排队中", timeout=30_000)
            assert store.count() == 1
            page.screenshot(path=str(ARTIFACTS / "web_chat_queued_answered.png"), full_page=True)
            browser.close()
    finally:
        app.stop()
