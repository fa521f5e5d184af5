"""ChatRemoteGLM: LangChain's standard unit tests plus image-content and streaming checks on a real tiny model."""

import asyncio
import base64

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_tests.unit_tests import ChatModelUnitTests

from bot.chat_model import ChatRemoteGLM, to_chat_messages
from model_adapter import load_backend

QUESTION = "这张遥感图像展现了什么场景？"


class RemoteGLMCapabilities:
    """What ChatRemoteGLM claims to LangChain's standard suites (unit here, integration in test_standard_suites)."""

    @property
    def has_tool_calling(self):
        return False

    @property
    def has_structured_output(self):
        return False

    @property
    def supports_image_inputs(self):
        return True

    @property
    def supports_image_urls(self):
        return False  # data: / file: URLs and paths yes; no network fetch is promised


class TestChatRemoteGLMStandard(RemoteGLMCapabilities, ChatModelUnitTests):
    @property
    def chat_model_class(self):
        return ChatRemoteGLM

    @property
    def chat_model_params(self):
        return {"model": "checkpoints/remoteglm-mini", "temperature": 0}

    @property
    def init_from_env_params(self):
        env = {"REMOTEGLM_MODEL": "/models/GLM-4.1V-9B-Thinking", "REMOTEGLM_OPENAI_API_KEY": "sk-env"}
        return env, {}, {"model": "/models/GLM-4.1V-9B-Thinking", "api_key": "sk-env"}


    @property
    def returns_usage_metadata(self):
        return True


@pytest.fixture(scope="module")
def llm(tiny_glm4v_dir):
    return ChatRemoteGLM(backend=load_backend(model=str(tiny_glm4v_dir)), model=str(tiny_glm4v_dir),
                         temperature=0, max_tokens=10)


def _blocks(jpg: bytes):
    b64 = base64.b64encode(jpg).decode()
    return {
        "v1 base64": {"type": "image", "base64": b64, "mime_type": "image/jpeg"},
        "legacy base64": {"type": "image", "source_type": "base64", "data": b64, "mime_type": "image/jpeg"},
        "data url": {"type": "image", "url": f"data:image/jpeg;base64,{b64}"},
        "openai image_url": {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{b64}"}},
    }


def test_every_image_block_form_gives_the_same_image(airplane_jpg, tmp_path):
    path = tmp_path / "scene.jpg"
    path.write_bytes(airplane_jpg)
    forms = list(_blocks(airplane_jpg).values()) + [
        {"type": "image", "url": path.as_uri()},
        {"type": "image_url", "image_url": {"url": str(path)}},
    ]
    images = [to_chat_messages([HumanMessage(content=[form, {"type": "text", "text": "q"}])])[0].images[0]
              for form in forms]
    assert all(img.tobytes() == images[0].tobytes() for img in images)


def test_roles_are_mapped_and_tool_messages_refused():
    converted = to_chat_messages([SystemMessage("s"), HumanMessage("u"), AIMessage("a")])
    assert [m.role for m in converted] == ["system", "user", "assistant"]
    from langchain_core.messages import ToolMessage

    with pytest.raises(ValueError, match="tool"):
        to_chat_messages([ToolMessage("x", tool_call_id="1")])


def test_invoke_stream_batch_and_async_agree(llm, airplane_jpg):
    message = HumanMessage(content=[_blocks(airplane_jpg)["v1 base64"], {"type": "text", "text": QUESTION}])
    result = llm.invoke([message])
    assert result.content and result.usage_metadata["output_tokens"] >= 1
    assert result.usage_metadata["total_tokens"] == (
        result.usage_metadata["input_tokens"] + result.usage_metadata["output_tokens"])
    chunks = list(llm.stream([message]))
    assert len([c for c in chunks if c.content]) >= 2
    assert "".join(c.content for c in chunks) == result.content
    assert [r.content for r in llm.batch([[message], [message]])] == [result.content] * 2
    assert asyncio.run(llm.ainvoke([message])).content == result.content


def test_stop_sequences_cut_the_answer(llm, airplane_jpg):
    message = HumanMessage(content=[_blocks(airplane_jpg)["v1 base64"], {"type": "text", "text": QUESTION}])
    full = llm.invoke([message]).content
    stop = full[3:5]
    assert stop
    cut = llm.invoke([message], stop=[stop]).content
    assert cut == full[: full.index(stop)]
    assert "".join(c.content for c in llm.stream([message], stop=[stop])) == cut
