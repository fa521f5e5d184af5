"""The agent's `land_use_map` tool inside a real `create_agent` graph: a scripted planner calls it on a stored
GeoTIFF mosaic of UCM test tiles; the map is computed once per scene and answers a where-question."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from bot.agent import AgentSettings, RemoteSensingAgent
from model_adapter import GenerationParams, load_backend
from settings import DEFAULT_MODEL_DIR
from storage import ConversationStore
from tests.mosaics import mosaic, write_geotiff

pytestmark = pytest.mark.skipif(not (DEFAULT_MODEL_DIR / "model.safetensors").exists(),
                                reason="shipped mini model absent")


class Planner(BaseChatModel):
    steps: list[Any]

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools, **kwargs):
        return self

    def _generate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        step = self.steps.pop(0)
        return ChatResult(generations=[ChatGeneration(message=step(messages) if callable(step) else step)])


def tool_call(name: str, id: str, **args) -> AIMessage:
    return AIMessage("", tool_calls=[{"name": name, "args": args, "id": id, "type": "tool_call"}])


def echo_tool(messages) -> AIMessage:
    return AIMessage(next(m for m in reversed(messages) if isinstance(m, ToolMessage)).content)


def test_land_use_map_tool_classifies_the_scene_once_and_answers_where(tiny_glm4v_dir, tmp_path):
    backend = load_backend(model=str(tiny_glm4v_dir), device="cpu", max_new_tokens=6)
    store = ConversationStore(f"sqlite:///{tmp_path / 'agent.db'}", tmp_path / "images")
    scene = write_geotiff(tmp_path / "port.tif", mosaic([["harbor", "storagetanks"], ["storagetanks", "forest"]]),
                          nodata=None).read_bytes()
    planner = Planner(steps=[tool_call("land_use_map", "a"), echo_tool,
                             tool_call("land_use_map", "b", question="哪里有储罐？"), echo_tool])
    agent = RemoteSensingAgent(planner, backend, store, AgentSettings(max_new_tokens=6),
                               params=GenerationParams(max_new_tokens=6, do_sample=False))
    conv = agent.start()
    first = agent.send(conv.id, "这幅影像里有哪些地物？", image=scene, image_name="port.tif")
    assert [s.tool for s in first.steps] == ["land_use_map"]
    assert first.text.startswith("共 4 个分块（2 行 × 2 列") and "储罐" in first.text
    kept = store.get(conv.id).settings["landuse_agent"]
    second = agent.send(conv.id, "哪里有储罐？")
    assert "储罐出现在 2 个分块中" in second.text and "第1行第2列" in second.text
    assert store.get(conv.id).settings["landuse_agent"] == kept  # not recomputed
    store.close()
