"""Headless Chromium against `python app.py` with a long history: thumbnails in the sidebar, the image under
discussion beside the chat (zoomable, in view while the page scrolls), regenerate's earlier answer, the exported
HTML opened on its own, and the language radio under the mouse (issue 13 items 4-8). Screenshots under
artifacts/web/ (look at them).
"""

from __future__ import annotations

import pytest

from settings import Settings
from storage import ConversationStore
from tests.conftest import FIXTURES
from tests.ui.conftest import AppProcess, free_port
from tests.ui.test_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, open_chat, pytestmark, send, wait_stored

__all__ = ["pytestmark"]

SHOTS = ARTIFACTS / "web"
HISTORY = 60
SCENES = sorted((FIXTURES / "ucm").glob("*.jpg"))
AIRPLANE = FIXTURES / "ucm" / "airplane_192.jpg"

THUMB_OF_ROW = """(i) => getComputedStyle(document.querySelectorAll('#conversations label > span')[i], '::before')
  .backgroundImage"""
CHECKED_LANG_COLOUR = "() => getComputedStyle(document.querySelector('#lang input:checked')).backgroundColor"


def _long_history(store: ConversationStore) -> list[str]:
    ids = []
    for i in range(HISTORY):
        conv = store.create(title=f"{['机场', '港口', '森林', '海滩'][i % 4]} · 这张遥感图像展现了什么场景？（第 {i} 个）")
        image = store.add_image(SCENES[i % len(SCENES)].read_bytes(), SCENES[i % len(SCENES)].name)
        store.append_message(conv.id, "user", "这张遥感图像展现了什么场景？", images=[image])
        store.append_message(conv.id, "assistant", "这是一张遥感图像。")
        ids.append(conv.id)
    store.create(title="没有图像的对话")  # e.g. started from LangChain: a grey slot, no thumbnail
    return ids


