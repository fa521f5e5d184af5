"""A scripted OpenAI chat-completions server on 127.0.0.1 (random port) for the translate/ tests.

It speaks the real protocol (POST /v1/chat/completions, `choices` / `usage` JSON, `{"error": ...}` bodies) and
translates with a dictionary built from the shipped translations, so answers are the shipped Chinese. Each request
consumes one action from `script` (then `default`): "ok", "429", "500", "401", "timeout" (answer after `delay` s),
"short" (one line missing), "english" (echo the English).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_LINE = re.compile(r"^\s*(\d+)\.\s*(.*)$")


class FakeOpenAI:
    def __init__(self, dictionary: dict[str, str], delay: float = 1.0) -> None:
        self.dictionary = dictionary
        self.delay = delay
        self.script: deque[str] = deque()
        self.default = "ok"
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def start(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def reset(self, *script: str, default: str = "ok") -> None:
        with self.lock:
            self.script = deque(script)
            self.default = default
            self.requests = []

    # --- answering ---
    def _translate(self, text: str) -> str:
        if " | " in text:  # merge / rewrite: one paragraph from the image's sentences
            parts = list(dict.fromkeys(self.dictionary.get(s.strip(), "") for s in text.split(" | ")))
            return "这是一张遥感图像，显示了" + "".join(parts)
        return self.dictionary.get(text, "一句未知的描述。")

    def answer(self, body: dict, action: str) -> str:
        user = body["messages"][-1]["content"].split("\n\n注意")[0]
        lines = [m.groups() for m in map(_LINE.match, user.splitlines()) if m]
        if action == "english":
            return "\n".join(f"{n}. {t}" for n, t in lines)
        if action == "short":
            lines = lines[:-1]
        return "\n".join(f"{n}. {self._translate(t)}" for n, t in lines)

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def _send(self, status: int, payload: dict, headers: dict | None = None) -> None:
                data = json.dumps(payload, ensure_ascii=False).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out and hung up: expected
                    pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake.lock:
                    action = fake.script.popleft() if fake.script else fake.default
                    fake.requests.append({"body": body, "action": action})
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": {"message": "not found", "type": "invalid_request_error"}})
                if action in ("429", "500", "401"):
                    return self._send(int(action), {"error": {"message": f"scripted {action}", "type": "test",
                                                              "code": action}}, {"Retry-After": "0"})
                if action == "timeout":
                    time.sleep(fake.delay)
                content = fake.answer(body, action)
                prompt_tokens = sum(len(m["content"]) for m in body["messages"]) // 2
                self._send(200, {
                    "id": f"chatcmpl-{len(fake.requests)}", "object": "chat.completion", "created": int(time.time()),
                    "model": body["model"],
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": content}}],
                    "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(content),
                              "total_tokens": prompt_tokens + len(content)}})

        return Handler
