"""RemoteGLMChatMessageHistory on real SQLite (and PostgreSQL when REMOTEGLM_TEST_POSTGRES_URL is set): round trip
with images, shared with the web chat's store."""

import base64
import io

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from PIL import Image

from bot.history import RemoteGLMChatMessageHistory
from storage import ConversationStore
from storage.repository import NotFound


@pytest.fixture
def store(database_url, tmp_path):
    store = ConversationStore(database_url, tmp_path / "images", max_pixels=256 * 256)
    yield store
    store.close()


def _png_b64(color=(10, 120, 30)) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (32, 24), color).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_round_trip_with_image_survives_reopen(store, database_url, tmp_path):
    history = RemoteGLMChatMessageHistory(store, title="机场")
    history.add_messages([
        HumanMessage(content=[{"type": "text", "text": "这是什么场景？"},
                              {"type": "image", "base64": _png_b64(), "mime_type": "image/png"}]),
        AIMessage("机场"),
    ])
    reopened = ConversationStore(database_url, tmp_path / "images")
    same = RemoteGLMChatMessageHistory(reopened, history.conversation_id)
    human, ai = same.messages
    assert human.content[0] == {"type": "text", "text": "这是什么场景？"}
    image = Image.open(io.BytesIO(base64.b64decode(human.content[1]["base64"])))
    assert image.size == (32, 24) and image.getpixel((0, 0)) == (10, 120, 30)
    assert ai.content == "机场"
    # the web chat's sidebar reads the same conversation
    assert [c.id for c in reopened.list()] == [history.conversation_id]
    assert [m.role for m in reopened.get(history.conversation_id).messages] == ["user", "assistant"]
    reopened.close()


def test_continue_a_stored_conversation_and_clear(store):
    conv = store.create(title="web")
    store.append_message(conv.id, "user", "你好")
    history = RemoteGLMChatMessageHistory(store, conv.id)
    history.add_ai_message("你好！")
    assert [m.content for m in history.messages] == ["你好", "你好！"]
    history.clear()
    assert history.messages == []
    assert store.get(conv.id).title == "web"


def test_unknown_id_and_tool_messages_are_refused(store):
    with pytest.raises(NotFound):
        RemoteGLMChatMessageHistory(store, "nope")
    history = RemoteGLMChatMessageHistory(store)
    from langchain_core.messages import ToolMessage
    with pytest.raises(ValueError, match="tool"):
        history.add_messages([ToolMessage("x", tool_call_id="1")])
    assert history.messages == []


def test_a_bad_message_in_a_batch_stores_none_of_it(store):
    from model_adapter import ImageError

    history = RemoteGLMChatMessageHistory(store)
    with pytest.raises(ValueError, match="unsupported content block"):
        history.add_messages([HumanMessage("第一条"), HumanMessage(content=[{"type": "audio", "base64": "AAAA"}])])
    with pytest.raises(ImageError):
        history.add_messages([HumanMessage("第一条"), HumanMessage(content=[
            {"type": "image", "base64": base64.b64encode(b"not an image at all").decode(), "mime_type": "image/png"}])])
    assert history.messages == []
