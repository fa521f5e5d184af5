"""分块分析 in the web chat (handlers and over HTTP) and `/tiles` in the terminal chat, on a mosaic of UCM test
tiles; the chat model is the tiny GLM-4.1V, the scene classifier the shipped mini (skipped while it is absent)."""

from __future__ import annotations

import io

import pytest
import rasterio
from PIL import Image

from settings import DEFAULT_MODEL_DIR
from tests.mosaics import mosaic
from ui.cli import TerminalChat
from ui.landuse import LandUseHandlers

pytestmark = pytest.mark.skipif(not (DEFAULT_MODEL_DIR / "model.safetensors").exists(),
                                reason="shipped mini model absent")


@pytest.fixture(scope="module")
def scene_png(tmp_path_factory):
    path = tmp_path_factory.mktemp("scene") / "harbor-mosaic.png"
    Image.fromarray(mosaic([["harbor", "storagetanks"], ["forest", "harbor"]])).save(path)
    return path


def test_analyze_posts_the_map_into_the_chat_and_exports_files(service, scene_png, tmp_path):
    h = LandUseHandlers(service, export_dir=tmp_path / "exports")
    seen = []
    conv, overlay, files, notice = h.analyze(str(scene_png), "", None, "zh",
                                             progress=lambda value, desc: seen.append(value))
    assert notice == "" and seen[-1] == (4, 4)
    messages = service.history(conv).messages
    assert [m.role for m in messages] == ["user", "assistant"]
    assert "港口" in messages[1].text and messages[1].images[0].path == __import__("pathlib").Path(overlay)
    assert sorted(p.rsplit(".", 1)[1] for p in files) == ["geojson", "png", "tif"]
    with rasterio.open(next(p for p in files if p.endswith(".tif"))) as ds:
        assert ds.read(1).shape == (2, 2)

    assert h.overlay_of(conv) == overlay  # what the panel shows again when the conversation is reopened
    assert h.overlay_of(service.start().id) is None

    highlight, notice = h.ask_map("哪里有储罐？", conv, "zh")
    assert notice == "" and highlight is not None
    answer = service.history(conv).messages[-1]
    assert "储罐" in answer.text and answer.images  # the highlight is stored with the answer

    # a click on the top-left tile asks the chat model about that tile
    assert h.ask_tile(10, 10, conv, "zh") == "已就第1行第1列的分块向模型提问。"
    asked, answered = service.history(conv).messages[-2:]
    assert asked.images[0].width == 256 and answered.role == "assistant" and answered.status == "complete"
    from bot.landuse_store import load_map, tile_crop

    crop, _ = tile_crop(load_map(service.store, conv), 10, 10)
    assert asked.images[0].path.read_bytes() == __import__("bot.landuse_export").landuse_export.png_bytes(crop)


def test_bad_input_is_a_notice_and_creates_nothing(service, tmp_path):
    h = LandUseHandlers(service)
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"II*\x00" + b"\x00" * 50)
    before = len(service.conversations())
    conv, overlay, files, notice = h.analyze(str(junk), "", None, "zh")
    assert conv is None and overlay is None and "损坏" in notice
    assert "正数" in h.analyze(str(junk), "abc", None, "zh")[3]
    assert len(service.conversations()) == before
    assert h.ask_map("哪里有储罐？", None, "zh")[1].startswith("此对话还没有")


def test_tiles_command_in_the_terminal_chat(service, scene_png, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    answers = iter(["", f"/tiles {scene_png}", "港口占多大面积？", "哪里有港口？", "stop"])
    chat = TerminalChat(service, out=out, input_fn=lambda prompt: next(answers))
    assert chat.run() == 0  # Enter skips the image prompt
    text = out.getvalue()
    assert "分块分析 4/4" in text and "共 4 个分块" in text
    assert "港口占已分类面积的" in text and "港口出现在" in text
    folder = tmp_path / f"landuse-{chat.state.conversation_id[:8]}"
    assert sorted(p.suffix for p in folder.iterdir()) == [".geojson", ".png", ".tif"]
    assert [m.role for m in service.history(chat.state.conversation_id).messages] == ["user", "assistant"] * 3


def test_landuse_endpoint_of_the_web_chat(ui_backend, scene_png, tmp_path):
    from gradio_client import Client, handle_file

    from settings import Settings
    from tests.ui.conftest import free_port, make_service
    from ui.web import build_demo, launch_options

    settings = Settings(data_dir=tmp_path / "data", max_new_tokens=12, port=free_port())
    service = make_service(ui_backend, settings)
    demo = build_demo(service, settings)
    demo.queue()
    demo.launch(prevent_thread_lock=True, **launch_options(settings))
    try:
        client = Client(f"http://127.0.0.1:{settings.port}", verbose=False)
        chat, overlay, files, notice = client.predict(handle_file(str(scene_png)), "", "zh", "", api_name="/landuse")
        assert notice == "" and len(files) == 3 and overlay
        assert chat[-1]["role"] == "assistant" and any(
            "港口" in part.get("text", "") for part in chat[-1]["content"] if isinstance(part, dict))
        stored = service.conversations()[0]
        assert service.store.get(stored.id).settings["landuse"]["map"]["rows"] == 2
    finally:
        demo.close()
