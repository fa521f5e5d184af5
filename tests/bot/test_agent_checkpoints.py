"""The agent's LangGraph thread on a real checkpointer (SQLite file of the store; PostgreSQL when
REMOTEGLM_TEST_POSTGRES_URL is set), planned by a fake tool-calling LLM over the real OpenAI protocol and HTTP.

A "restart" is a new store, planner and agent object on the same database: the thread (thread_id = conversation id)
continues with the earlier tool calls and results, the stored turns stay in the web chat's sidebar, turns typed in
the web chat are added to the thread, and a turn stopped mid-tool leaves a thread the planner still accepts.
"""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from bot.agent import AgentSettings, RemoteSensingAgent, build_planner, open_checkpointer
from bot.service import ConversationService
from model_adapter import ChatMessage, GenerationParams, load_backend, load_image
from storage import ConversationStore
from tests.bot.fake_planner import FakePlanner, last_tool_result, last_user_text, tool_call, tool_calls

GREEDY = GenerationParams(max_new_tokens=6, do_sample=False)
SCENE_Q = "这张遥感图像展现了什么场景？"


@pytest.fixture(scope="module")
def backend(tiny_glm4v_dir):
    return load_backend(model=str(tiny_glm4v_dir), device="cpu")


class Process:
    """One application process: its own store, planner client and agent on the shared database."""

    def __init__(self, database_url: str, image_dir, backend, planner_url: str):
        settings = AgentSettings(planner_model=FakePlanner.MODEL, planner_base_url=planner_url,
                                 planner_api_key="sk-fake", max_new_tokens=6)
        self.store = ConversationStore(database_url, image_dir)
        self.agent = RemoteSensingAgent(build_planner(settings), backend, self.store, settings, params=GREEDY)

    def close(self) -> None:
        self.agent.close()
        self.store.close()


@pytest.fixture
def processes(database_url, tmp_path, backend):
    started: list[Process] = []

    def start(planner: FakePlanner) -> Process:
        started.append(Process(database_url, tmp_path / "images", backend, planner.url))
        return started[-1]

    yield start
    for process in started:
        process.close()


def roles(request: dict) -> list[str]:
    return [m["role"] for m in request["messages"]]


def test_a_restarted_process_continues_the_thread_with_its_tool_calls(processes, backend, airplane_jpg):
    expected = backend.generate([ChatMessage("user", SCENE_Q, [load_image(airplane_jpg)])], GREEDY).text.strip()
    with FakePlanner([
        tool_call("ask_image", question=SCENE_Q),
        lambda messages: {"content": f"RemoteGLM：{last_tool_result(messages)}"},
        tool_call("zoom", box=[0, 0, 0.5, 0.5]),
        lambda messages: {"content": "已放大左上角。"},
    ]) as planner:
        first = processes(planner)
        conv = first.agent.start()
        one = first.agent.send(conv.id, "这是什么地方？", image=airplane_jpg, image_name="airport.jpg")
        assert one.status == "complete" and one.text == f"RemoteGLM：[box [0, 0, 256, 256]] {expected}"
        first.close()  # the process stops

        second = processes(planner)  # a new process on the same database
        two = second.agent.send(conv.id, "放大左上角。")
        assert two.status == "complete" and two.text == "已放大左上角。"

    # Turn two's first planner request carries turn one's tool call and result, over the wire, in order.
    turn_two = planner.requests[2]
    assert roles(turn_two) == ["system", "user", "assistant", "tool", "assistant", "user"]
    call = turn_two["messages"][2]["tool_calls"][0]
    assert call["function"]["name"] == "ask_image" and SCENE_Q in call["function"]["arguments"]
    assert turn_two["messages"][3]["tool_call_id"] == call["id"]
    assert turn_two["messages"][3]["content"] == f"[box [0, 0, 256, 256]] {expected}"
    assert turn_two["messages"][4]["content"] == one.text
    assert "放大左上角" in turn_two["messages"][5]["content"]

    # The checkpointed thread keeps the image by reference (the stored file's sha256), never its pixels.
    stored = second.store.get(conv.id)
    thread = second.agent.thread(conv.id)
    assert [type(m).__name__ for m in thread] == ["HumanMessage", "AIMessage", "ToolMessage", "AIMessage"] * 2
    image = stored.messages[0].images[0]
    assert thread[0].additional_kwargs["remoteglm_images"] == [
        {"sha256": image.sha256, "filename": image.filename, "width": image.width, "height": image.height}]
    assert all("base64" not in str(m.content) for m in thread)

    # The web chat's sidebar shows the agent's conversation with both turns.
    assert conv.id in [c.id for c in second.store.list()]
    assert [(m.role, m.status) for m in stored.messages] == [("user", "complete"), ("assistant", "complete")] * 2
    assert stored.messages[-1].text == two.text and stored.title.startswith("这是什么地方")
    assert (stored.settings["agent"]["scene"]["view"]) == [0, 0, 128, 128]  # zoom wrote the view (256 px scene)


