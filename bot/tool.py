"""RemoteGLM as a LangChain tool: any agent can hand it a remote-sensing image and a question.

    from langchain.agents import create_agent
    from langchain_openai import ChatOpenAI
    from bot.tool import RemoteGLMTool

    tool = RemoteGLMTool.from_settings(Settings())               # local model, or backend='openai' for a server
    agent = create_agent(ChatOpenAI(model="gpt-4o-mini"), tools=[tool])
    agent.invoke({"messages": [("user", "What is in /data/scenes/port.tif? Any oil tanks?")]})

The image may be a local path, a file:// / http(s):// / data: URL, or bare base64 bytes. Problems with the input
(no such file, not an image) come back to the agent as the tool's answer, so it can correct itself instead of
crashing. The tool is one stateless call; the conversation-aware agent with crop / tile tools is `bot.agent`.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from langchain_core.callbacks import CallbackManagerForToolRun
from langchain_core.tools import BaseTool, ToolException
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from imagery import ImageError, load_image
from imagery.fetch import fetch_image_bytes
from model_adapter import ChatBackend, ChatMessage, GenerationParams, load_backend
from settings import Settings

DESCRIPTION = (
    "Ask RemoteGLM, a vision-language model for remote-sensing imagery (satellite and aerial photos, GeoTIFF "
    "scenes), a question about one image. Use it whenever the user asks what an aerial or satellite image "
    "shows: the scene type (airport, harbor, farmland...), whether objects are present (airplanes, ships, "
    "storage tanks, roads...), how many, or a description. Questions may be Chinese or English and it answers "
    "in the question's language, e.g. '这张遥感图像展现了什么场景？' or 'How many airplanes are there?'. "
    "It cannot see anything but the given image and is not meant for ordinary photos, documents or math. "
    "Arguments: image (local file path, http(s)/file/data URL, or base64 image bytes) and question."
)


class RemoteGLMInput(BaseModel):
    image: str = Field(description="The remote-sensing image: a local file path, an http(s):// / file:// / data: "
                                   "URL, or base64-encoded image bytes.")
    question: str = Field(description="One question about the image, in Chinese or English.")


def read_image_argument(image: str, allowed_dir: Path | None = None) -> bytes:
    """Bytes of a path, URL or base64 string (local files only under `allowed_dir` when given)."""
    image = image.strip()
    scheme = urlparse(image).scheme
    if image.startswith("data:") or scheme in ("http", "https", "file"):
        return fetch_image_bytes(image, allowed_dir)
    if len(image) < 1024 and Path(image).expanduser().is_file():
        return fetch_image_bytes(str(Path(image).expanduser()), allowed_dir)
    try:
        data = base64.b64decode(image, validate=True)
    except (binascii.Error, ValueError):
        data = b""
    if len(data) < 16:
        raise FileNotFoundError(f"no such image file, and not base64 image data: {image[:200]}")
    return data


class RemoteGLMTool(BaseTool):
    """RemoteGLM behind a LangChain tool (image + question -> answer)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    name: str = "remoteglm"
    description: str = DESCRIPTION
    args_schema: type[BaseModel] = RemoteGLMInput
    handle_tool_error: bool = True
    """Input problems come back to the agent as text instead of raising."""

    backend: ChatBackend | None = Field(default=None, exclude=True)
    """The loaded model; `from_settings` fills it (local transformers or an OpenAI-compatible server)."""
    params: GenerationParams = Field(default_factory=GenerationParams, exclude=True)
    """Generation settings for every answer (max_new_tokens, temperature...)."""
    allowed_dir: Path | None = None
    """When set, local paths and file:// URLs are read only under this directory."""
    max_image_pixels: int = 1024 * 1024
    """Images are downscaled to at most this many pixels before the model sees them."""

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> RemoteGLMTool:
        return cls(backend=load_backend(settings), max_image_pixels=settings.max_image_pixels, **kwargs)

    def load(self, image: str) -> Image.Image:
        try:
            return load_image(read_image_argument(image, self.allowed_dir), self.max_image_pixels)
        except (ImageError, OSError, ValueError) as exc:  # PermissionError / FileNotFoundError are OSErrors
            raise ToolException(f"cannot use this image: {exc}") from exc

    def _run(self, image: str, question: str, run_manager: CallbackManagerForToolRun | None = None) -> str:
        if not question.strip():
            raise ToolException("the question is empty; ask one question about the image")
        if self.backend is None:
            self.backend = load_backend(Settings())
        picture = self.load(image)
        return self.backend.generate([ChatMessage("user", question.strip(), [picture])], self.params).text
