"""A 2 MB multi-band TIFF does not bypass the image limits (issue 15, item 3), on every path a user can send it.

The issue's bomb (8 bands, 16-bit, 10 000 x 10 000, deflate) gets 413 from the API (Pillow cannot open it, so the
old header check let it through to a full decode), a clear bilingual error from the conversation service that
the web and terminal chats call, and from the agent; nothing is stored and no pixel is read (rasterio's read is
made to fail: a read would surface as a 400 or a traceback, not as these refusals)."""

from __future__ import annotations

import base64
import io

import httpx
import pytest
from langchain_core.language_models import BaseChatModel

from bot.agent import AgentSettings, RemoteSensingAgent
from bot.service import ConversationService
from imagery.header import ImageTooLarge
from server import ServerConfig, create_app
from settings import Settings
from storage import ConversationStore
from testing.images import multiband_bomb, ramp_scene
from tests.server.running import RunningServer, ScriptedBackend


def image_body(data: bytes) -> dict:
    url = "data:image/tiff;base64," + base64.b64encode(data).decode()
    return {"model": "remoteglm", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "这是什么？"}, {"type": "image_url", "image_url": {"url": url}}]}]}


def stored_files(root) -> list:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def test_the_api_answers_413_to_the_bomb_without_reading_it(tmp_path, no_pixel_reads):
    backend = ScriptedBackend(["不"])
    with RunningServer(create_app(backend, Settings(data_dir=tmp_path), ServerConfig())) as running:
        response = httpx.post(running.url + "/chat/completions", json=image_body(multiband_bomb()), timeout=60)
    assert response.status_code == 413, response.text[:500]
    error = response.json()["error"]
    assert error["code"] == "image_too_large" and error["param"] == "messages.0.content.1.image_url"
    # 100 MP is the default max_input_pixels: the bands and bit depth are what make it too large.
    assert "8 bands x 16-bit needs 1,600 MB to decode, over the 400 MB limit" in error["message"]
    assert backend.seen == []


def test_the_api_counts_bands_and_depth_and_still_reads_allowed_tiffs(tmp_path):
    backend = ScriptedBackend(["好"])
    config = ServerConfig(max_input_pixels=500_000)  # a 2 MB decode budget
    with RunningServer(create_app(backend, Settings(data_dir=tmp_path), config)) as running:
        deep = httpx.post(running.url + "/chat/completions", json=image_body(ramp_scene(600, 600, 4)), timeout=60)
        assert deep.status_code == 413 and deep.json()["error"]["code"] == "image_too_large"  # 2.88 MB
        assert "4 bands x 16-bit" in deep.json()["error"]["message"]
        small = httpx.post(running.url + "/chat/completions", json=image_body(ramp_scene(400, 300, 4)), timeout=60)
        assert small.status_code == 200, small.text[:500]  # 0.96 MB: a GDAL-only TIFF, decoded
        grey = httpx.post(running.url + "/chat/completions", json=image_body(ramp_scene(600, 600, 1, "uint8")),
                          timeout=60)
        assert grey.status_code == 200  # the same 600 x 600 pixels in one 8-bit band pass
    assert [m[0].images[0].size for m in backend.seen] == [(400, 300), (600, 600)]


def test_the_chat_service_refuses_the_bomb_and_stores_nothing(tmp_path, no_pixel_reads):
    settings = Settings(data_dir=tmp_path)
    store = ConversationStore.from_settings(settings)
    service = ConversationService(ScriptedBackend(["不"]), store, settings)
    conv = service.start()
    with pytest.raises(ImageTooLarge) as refused:
        list(service.send(conv.id, "这是什么？", image=multiband_bomb(), image_name="bomb.tif"))
    message = str(refused.value)
    assert message.startswith("图像过大") and "解码需要 1,600 MB" in message and "1,600 MB to decode" in message
    assert store.get(conv.id).messages == [] and stored_files(store.images.root) == []


class PlannerThatMustNotRun(BaseChatModel):
    @property
    def _llm_type(self) -> str:
        return "must-not-run"

    def bind_tools(self, tools, **kwargs):
        return self

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        raise AssertionError("the planner ran for a refused image")


def test_the_agent_refuses_the_bomb_before_storing_or_planning(tmp_path, no_pixel_reads):
    store = ConversationStore(f"sqlite:///{tmp_path / 'agent.db'}", tmp_path / "images", max_pixels=256 * 256)
    agent = RemoteSensingAgent(PlannerThatMustNotRun(), ScriptedBackend(["不"]), store, AgentSettings())
    conv = agent.start()
    with pytest.raises(ImageTooLarge, match="1,600 MB"):
        agent.send(conv.id, "这张图的基本信息是什么？", image=multiband_bomb(), image_name="bomb.tif")
    assert store.get(conv.id).messages == [] and stored_files(tmp_path / "images") == []
    assert not store.get(conv.id).settings["agent"].get("scene")  # no scene kept for it


def test_a_png_over_pillows_own_limit_is_413_too(tmp_path):
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(buffer, "PNG")  # ~50 KB declaring 400 million pixels
    backend = ScriptedBackend(["不"])
    with RunningServer(create_app(backend, Settings(data_dir=tmp_path), ServerConfig())) as running:
        response = httpx.post(running.url + "/chat/completions", json=image_body(buffer.getvalue()), timeout=60)
    assert (response.status_code, response.json()["error"]["code"]) == (413, "image_too_large")
    assert backend.seen == []