def test_web_chat_turns_join_the_thread_and_the_thread_joins_the_web_chat(processes, backend, airplane_jpg):
    with FakePlanner([
        lambda messages: {"content": f"收到：{last_user_text(messages)[:4]}"},
        lambda messages: {"content": "我看到了网页里的那一轮。"},
    ]) as planner:
        process = processes(planner)
        web = ConversationService(backend, process.store)
        conv = web.start()
        web_turn = web.ask(conv.id, "网页上问的", image=airplane_jpg, params=GREEDY)  # a conversation begun in the web chat
        process.agent.send(conv.id, "智能体接着问")
        second_web = web.ask(conv.id, "网页上又问了一次", params=GREEDY)
        process.agent.send(conv.id, "智能体再问")

    first, second = planner.requests
    # A thread begun on a web-chat conversation starts from its stored turns (the image as a note).
    assert roles(first) == ["system", "user", "assistant", "user"]
    assert "uploaded an image" in first["messages"][1]["content"] and "网页上问的" in first["messages"][1]["content"]
    assert first["messages"][2]["content"] == web_turn.text
    # The web-chat turn typed between two agent turns is in the thread before the new question, once.
    assert roles(second) == ["system", "user", "assistant", "user", "assistant", "user", "assistant", "user"]
    texts = [m["content"] for m in second["messages"]]
    assert texts[5] == "网页上又问了一次" and texts[6] == second_web.text and "智能体再问" in texts[7]
    assert sum("网页上问的" in t for t in texts) == 1
    # ...and the web chat sees the agent's turns in the same conversation.
    assert [m.text for m in process.store.get(conv.id).messages][2:4] == ["智能体接着问", "收到：智能体接"]


def test_a_turn_stopped_mid_tool_leaves_a_thread_the_planner_accepts(processes, airplane_jpg):
    with FakePlanner([
        tool_calls(("image_info", {}), ("ask_image", {"question": SCENE_Q})),
        lambda messages: {"content": "重新开始。"},  # the stopped turn never asks again: this answers the next one
    ]) as planner:
        process = processes(planner)
        conv = process.agent.start()
        turn = process.agent.stream(conv.id, "看看这张图。", image=airplane_jpg)
        assert next(turn).kind == "user" and next(turn).kind == "step"
        turn.close()  # the user pressed stop while the second tool was still running
        reply = process.agent.send(conv.id, "算了，重新开始。")
        assert reply.status == "complete" and reply.text == "重新开始。"
    last = planner.requests[-1]["messages"]
    calls = [c["id"] for m in last if m["role"] == "assistant" for c in m.get("tool_calls") or []]
    answered = [m["tool_call_id"] for m in last if m["role"] == "tool"]
    assert len(calls) == 2 and sorted(answered) == sorted(calls)
    assert all("interrupted" in m["content"] for m in last if m["role"] == "tool")
    assert [(m.role, m.status) for m in process.store.get(conv.id).messages] == [
        ("user", "complete"), ("assistant", "interrupted"), ("user", "complete"), ("assistant", "complete")]


