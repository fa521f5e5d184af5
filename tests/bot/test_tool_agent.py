"""RemoteGLM as a LangChain tool and the multi-turn remote-sensing agent, inside real `create_agent` agents.

No LLM is reachable here, so the planner is a scripted chat model that emits tool calls; the tools run the tiny
GLM-4V checkpoint on real image operations (crops, tiles, GeoTIFF tags) and the turns go through real storage.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from PIL import Image, TiffImagePlugin

from bot.agent import AgentSettings, RemoteSensingAgent, build_planner
from bot.service import ServiceError
from bot.tool import RemoteGLMTool
from imagery import ImageError, load_image
from imagery.probe import read_metadata
from model_adapter import ChatMessage, GenerationParams, load_backend
from storage import ConversationStore

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
GREEDY = GenerationParams(max_new_tokens=6, do_sample=False)
QUESTION = "这张遥感图像展现了什么场景？"
MOSAIC = ["rsicd/storagetanks_1.jpg", "ucm/harbor_1092.jpg", "ucm/airplane_192.jpg", "ucm/storagetanks_1992.jpg"]


class ScriptedPlanner(BaseChatModel):
    """A tool-calling chat model that plays back `steps`: AIMessages, or functions of the messages it is shown."""

    steps: list[Any]
    seen: list[list[BaseMessage]] = []
    bound: list[list[str]] = []

    @property
    def _llm_type(self) -> str:
        return "scripted-planner"

    def bind_tools(self, tools, **kwargs):
        self.bound.append([t.name if hasattr(t, "name") else t["name"] for t in tools])
        return self

    def _generate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        self.seen.append(list(messages))
        step = self.steps.pop(0)
        message = step(messages) if callable(step) else step
        return ChatResult(generations=[ChatGeneration(message=message)])


def call(name: str, id: str, **args) -> AIMessage:
    return AIMessage("", tool_calls=[{"name": name, "args": args, "id": id, "type": "tool_call"}])


def last_tool_result(messages: list[BaseMessage]) -> str:
    return next(m.content for m in reversed(messages) if isinstance(m, ToolMessage))


@pytest.fixture(scope="module")
def backend(tiny_glm4v_dir):
    return load_backend(model=str(tiny_glm4v_dir), device="cpu")


def answer(backend, image: Image.Image, question: str) -> str:
    return backend.generate([ChatMessage("user", question, [image])], GREEDY).text.strip()


def fixture_image(name: str) -> Image.Image:
    return load_image((FIXTURES / name).read_bytes()).resize((256, 256))


def geotiff(images: list[Image.Image]) -> bytes:
    """A 512x512 2x2 mosaic as a GeoTIFF: UTM zone 50N (EPSG:32650), 10 m pixels, origin (500000, 4000000)."""
    scene = Image.new("RGB", (512, 512))
    for i, image in enumerate(images):
        scene.paste(image, ((i % 2) * 256, (i // 2) * 256))
    tags = TiffImagePlugin.ImageFileDirectory_v2()
    tags[33550] = (10.0, 10.0, 0.0)
    tags[33922] = (0.0, 0.0, 0.0, 500000.0, 4000000.0, 0.0)
    tags[34735] = (1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 32650)
    buffer = io.BytesIO()
    scene.save(buffer, "TIFF", tiffinfo=tags)
    return buffer.getvalue()


# --- image operations -----------------------------------------------------------------------------------------------
def test_geotiff_metadata_from_tags():
    meta = read_metadata(geotiff([Image.new("RGB", (256, 256))] * 4))
    assert (meta["format"], meta["width"], meta["height"], meta["bands"]) == ("TIFF", 512, 512, 3)
    geo = meta["geo"]
    assert geo["crs"] == "EPSG:32650" and geo["pixel_size"] == [10.0, 10.0]
    assert geo["bounds"] == [500000.0, 4000000.0 - 5120, 500000.0 + 5120, 4000000.0]
    assert read_metadata((FIXTURES / "ucm/airplane_192.jpg").read_bytes())["format"] == "JPEG"


# --- the tool -------------------------------------------------------------------------------------------------------
def test_tool_takes_paths_urls_and_base64(backend, tmp_path, airplane_jpg):
    path = tmp_path / "airplane.jpg"
    path.write_bytes(airplane_jpg)
    tool = RemoteGLMTool(backend=backend, params=GREEDY)
    expected = backend.generate([ChatMessage("user", QUESTION, [load_image(airplane_jpg)])], GREEDY).text
    b64 = base64.b64encode(airplane_jpg).decode()
    for image in (str(path), path.as_uri(), f"data:image/jpeg;base64,{b64}", b64):
        assert tool.invoke({"image": image, "question": QUESTION}) == expected
    assert "cannot use this image" in tool.invoke({"image": str(tmp_path / "missing.jpg"), "question": QUESTION})
    fenced = RemoteGLMTool(backend=backend, allowed_dir=tmp_path / "elsewhere")
    assert "only allowed under" in fenced.invoke({"image": str(path), "question": QUESTION})
    schema = tool.tool_call_schema.model_json_schema()
    assert set(schema["required"]) == {"image", "question"}
    assert "remote-sensing" in tool.description and "Chinese or English" in tool.description


def test_tool_inside_a_create_agent_agent(backend, tmp_path, airplane_jpg):
    path = tmp_path / "airplane.jpg"
    path.write_bytes(airplane_jpg)
    planner = ScriptedPlanner(steps=[
        call("remoteglm", "c1", image=str(path), question=QUESTION),
        lambda messages: AIMessage(f"RemoteGLM 说：{last_tool_result(messages)}"),
    ])
    agent = create_agent(planner, tools=[RemoteGLMTool(backend=backend, params=GREEDY)])
    result = agent.invoke({"messages": [HumanMessage(f"{path} 是什么地方？")]})
    expected = backend.generate([ChatMessage("user", QUESTION, [load_image(airplane_jpg)])], GREEDY).text
    assert planner.bound and all(names == ["remoteglm"] for names in planner.bound)
    assert [type(m).__name__ for m in result["messages"]] == ["HumanMessage", "AIMessage", "ToolMessage", "AIMessage"]
    assert result["messages"][2].content == expected
    assert result["messages"][-1].content == f"RemoteGLM 说：{expected}"


# --- the agent -------------------------------------------------------------------------------------------------------
@pytest.fixture
def store(tmp_path):
    # The chat copy of images is capped at 256x256 so that the 512x512 scene must be kept apart for tiling.
    store = ConversationStore(f"sqlite:///{tmp_path / 'agent.db'}", tmp_path / "images", max_pixels=256 * 256)
    yield store
    for agent in OPENED:
        agent.close()
    OPENED.clear()
    store.close()


OPENED: list[RemoteSensingAgent] = []  # agents of the running test, closed with its store


def make_agent(planner, backend, store, **overrides) -> RemoteSensingAgent:
    settings = AgentSettings(**{"max_image_pixels": 256 * 256, "tile_size": 256, "max_tiles": 16,
                                "max_new_tokens": 6, **overrides})
    OPENED.append(RemoteSensingAgent(planner, backend, store, settings, params=GREEDY))
    return OPENED[-1]


def test_multi_turn_agent_with_metadata_tiles_zoom_and_storage(backend, store):
    tiles = [fixture_image(name) for name in MOSAIC]
    scene = geotiff(tiles)
    tanks = "图中有储罐吗？"
    on_tiles = [answer(backend, t, tanks) for t in tiles]
    planner = ScriptedPlanner(steps=[
        # turn 1: metadata
        call("image_info", "t1"),
        lambda m: AIMessage(f"图像信息：{last_tool_result(m)}"),
        # turn 2: which areas have storage tanks -> ask every tile
        call("ask_tiles", "t2", question=tanks),
        lambda m: AIMessage(f"逐块结果：\n{last_tool_result(m)}"),
        # turn 3: zoom into the top-left quarter, ask about it
        call("zoom", "t3a", box=[0, 0, 0.5, 0.5]),
        call("ask_image", "t3b", question=QUESTION),
        lambda m: AIMessage(f"左上角：{last_tool_result(m)}"),
    ])
    agent = make_agent(planner, backend, store)
    conv = agent.start()

    first = agent.send(conv.id, "这张图的基本信息是什么？", image=scene, image_name="port.tif")
    assert first.status == "complete" and [s.tool for s in first.steps] == ["image_info"]
    assert "512×512" in first.text and "EPSG:32650" in first.text and "bounds [500000" in first.text

    second = agent.send(conv.id, "哪几块区域有储罐？")
    result = second.steps[0].result
    assert result.startswith("共 4 块 tiles (2 行 rows × 2 列 cols)")
    for (r, c), expected in zip([(1, 1), (1, 2), (2, 1), (2, 2)], on_tiles):
        assert f"[r{r}c{c}]" in result and f": {expected}" in result  # the full-resolution tile, not the 256 copy
    assert "map [500000.0, 3997440.0, 502560.0, 4000000.0]" in result
    # the planner saw turn one (question, its tool call and result, the answer) when planning turn two
    turn2_input = planner.seen[2]
    assert [type(m).__name__ for m in turn2_input[1:]] == [
        "HumanMessage", "AIMessage", "ToolMessage", "AIMessage", "HumanMessage"]
    assert "基本信息" in turn2_input[1].content and turn2_input[2].tool_calls[0]["name"] == "image_info"
    assert turn2_input[4].content == first.text
    assert "current image: 512×512 px]" in turn2_input[5].content

    third = agent.send(conv.id, "放大左上角看看。")
    assert [s.tool for s in third.steps] == ["zoom", "ask_image"]
    assert third.text == f"左上角：[box [0, 0, 256, 256] (map [500000.0, 3997440.0, 502560.0, 4000000.0])] " \
                         f"{answer(backend, tiles[0], QUESTION)}"

    # A new process (or another replica) on the same storage continues with the zoomed view.
    later = ScriptedPlanner(steps=[call("ask_image", "t4", question=tanks), lambda m: AIMessage(last_tool_result(m))])
    fourth = make_agent(later, backend, store).send(conv.id, "这里有储罐吗？")
    assert fourth.text.endswith(on_tiles[0]) and "box [0, 0, 256, 256]" in fourth.text
    assert "view [0, 0, 256, 256]" in later.seen[0][-1].content

    stored = store.get(conv.id)
    assert [m.role for m in stored.messages] == ["user", "assistant"] * 4
    assert all(m.status == "complete" for m in stored.messages)
    assert stored.messages[0].images[0].width == 256  # the chat copy; the scene is kept at full size for tiles
    assert stored.messages[-1].text == fourth.text and stored.messages[-1].latency_ms is not None
    assert stored.title.startswith("这张图的基本信息")

    # A new image replaces the scene and resets the view.
    reset = ScriptedPlanner(steps=[call("image_info", "t5"), lambda m: AIMessage(last_tool_result(m))])
    fifth = make_agent(reset, backend, store).send(conv.id, "换一张。",
                                                    image=(FIXTURES / "ucm/harbor_1092.jpg").read_bytes())
    assert "JPEG 256×256" in fifth.text and "whole scene" in fifth.text and "not georeferenced" in fifth.text


def test_tool_errors_go_back_to_the_planner(backend, store, airplane_jpg):
    planner = ScriptedPlanner(steps=[call("zoom", "e1", box=[0, 0, 3, 3]),
                                     lambda m: AIMessage(f"出错了：{last_tool_result(m)}")])
    agent = make_agent(planner, backend, store)
    conv = agent.start()
    reply = agent.send(conv.id, "放大一个点。", image=airplane_jpg)
    assert reply.status == "complete" and "at least 8 pixels" in reply.text


def test_tools_without_an_image_say_so(backend, store):
    planner = ScriptedPlanner(steps=[call("ask_image", "n1", question=QUESTION),
                                     lambda m: AIMessage(last_tool_result(m))])
    agent = make_agent(planner, backend, store)
    reply = agent.send(agent.start().id, "图里有什么？")
    assert "no image in this conversation" in reply.text


def test_failures_are_stored_and_bad_input_stores_nothing(backend, store):
    def broken(messages):
        raise RuntimeError("planner endpoint down")

    agent = make_agent(ScriptedPlanner(steps=[broken]), backend, store)
    conv = agent.start()
    with pytest.raises(ImageError):
        agent.send(conv.id, "看图", image=b"not an image")
    with pytest.raises(ServiceError):
        agent.send(conv.id, "   ")
    assert store.get(conv.id).messages == []
    reply = agent.send(conv.id, "你好")
    assert reply.status == "error" and "planner endpoint down" in reply.error
    stored = store.get(conv.id).messages
    assert [(m.role, m.status) for m in stored] == [("user", "complete"), ("assistant", "error")]

    looping = ScriptedPlanner(steps=[call("image_info", f"l{i}") for i in range(20)])
    reply = make_agent(looping, backend, store, agent_max_steps=2).send(conv.id, "一直调用工具")
    assert reply.status == "error" and "gave up after 2 steps" in reply.error


def test_planner_from_settings_is_an_openai_compatible_chat_model():
    from langchain_openai import ChatOpenAI

    planner = build_planner(AgentSettings(planner_model="qwen2.5-72b-instruct",
                                          planner_base_url="http://127.0.0.1:9/v1", planner_api_key="k"))
    assert isinstance(planner, ChatOpenAI)
    assert planner.model_name == "qwen2.5-72b-instruct" and planner.openai_api_base == "http://127.0.0.1:9/v1"


def test_stream_reports_each_tool_step_and_a_closed_stream_is_interrupted(backend, store, airplane_jpg):
    planner = ScriptedPlanner(steps=[
        AIMessage("", tool_calls=[{"name": "image_info", "args": {}, "id": "s1", "type": "tool_call"},
                                  {"name": "ask_image", "args": {"question": QUESTION}, "id": "s2",
                                   "type": "tool_call"}]),
        lambda m: AIMessage("好了。"),
        call("image_info", "s3"),
    ])
    agent = make_agent(planner, backend, store)
    conv = agent.start()
    events = list(agent.stream(conv.id, "看看这张图。", image=airplane_jpg))
    assert [e.kind for e in events] == ["user", "step", "step", "done"]
    assert sorted(e.step.tool for e in events[1:3]) == ["ask_image", "image_info"]
    assert events[-1].reply.text == "好了。" and len(events[-1].reply.steps) == 2

    turn = agent.stream(conv.id, "再看一次。")
    assert next(turn).kind == "user" and next(turn).kind == "step"
    turn.close()  # the user pressed stop while the planner was still working
    assert [(m.role, m.status) for m in store.get(conv.id).messages][-2:] == [("user", "complete"),
                                                                              ("assistant", "interrupted")]
