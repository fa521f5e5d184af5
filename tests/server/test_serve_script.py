"""`python app.py serve` end to end on a tiny model, driven by the README's curl commands."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def running_serve(tiny_glm4v_dir, tmp_path_factory):
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "REMOTEGLM_API_KEY": "sk-test",
           "REMOTEGLM_DATA_DIR": str(tmp_path_factory.mktemp("serve-data"))}
    process = subprocess.Popen(
        [sys.executable, "app.py", "serve", "--model", str(tiny_glm4v_dir), "--port", str(port),
         "--max-new-tokens", "8", "--device", "cpu"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                pytest.fail(f"`python app.py serve` exited: {process.stdout.read()[-3000:]}")
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("`python app.py serve` did not come up in 120 s")
            time.sleep(0.3)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_readme_curl_examples_against_app_serve(running_serve, airplane_jpg, tmp_path):
    image_b64 = base64.b64encode(airplane_jpg).decode()
    body = {"model": "remoteglm", "max_tokens": 8, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{image_b64}"}},
        {"type": "text", "text": "这张遥感图像展现了什么场景？"}]}]}
    (tmp_path / "request.json").write_text(json.dumps(body, ensure_ascii=False))
    curl = ["curl", "-sS", f"{running_serve}/v1/chat/completions", "-H", "Authorization: Bearer sk-test",
            "-H", "Content-Type: application/json", "-d", f"@{tmp_path / 'request.json'}"]
    answer = json.loads(subprocess.run(curl, capture_output=True, text=True, check=True, timeout=60).stdout)
    assert answer["object"] == "chat.completion" and answer["usage"]["completion_tokens"] >= 1

    body["stream"] = True
    (tmp_path / "request.json").write_text(json.dumps(body, ensure_ascii=False))
    streamed = subprocess.run(curl + ["-N"], capture_output=True, text=True, check=True, timeout=60).stdout
    assert streamed.strip().endswith("data: [DONE]")

    models = subprocess.run(["curl", "-sS", f"{running_serve}/v1/models", "-H", "Authorization: Bearer sk-test"],
                            capture_output=True, text=True, check=True, timeout=60).stdout
    assert json.loads(models)["data"][0]["object"] == "model"
    assert [m["id"] for m in json.loads(models)["data"]] == ["remoteglm"]  # the id the README's examples send
    refused = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", f"{running_serve}/v1/models"],
                             capture_output=True, text=True, timeout=60).stdout
    assert refused == "401"