def test_deleting_the_conversation_deletes_its_thread(processes):
    with FakePlanner([{"content": "你好！"}]) as planner:
        process = processes(planner)
        conv = process.agent.start()
        process.agent.send(conv.id, "你好")
        assert len(process.agent.thread(conv.id)) == 2
        process.agent.delete(conv.id)
        assert process.agent.thread(conv.id) == []
        assert conv.id not in [c.id for c in process.store.list()]


def test_deleting_an_agent_conversation_in_the_web_chat_deletes_its_thread(processes, backend):
    from bot.service import ConversationService

    with FakePlanner([{"content": "你好！"}]) as planner:
        process = processes(planner)
        conv = process.agent.start()
        process.agent.send(conv.id, "你好")
        assert len(process.agent.thread(conv.id)) == 2
        ConversationService(backend, process.store).delete(conv.id)  # what the web chat's delete button calls
        assert process.agent.thread(conv.id) == []
        assert conv.id not in [c.id for c in process.store.list()]


def test_checkpointer_sits_in_the_store_database(tmp_path):
    import sqlite3

    url = f"sqlite:///{tmp_path / 'remoteglm.db'}"
    store = ConversationStore(url, tmp_path / "images")
    saver = open_checkpointer(url)
    try:
        tables = {row[0] for row in sqlite3.connect(tmp_path / "remoteglm.db").execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"conversation", "message", "checkpoints", "writes"} <= tables
    finally:
        saver.conn.close()
        store.close()
    with pytest.raises(ValueError, match="sqlite:/// or postgresql://"):
        open_checkpointer("mysql://user@host/db")
    assert type(open_checkpointer("sqlite://")).__name__ == "InMemorySaver"


def test_a_checkpoint_url_of_its_own(tmp_path, backend):
    store = ConversationStore(f"sqlite:///{tmp_path / 'remoteglm.db'}", tmp_path / "images")
    with FakePlanner([{"content": "好的。"}]) as planner:
        settings = AgentSettings(agent_checkpoint_url=f"sqlite:///{tmp_path / 'threads.db'}",
                                 planner_model=FakePlanner.MODEL, planner_base_url=planner.url, planner_api_key="k")
        with RemoteSensingAgent(build_planner(settings), backend, store, settings) as agent:
            conv = agent.start()
            agent.send(conv.id, "你好")
    import sqlite3

    with sqlite3.connect(tmp_path / "threads.db") as threads, sqlite3.connect(tmp_path / "remoteglm.db") as main:
        assert threads.execute("SELECT count(*) FROM checkpoints WHERE thread_id = ?", (conv.id,)).fetchone()[0] > 0
        assert not main.execute("SELECT name FROM sqlite_master WHERE name = 'checkpoints'").fetchall()
    store.close()


def test_agent_messages_keep_their_store_ids():
    # planner_messages marks each stored turn with its id, so the thread can say which stored turns it holds.
    from datetime import datetime

    from storage import ConversationView
    from storage.repository import MessageView

    now = datetime.now()
    conv = ConversationView("c", "", None, {}, now, now, [
        MessageView(1, "user", "q", "complete", [], now), MessageView(2, "assistant", "a", "complete", [], now),
        MessageView(3, "assistant", "", "error", [], now)])
    messages = RemoteSensingAgent.planner_messages(conv)
    assert [(type(m), m.additional_kwargs["remoteglm_message_id"]) for m in messages] == [(HumanMessage, 1),
                                                                                          (AIMessage, 2)]
    assert [m.content for m in RemoteSensingAgent.planner_messages(conv, after=1)] == ["a"]
    assert not any(isinstance(m, ToolMessage) for m in messages)
