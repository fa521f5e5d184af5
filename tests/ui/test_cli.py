"""`python app.py cli` driven through a pseudo-terminal, as a person at a terminal would use it."""

from __future__ import annotations

import io
import os
import sys

import pexpect
import pytest

from settings import REPO_ROOT, Settings
from storage import ConversationStore
from tests.conftest import FIXTURES
from tests.ui.conftest import EndlessBackend, make_service
from ui.cli import TerminalChat

AIRPLANE = FIXTURES / "ucm" / "airplane_192.jpg"


def spawn(tiny_glm4v_dir, data_dir, *args: str, max_new_tokens: int = 8) -> pexpect.spawn:
    # greedy: the tiny model always writes max_new_tokens tokens, so a long answer is reliably long
    child = pexpect.spawn(
        sys.executable, [str(REPO_ROOT / "app.py"), "cli", "--model", str(tiny_glm4v_dir), "--data-dir",
                         str(data_dir), "--max-new-tokens", str(max_new_tokens), "--temperature", "0", *args],
        cwd=str(REPO_ROOT), env={**os.environ, "OMP_NUM_THREADS": "1"}, encoding="utf-8", timeout=90,
    )
    return child


def ask(child: pexpect.spawn, question: str) -> None:
    child.sendline(question)
    child.expect("RemoteGLM：")
    child.expect("用户：")


@pytest.fixture
def data_dir(tmp_path):
    return tmp_path / "data"


def test_terminal_chat_with_image_history_and_resume(tiny_glm4v_dir, data_dir):
    child = spawn(tiny_glm4v_dir, data_dir)
    child.expect("图像路径")
    child.sendline("/no/such/scene.jpg")  # a wrong path gets a message, not a traceback
    child.expect("找不到图像文件")
    child.expect("用户：")
    child.sendline(f"image {AIRPLANE}")
    child.expect("已读取图像 airplane_192.jpg")
    child.expect("用户：")
    ask(child, "这张遥感图像展现了什么场景？")
    ask(child, "图中有多少架飞机？")
    child.sendline("history")
    child.expect(r"airplane_192.jpg|[0-9a-f]{64}\.jpg")
    child.expect("图中有多少架飞机？")
    child.expect("用户：")
    child.sendline("")  # an empty question gets the service's message
    child.expect("请输入问题")
    child.expect("用户：")
    child.sendline("stop")
    child.expect(r"--conversation ([0-9a-f]{32})")
    conversation_id = child.match.group(1)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0

    store = ConversationStore.from_settings(Settings(data_dir=data_dir))
    view = store.get(conversation_id)
    assert [m.text for m in view.messages if m.role == "user"] == ["这张遥感图像展现了什么场景？", "图中有多少架飞机？"]
    assert view.messages[0].images and all(m.status == "complete" for m in view.messages)

    # resume it with long answers, and stop one with Ctrl+C: the partial answer is kept
    child = spawn(tiny_glm4v_dir, data_dir, "--conversation", conversation_id, max_new_tokens=4000)
    child.expect("继续对话")
    child.expect("图中有多少架飞机？")
    child.expect("用户：")
    child.sendline("还有别的吗？")
    child.expect("RemoteGLM：")
    child.expect(r"\S{20}")  # some answer text has streamed out
    child.sendintr()
    child.expect("已停止")
    child.expect("用户：")
    child.sendline("clear")
    child.expect("已开始新对话")
    child.expect("图像路径")
    child.sendline("")
    child.expect("用户：")
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    view = store.get(conversation_id)
    assert len(view.messages) == 6 and view.messages[-1].status == "interrupted" and view.messages[-1].text
    assert (view.messages[-1].completion_tokens or 0) < 4000
    assert store.count() == 1  # `clear` alone creates nothing


def test_unknown_conversation_id_is_a_message(service):
    out = io.StringIO()
    assert TerminalChat(service, out=out, input_fn=lambda prompt: "stop").run(conversation_id="0" * 32) == 1
    assert "找不到对话" in out.getvalue()


def test_ctrl_c_while_streaming_keeps_the_partial_answer(ui_settings):
    backend = EndlessBackend()
    chat_service = make_service(backend, ui_settings)
    out = io.StringIO()
    answers = iter(["请详细描述这张图像。", "history", "stop"])

    def interrupting_stream(*args, **kwargs):
        for chunk in EndlessBackend.stream(backend, *args, **kwargs):
            if backend.started.is_set() and out.getvalue().count("遥感") >= 3:
                raise KeyboardInterrupt  # what Ctrl+C raises in the terminal while the answer streams
            yield chunk

    backend.stream = interrupting_stream
    chat = TerminalChat(chat_service, out=out, input_fn=lambda prompt: next(answers))
    assert chat.run(image=str(AIRPLANE)) == 0
    answer = chat_service.history(chat.state.conversation_id).messages[-1]
    assert answer.status == "interrupted" and answer.text.startswith("遥感")
    assert "[已停止]" in out.getvalue() and "（已停止，保留部分回答）" in out.getvalue()
