"""End to end in a real headless Chromium: upload, ask, watch the answer stream, reload, reopen, continue,
restart the server and find everything again. Saves screenshots under artifacts/ (look at them).

Needs Debian's `chromium` (Playwright's own browser download is not used) and `fonts-noto-cjk` for Chinese:
    apt-get install -y chromium fonts-noto-cjk
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from settings import REPO_ROOT, Settings
from storage import ConversationStore
from tests.conftest import FIXTURES
from tests.ui.conftest import AppProcess, free_port

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO_ROOT / "artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
AIRPLANE = FIXTURES / "ucm" / "airplane_192.jpg"
QUESTION = "这张遥感图像展现了什么场景？"
FOLLOW_UP = "图中有多少架飞机？"

pytestmark = pytest.mark.skipif(not CHROMIUM.exists() or shutil.which("chromium") is None,
                                reason="needs Debian's chromium: apt-get install -y chromium fonts-noto-cjk")

# Records every distinct text of the last answer bubble, with a timestamp, while it streams in.
WATCH_ANSWER = """() => {
  window.__answers = [];
  new MutationObserver(() => {
    const bots = document.querySelectorAll('#chatbot .message.bot');
    if (!bots.length) return;
    const text = bots[bots.length - 1].innerText.trim();
    const last = window.__answers[window.__answers.length - 1];
    if (text && (!last || last.text !== text)) window.__answers.push({text, t: performance.now()});
  }).observe(document.querySelector('#chatbot'), {subtree: true, childList: true, characterData: true});
}"""


def wait_stored(store: ConversationStore, count: int, timeout: float = 60) -> str:
    """The id of the newest conversation once it holds `count` messages, the last one finished."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        convs = store.list(limit=1)
        if convs:
            view = store.get(convs[0].id)
            if len(view.messages) >= count and view.messages[-1].status != "streaming":
                return view.id
        time.sleep(0.1)
    raise AssertionError(f"no conversation with {count} finished messages after {timeout}s")


def open_chat(page, url: str) -> None:
    page.goto(url, wait_until="load")
    page.wait_for_selector("#question textarea", timeout=60_000)


def send(page, text: str) -> float:
    page.fill("#question textarea", text)
    sent = page.evaluate("performance.now()")
    page.press("#question textarea", "Enter")
    return sent


def test_upload_ask_stream_reload_reopen_continue_restart(tiny_glm4v_dir, tmp_path):
    pytest.importorskip("playwright", reason="pip install -r requirements-dev.txt (playwright)")
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # greedy: the tiny model then always writes the full 160 tokens (sampling may stop at once), so the answer
    # takes a few hundred milliseconds and its streaming is visible
    args = ("--model", str(tiny_glm4v_dir), "--data-dir", str(tmp_path), "--port", str(port),
            "--max-new-tokens", "160", "--temperature", "0")
    store = ConversationStore.from_settings(Settings(data_dir=tmp_path))
    app = AppProcess(*args)
    try:
        app.wait_for("ready")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1400, "height": 1100}, locale="zh-CN")
            open_chat(page, url)
            page.evaluate(WATCH_ANSWER)

            # upload + ask: the question and image appear, the answer streams in
            page.set_input_files("#question input[type=file]", str(AIRPLANE))
            page.wait_for_selector("#question img", timeout=30_000)  # the upload's thumbnail in the input box
            sent = send(page, QUESTION)
            expect(page.locator("#chatbot .message.user img")).to_have_count(1, timeout=30_000)
            expect(page.locator("#chatbot .message.user").last).to_contain_text(QUESTION)
            conversation_id = wait_stored(store, 2)
            expect(page.locator("#chatbot .message.bot")).to_have_count(1, timeout=30_000)
            expect(page.locator("#chatbot .message.bot").last).not_to_have_text("", timeout=30_000)
            answers = page.evaluate("window.__answers")
            assert answers, "the answer never appeared"
            first_token_ms = answers[0]["t"] - sent
            print(f"browser: {len(answers)} distinct answer states; first text {first_token_ms:.0f} ms after Enter")
            assert len(answers) >= 2, "the answer should stream in several steps, not appear at once"
            expect(page.locator("#conversations label").first).to_contain_text(QUESTION[:10])
            expect(page.locator("#rename-box").locator("input, textarea").first).to_have_value(QUESTION)
            page.mouse.move(700, 1050)
            page.wait_for_timeout(500)
            page.screenshot(path=str(ARTIFACTS / "web_chat_first_answer.png"), full_page=True)

            # reload: the page starts empty; the sidebar brings the conversation back, image included
            open_chat(page, url)
            expect(page.locator("#chatbot .message")).to_have_count(0)
            page.locator("#conversations label", has_text=QUESTION[:10]).first.click()
            expect(page.locator("#chatbot .message.user img")).to_have_count(1, timeout=30_000)
            expect(page.locator("#chatbot .message.bot")).to_have_count(1)

            # continue where it was
            send(page, FOLLOW_UP)
            wait_stored(store, 4)
            expect(page.locator("#chatbot .message.bot")).to_have_count(2, timeout=30_000)
            expect(page.locator("#chatbot .message.user").last).to_contain_text(FOLLOW_UP)
            assert store.count() == 1 and len(store.get(conversation_id).messages) == 4
            expect(page.locator("#conversations label.selected input:checked")).to_have_count(1)
            expect(page.locator("#conversation-id").locator("input, textarea").first).to_have_value(conversation_id)
            page.wait_for_timeout(1000)
            page.screenshot(path=str(ARTIFACTS / "web_chat.png"), full_page=True)

            # restart the server: nothing is lost
            app.stop()
            app = AppProcess(*args)
            app.wait_for("ready")
            open_chat(page, url)
            page.locator("#conversations label", has_text=QUESTION[:10]).first.click()
            expect(page.locator("#chatbot .message.bot")).to_have_count(2, timeout=30_000)
            expect(page.locator("#chatbot .message.user img")).to_have_count(1)

            # the English switch relabels the interface
            page.get_by_text("English", exact=True).click()
            expect(page.locator("#new-conversation")).to_contain_text("New conversation", timeout=10_000)
            expect(page.get_by_text("Examples (click to fill in)")).to_be_visible()
            page.screenshot(path=str(ARTIFACTS / "web_chat_en_after_restart.png"), full_page=True)
            browser.close()
    finally:
        app.stop()
