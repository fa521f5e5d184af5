"""Two users log in through the real login page in headless Chromium (issue 15 item 4): alice's image shows in
her chat (served to her), bob's history is empty, and the very image URL alice's page uses answers 404 to bob."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from settings import REPO_ROOT
from tests.ui.conftest import AppProcess, free_port
from tests.ui.test_browser import AIRPLANE, CHROMIUM, CHROMIUM_ARGS, QUESTION, open_chat, send

pytestmark = pytest.mark.skipif(not CHROMIUM.exists() or shutil.which("chromium") is None,
                                reason="needs Debian's chromium: apt-get install -y chromium fonts-noto-cjk")
PASSWORDS = {"alice": "alice-pass-1", "bob": "bob-pass-12"}


def log_in(browser, url: str, name: str):
    page = browser.new_context(viewport={"width": 1400, "height": 1000}, locale="zh-CN").new_page()
    page.goto(url, wait_until="load")
    page.locator("input[type=password]").wait_for(timeout=60_000)
    page.locator("input:not([type=password])").first.fill(name)
    page.locator("input[type=password]").fill(PASSWORDS[name])
    page.locator("input[type=password]").press("Enter")
    page.wait_for_selector("#question textarea", timeout=60_000)
    return page


def test_two_logins_in_the_browser(tiny_glm4v_dir, tmp_path):
    pytest.importorskip("playwright", reason="pip install -r requirements-dev.txt (playwright)")
    from playwright.sync_api import expect, sync_playwright

    env = {k: v for k, v in os.environ.items() if not k.startswith("REMOTEGLM_")}
    for name, password in PASSWORDS.items():
        subprocess.run([sys.executable, "app.py", "users", "add", name, "--data-dir", str(tmp_path)], cwd=REPO_ROOT,
                       check=True, env={**env, "REMOTEGLM_NEW_PASSWORD": password}, capture_output=True, timeout=60)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    app = AppProcess("--model", str(tiny_glm4v_dir), "--data-dir", str(tmp_path), "--port", str(port),
                     "--max-new-tokens", "8")
    try:
        app.wait_for("ready")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
            alice = log_in(browser, url, "alice")
            alice.set_input_files("#question input[type=file]", str(AIRPLANE))
            alice.wait_for_selector("#question img", timeout=30_000)
            send(alice, QUESTION)
            shown = alice.locator("#chatbot .message.user img")
            expect(shown).to_have_count(1, timeout=30_000)
            expect(alice.locator("#conversations label")).to_have_count(1, timeout=30_000)
            alice.wait_for_function("() => document.querySelector('#chatbot .message.user img').naturalWidth > 0",
                                    timeout=30_000)  # the image really loaded for its owner
            src = shown.get_attribute("src")
            assert alice.request.get(src).status == 200

            bob = log_in(browser, url, "bob")
            open_chat(bob, url)
            bob.wait_for_timeout(1000)
            expect(bob.locator("#conversations label")).to_have_count(0)
            assert bob.request.get(src).status == 404  # alice's image URL, with bob's login
            browser.close()
    finally:
        app.stop()
