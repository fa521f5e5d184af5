"""LangChain's standard suites on the shipped RemoteGLM-mini: ChatModelIntegrationTests on ChatRemoteGLM, and
ToolsUnitTests / ToolsIntegrationTests on RemoteGLMTool. (ChatModelUnitTests runs in test_chat_model.py.)

Everything runs offline: the suite's test_image_inputs gets a local UCM scene where it would download its image
from GitHub (standard tests may not be overridden), and the internet-URL form is skipped with the reason. Tool
calling and structured output are not claimed (RemoteGLM is a perception model behind a tool), so the suite skips
those tests itself.

    python -m pytest tests/bot/test_standard_suites.py -q -rs
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from types import SimpleNamespace

import pytest
from langchain_core.messages import HumanMessage
from langchain_tests.integration_tests import ChatModelIntegrationTests, ToolsIntegrationTests
from langchain_tests.integration_tests import chat_models as standard_chat_tests
from langchain_tests.unit_tests import ToolsUnitTests

from bot.chat_model import ChatRemoteGLM
from bot.tool import RemoteGLMTool
from PIL import Image

from model_adapter import GenerationParams, load_backend
from settings import DEFAULT_MODEL_DIR
from tests.bot.test_chat_model import RemoteGLMCapabilities

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
AIRPLANE = EXAMPLES / "ucm_airplane_191.jpg"
HARBOR = EXAMPLES / "ucm_harbor_1091.jpg"
MINI = str(DEFAULT_MODEL_DIR)
SUITE_IMAGE_URL = ("https://raw.githubusercontent.com/langchain-ai/docs/4d11d08b6b0e210bd456943f7a22febbd168b543/"
                   "src/images/agentic-rag-output.png")
# The suites' async tests carry no asyncio marker (langchain runs them under asyncio_mode=auto): mark the classes,
# and silence pytest-asyncio's note that the mark also lands on the sync tests.
ASYNC_SUITE = [pytest.mark.asyncio,
               pytest.mark.filterwarnings("ignore:.*marked with '@pytest.mark.asyncio' but it is not an async")]


class TestChatRemoteGLMIntegration(RemoteGLMCapabilities, ChatModelIntegrationTests):
    pytestmark = ASYNC_SUITE

    @property
    def chat_model_class(self):
        return ChatRemoteGLM

    @property
    def chat_model_params(self):
        return {"model": MINI, "temperature": 0, "max_tokens": 24, "device": "cpu"}

    @property
    def returns_usage_metadata(self):
        return True

    @pytest.fixture(autouse=True)
    def _offline_image(self, monkeypatch):
        """The suite's test_image_inputs downloads a PNG from GitHub; it gets a local UCM scene instead (as PNG,
        the type the suite declares), and any other download fails loudly."""
        buffer = io.BytesIO()
        Image.open(AIRPLANE).save(buffer, "PNG")

        def get(url, **kwargs):
            if url != SUITE_IMAGE_URL:
                raise AssertionError(f"the standard suite tried to download {url}")
            return SimpleNamespace(content=buffer.getvalue())

        monkeypatch.setattr(standard_chat_tests, "httpx", SimpleNamespace(get=get))

    def test_the_image_decides_the_answer(self, model) -> None:
        """Beyond the suite's invoke-only image test: both block forms give one answer, another scene another."""
        data = base64.b64encode(AIRPLANE.read_bytes()).decode()
        question = {"type": "text", "text": "Give a concise description of this image."}
        openai_form = model.invoke([HumanMessage(content=[
            question, {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{data}"}}])])
        standard_form = model.invoke([HumanMessage(content=[
            question, {"type": "image", "base64": data, "mime_type": "image/jpeg"}])])
        assert openai_form.content and openai_form.content == standard_form.content  # temperature 0
        other = base64.b64encode(HARBOR.read_bytes()).decode()
        harbor = model.invoke([HumanMessage(content=[
            question, {"type": "image", "base64": other, "mime_type": "image/jpeg"}])])
        assert harbor.content != standard_form.content

    def test_image_from_an_internet_url(self, model) -> None:
        pytest.skip("supports_image_urls is False: ChatRemoteGLM does not fetch http(s) image URLs (offline by "
                    "design; pass base64, a data: or file: URL)")


@pytest.fixture(scope="module")
def mini_backend():
    return load_backend(model=MINI, device="cpu")


class TestRemoteGLMToolUnit(ToolsUnitTests):
    @property
    def tool_constructor(self):
        return RemoteGLMTool

    @property
    def tool_constructor_params(self):
        return {"allowed_dir": EXAMPLES, "max_image_pixels": 256 * 256}  # the model loads on the first call

    @property
    def tool_invoke_params_example(self):
        return {"image": str(AIRPLANE), "question": "这张遥感图像展现了什么场景？"}


class TestRemoteGLMToolIntegration(ToolsIntegrationTests):
    pytestmark = ASYNC_SUITE

    @pytest.fixture(autouse=True)
    def _backend(self, mini_backend):
        self._mini = mini_backend

    @property
    def tool_constructor(self):
        return RemoteGLMTool(backend=self._mini, params=GenerationParams(max_new_tokens=24, do_sample=False))

    @property
    def tool_invoke_params_example(self):
        return {"image": str(AIRPLANE), "question": "这张遥感图像展现了什么场景？"}