def test_thumbnails_image_pane_regenerate_export_and_language_hover(tiny_glm4v_dir, tmp_path):
    pytest.importorskip("playwright", reason="pip install -r requirements-dev.txt (playwright)")
    from playwright.sync_api import expect, sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    store = ConversationStore.from_settings(Settings(data_dir=tmp_path))
    _long_history(store)
    port = free_port()
    app = AppProcess("--model", str(tiny_glm4v_dir), "--data-dir", str(tmp_path), "--port", str(port),
                     "--max-new-tokens", "40", "--temperature", "0")
    try:
        app.wait_for("ready")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1400, "height": 900}, locale="zh-CN")
            open_chat(page, f"http://127.0.0.1:{port}")

            # item 5: a thumbnail per conversation, from its stored image; the one without an image stays grey
            rows = page.locator("#conversations label")
            expect(rows).to_have_count(HISTORY + 1, timeout=30_000)
            page.wait_for_function(f"() => ({THUMB_OF_ROW})(1).startsWith('url(\"data:image/jpeg')",
                                   timeout=30_000)
            assert page.evaluate(THUMB_OF_ROW, 0) == "none"  # the newest: "没有图像的对话"
            assert all(page.evaluate(THUMB_OF_ROW, i).startswith('url("data:image/jpeg') for i in (1, 30, HISTORY))
            thumbs = store.images.root / "thumbs"
            assert len(list(thumbs.glob("*.jpg"))) == len(SCENES)  # made once per image, kept
            box = page.locator("#conversations label > span").nth(1).bounding_box()
            assert box and box["height"] >= 40
            # item 7: with the long list the sidebar starts at the top of the window, also once the page scrolled
            assert page.locator("#lang").bounding_box()["y"] < 60
            page.screenshot(path=str(SHOTS / "history_thumbnails.png"))

            # item 8: the image under discussion beside the chat
            pane_img = page.locator("#image-pane .pane-view img")
            expect(pane_img).to_be_hidden()
            page.set_input_files("#question input[type=file]", str(AIRPLANE))
            page.wait_for_selector("#question img", timeout=30_000)
            send(page, "这张遥感图像展现了什么场景？")
            wait_stored(store, 2)
            expect(page.locator("#chatbot .message.bot")).to_have_count(1, timeout=30_000)
            expect(pane_img).to_be_visible(timeout=10_000)
            chat_src = page.locator("#chatbot .message.user img").last.get_attribute("src")
            assert pane_img.get_attribute("src") == chat_src  # the URL the chat already uses: nothing new served
            for question in ("图中有多少架飞机？", "请详细描述这张图像。", "飞机停在哪里？"):
                send(page, question)
                expect(page.locator("#chatbot .message.user").last).to_contain_text(question, timeout=30_000)
                page.wait_for_timeout(300)
            wait_stored(store, 8)
            page.locator("#image-pane [data-zoom=in]").click()
            page.locator("#image-pane [data-zoom=in]").click()
            expect(page.locator("#image-pane .pane-zoom")).to_have_text("225%")
            view = page.locator("#image-pane .pane-view")
            view.hover()
            page.mouse.wheel(0, -300)  # wheel up: closer
            expect(page.locator("#image-pane .pane-zoom")).not_to_have_text("225%")
            page.evaluate("window.scrollTo(0, 600)")  # down to the settings: the image stays in view
            page.wait_for_timeout(300)
            pane = page.locator("#image-pane .pane-view").bounding_box()
            assert pane and 0 <= pane["y"] < 100 and pane["y"] + pane["height"] <= 900
            assert page.locator("#lang").bounding_box()["y"] < 60  # the sidebar too
            page.screenshot(path=str(SHOTS / "image_pane_zoomed_scrolled.png"))
            page.evaluate("window.scrollTo(0, 0)")
            view.dblclick()
            expect(page.locator("#image-pane .pane-zoom")).to_have_text("100%")

            # item 4: regenerate gives another candidate and keeps the earlier answer, collapsed above it
            conversation_id = store.list(limit=1)[0].id
            before = store.get(conversation_id).messages[-1].text
            page.locator("#regenerate").click()
            earlier = page.locator("#chatbot").get_by_text("较早的回答 1/2")
            expect(earlier).to_be_visible(timeout=30_000)
            wait_stored(store, 8)
            view_after = store.get(conversation_id)
            assert [a.text for a in view_after.messages[-2].alternatives] == [before]
            page.wait_for_timeout(1500)  # the last update has re-drawn the chat
            bubbles_before = page.locator("#chatbot").inner_text()
            earlier.click()  # opens it: the earlier answer's text is shown too
            page.wait_for_timeout(500)
            assert len(page.locator("#chatbot").inner_text()) > len(bubbles_before)
            page.screenshot(path=str(SHOTS / "regenerate_earlier_answer.png"))

            # item 6: the exported HTML opens on its own (images embedded), here after the image files are gone
            page.get_by_text("导出", exact=True).first.click()  # the export accordion
            page.locator("#export-html").click()
            link = page.locator("#export-file a").first
            expect(link).to_be_visible(timeout=30_000)
            with page.expect_download() as download:
                link.click()
            exported = tmp_path / "exported.html"
            download.value.save_as(exported)
            for image in store.images.root.glob("*.*"):
                image.unlink()
            standalone = browser.new_page(viewport={"width": 1000, "height": 900})
            standalone.goto(exported.as_uri())
            assert standalone.evaluate("() => [...document.images].every(i => i.complete && i.naturalWidth > 0)")
            expect(standalone.get_by_text("较早的回答 (earlier answer) 1/2")).to_be_visible()
            standalone.screenshot(path=str(SHOTS / "export_html_standalone.png"), full_page=True)
            standalone.close()

            # item 7: the English radio keeps its checked colour under the mouse
            page.evaluate("window.scrollTo(0, 0)")
            page.get_by_text("English", exact=True).click()
            expect(page.locator("#new-conversation")).to_contain_text("New conversation", timeout=10_000)
            page.mouse.move(700, 450)
            page.wait_for_timeout(300)
            checked = page.evaluate(CHECKED_LANG_COLOUR)
            page.locator("#lang input:checked").hover()
            page.wait_for_timeout(300)
            assert page.evaluate(CHECKED_LANG_COLOUR) == checked != "rgba(0, 0, 0, 0)"
            page.screenshot(path=str(SHOTS / "english_radio_hover.png"), clip={"x": 0, "y": 0, "width": 700,
                                                                            "height": 300})
            browser.close()
    finally:
        app.stop()
