"""The LangChain / LangGraph examples run end to end as scripts: the shipped RemoteGLM-mini answers, and where a
planner is needed it is the fake tool-calling LLM behind the real OpenAI protocol over HTTP (tests/bot/fake_planner.py).
Each script's printed answer is checked against the mini's own answer, and its stored turns against the store."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage

from bot.agent import AgentSettings, RemoteSensingAgent, build_planner
from bot.chat_model import ChatRemoteGLM
from bot.history import RemoteGLMChatMessageHistory
from model_adapter import ChatMessage, GenerationParams, load_backend, load_image
from settings import DEFAULT_MODEL_DIR, Settings
from storage import ConversationStore
from tests.bot.fake_planner import FakePlanner, last_tool_result, last_user_text, tool_call

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
TANKS = EXAMPLES / "ucm_storagetanks_1991.jpg"
AIRPLANE = EXAMPLES / "ucm_airplane_191.jpg"
TANKS_Q = "图中有储罐吗？"


@pytest.fixture(scope="module")
def mini():
    return load_backend(model=str(DEFAULT_MODEL_DIR), device="cpu")


def mini_answer(mini, image: Path, question: str) -> str:
    return mini.generate([ChatMessage("user", question, [load_image(image.read_bytes())])], GenerationParams()).text


def run(script: str, *args: str, data_dir: Path | None = None) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "REMOTEGLM_DEVICE": "cpu"}
    env.pop("REMOTEGLM_DATABASE_URL", None)
    if data_dir is not None:
        env["REMOTEGLM_DATA_DIR"] = str(data_dir)
    done = subprocess.run([sys.executable, str(EXAMPLES / script), *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def printed(output: str, label: str) -> str:
    return re.search(rf"^{label}: (.*(?:\n(?![a-z ]+: ).*)*)", output, re.M).group(1).rstrip("\n")


def test_chat_model_memory_example_remembers_across_runs(tmp_path):
    first = run("chat_model_memory.py", "--image", str(AIRPLANE), "这张遥感图像展现了什么场景？", data_dir=tmp_path)
    conversation = printed(first, "conversation")
    assert printed(first, "memory") == "0 earlier messages, 0 images"
    second = run("chat_model_memory.py", "--conversation", conversation, "图中有飞机吗？", data_dir=tmp_path)
    assert printed(second, "memory") == "2 earlier messages, 1 images"

    store = ConversationStore.from_settings(Settings(data_dir=tmp_path))
    try:
        stored = store.get(conversation)
        assert [m.role for m in stored.messages] == ["user", "assistant"] * 2  # in the web chat's sidebar
        assert len(stored.messages[0].images) == 1 and conversation in [c.id for c in store.list()]
        assert stored.messages[1].text == printed(first, "answer")
        # The second answer is the mini's answer to the whole remembered conversation, image included.
        earlier = RemoteGLMChatMessageHistory(store, conversation).messages[:2]
        llm = ChatRemoteGLM(model=str(DEFAULT_MODEL_DIR), device="cpu")
        assert printed(second, "answer") == llm.invoke([*earlier, HumanMessage("图中有飞机吗？")]).content
    finally:
        store.close()


def test_tool_agent_example_asks_remoteglm_through_the_tool(mini):
    expected = mini_answer(mini, TANKS, TANKS_Q)

    def ask_about_the_named_image(messages):
        path = re.search(r"(\S+\.jpg)", last_user_text(messages)).group(1)
        return tool_call("remoteglm", image=path, question=TANKS_Q)

    with FakePlanner([ask_about_the_named_image,
                      lambda messages: {"content": f"RemoteGLM 说：{last_tool_result(messages)}"}]) as planner:
        output = run("tool_agent.py", "--planner-model", FakePlanner.MODEL, "--planner-base-url", planner.url,
                     "--planner-api-key", "sk-fake", f"{TANKS} 里有储罐吗？")
    assert f"tool call: remoteglm {{'image': '{TANKS}', 'question': '{TANKS_Q}'}}" in output
    assert printed(output, "tool result") == expected
    assert printed(output, "answer") == f"RemoteGLM 说：{expected}"
    assert [m["role"] for m in planner.requests[1]["messages"]] == ["system", "user", "assistant", "tool"]
    assert planner.requests[0]["tools"][0]["function"]["name"] == "remoteglm"


def test_agent_subgraph_example_keeps_its_thread_for_the_next_run_and_the_agent(mini, tmp_path):
    expected = mini_answer(mini, TANKS, TANKS_Q)
    with FakePlanner([
        tool_call("ask_image", question=TANKS_Q),
        lambda messages: {"content": f"结果：{last_tool_result(messages)}"},
        tool_call("zoom", box=[0, 0, 0.5, 0.5]),
        lambda messages: {"content": "已放大左上角。"},
        lambda messages: {"content": f"共 {len(messages)} 条消息。"},
    ]) as planner:
        args = ["--planner-model", FakePlanner.MODEL, "--planner-base-url", planner.url, "--planner-api-key", "k"]
        first = run("agent_subgraph.py", *args, "--image", str(TANKS), "哪里有储罐？", data_dir=tmp_path)
        conversation = printed(first, "conversation")
        assert f"tool call: ask_image {{'question': '{TANKS_Q}'}}" in first
        assert printed(first, "report") == f"结果：[box [0, 0, 256, 256]] {expected}\n(依据 based on: ask_image)"

        second = run("agent_subgraph.py", *args, "--conversation", conversation, "放大左上角。", data_dir=tmp_path)
        assert "tool call: ask_image" not in second and "tool call: zoom" in second
        assert printed(second, "report") == "已放大左上角。\n(依据 based on: zoom)"
        # the second run's planner saw the first run's tool call and result
        assert [m["role"] for m in planner.requests[2]["messages"]] == [
            "system", "user", "assistant", "tool", "assistant", "user"]

        # The same thread continues through RemoteSensingAgent itself, without repeating stored turns.
        settings = AgentSettings(data_dir=tmp_path, planner_model=FakePlanner.MODEL, planner_base_url=planner.url,
                                 planner_api_key="k")
        store = ConversationStore.from_settings(settings)
        with RemoteSensingAgent(build_planner(settings), mini, store, settings) as agent:
            third = agent.send(conversation, "一共说了几句？")
        assert third.text == "共 10 条消息。"  # system + two turns of 4 + this question
        stored = store.get(conversation)
        store.close()
    assert [(m.role, m.status) for m in stored.messages] == [("user", "complete"), ("assistant", "complete")] * 3
    assert stored.messages[1].text == f"结果：[box [0, 0, 256, 256]] {expected}"
    assert stored.settings["agent"]["scene"]["view"] == [0, 0, 128, 128]
