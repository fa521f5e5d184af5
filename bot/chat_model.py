"""ChatRemoteGLM: RemoteGLM as a LangChain chat model, shaped like a LangChain partner package.

Setup:
    from bot.chat_model import ChatRemoteGLM
    llm = ChatRemoteGLM()                                    # the shipped RemoteGLM-mini
    llm = ChatRemoteGLM(model="/models/GLM-4.1V-9B-Thinking", adapter="runs/lora", quant=4)

Invoke (image as a standard content block: base64, data URL, file URL or path):
    from langchain_core.messages import HumanMessage
    msg = HumanMessage(content=[
        {"type": "image", "base64": b64, "mime_type": "image/jpeg"},
        {"type": "text", "text": "这张遥感图像展现了什么场景？"},
    ])
    llm.invoke([msg]).content

Stream:
    for chunk in llm.stream([msg]):
        print(chunk.content, end="")

It does not call tools (RemoteGLM is a perception model; put it behind a tool, see `bot.tool`).
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.utils import from_env, secret_from_env
from pydantic import ConfigDict, Field, SecretStr

from imagery import DEFAULT_MAX_PIXELS, load_image
from imagery.fetch import fetch_image_bytes
from model_adapter import ChatBackend, ChatMessage, Completion, GenerationParams, load_backend
from settings import DEFAULT_MODEL_DIR, Settings

ROLES = {"human": "user", "user": "user", "ai": "assistant", "assistant": "assistant", "system": "system"}


@lru_cache(maxsize=4)
def _shared_backend(backend: str, model: str, adapter: str | None, quant: int | None, device: str,
                    base_url: str, api_key: str) -> ChatBackend:
    """One loaded model per configuration, shared by every ChatRemoteGLM instance in the process."""
    return load_backend(Settings(backend=backend, model=model, adapter=adapter, quant=quant, device=device,
                                 openai_base_url=base_url, openai_api_key=SecretStr(api_key)))


def image_from_block(block: dict[str, Any], max_pixels: int = DEFAULT_MAX_PIXELS):
    """A LangChain / OpenAI image content block -> RGB PIL image (see `image_bytes_from_block`)."""
    return load_image(image_bytes_from_block(block), max_pixels)


def image_bytes_from_block(block: dict[str, Any]) -> bytes:
    """The encoded image of a LangChain / OpenAI image content block.

    Handles {"type": "image", "base64": ...}, {"type": "image", "url": ...}, the older
    {"type": "image", "source_type": "base64"|"url", "data"|"url": ...} and OpenAI's
    {"type": "image_url", "image_url": {"url": ...}}; URLs may be data:, file:// or a local path."""
    if block.get("base64") or block.get("source_type") == "base64":
        return base64.b64decode(block.get("base64") or block["data"])
    url = block.get("url")
    if block["type"] == "image_url":
        url = block["image_url"]["url"] if isinstance(block["image_url"], dict) else block["image_url"]
    if not url:
        raise ValueError(f"image block without data or url: {sorted(block)}")
    return fetch_image_bytes(url)


def to_chat_messages(messages: list[BaseMessage], max_pixels: int = DEFAULT_MAX_PIXELS) -> list[ChatMessage]:
    """LangChain messages -> the adapter's messages (text joined, images decoded)."""
    converted = []
    for message in messages:
        role = ROLES.get(message.type)
        if role is None:
            raise ValueError(f"ChatRemoteGLM does not take {message.type!r} messages (no tool calling)")
        if isinstance(message.content, str):
            converted.append(ChatMessage(role, message.content))
            continue
        texts, images = [], []
        for block in message.content:
            if isinstance(block, str):
                texts.append(block)
            elif block.get("type") == "text":
                texts.append(block["text"])
            elif block.get("type") in ("image", "image_url"):
                images.append(image_from_block(block, max_pixels))
            else:
                raise ValueError(f"unsupported content block type {block.get('type')!r}")
        converted.append(ChatMessage(role, "\n".join(texts), images))
    return converted


def _usage(completion: Completion) -> UsageMetadata:
    return UsageMetadata(input_tokens=completion.prompt_tokens, output_tokens=completion.completion_tokens,
                         total_tokens=completion.prompt_tokens + completion.completion_tokens)


class ChatRemoteGLM(BaseChatModel):
    """RemoteGLM vision-language chat model (local transformers or an OpenAI-compatible server)."""

    model_config = ConfigDict(populate_by_name=True, arbitrary_types_allowed=True)

    model: str = Field(default_factory=from_env("REMOTEGLM_MODEL", default=str(DEFAULT_MODEL_DIR)), alias="model_name")
    """Model directory or hub name (hf backend), or served model name (openai backend). Env: REMOTEGLM_MODEL."""
    backend_kind: str = Field(default_factory=from_env("REMOTEGLM_BACKEND", default="hf"))
    """'hf' (local transformers) or 'openai' (an OpenAI-compatible server at base_url). Env: REMOTEGLM_BACKEND."""
    adapter: str | None = None
    """Optional peft LoRA adapter directory."""
    quant: int | None = None
    """4 or 8 to load the base quantized with bitsandbytes."""
    device: str = "auto"
    """Torch device, 'auto' picks cuda > mps > cpu."""
    base_url: str = Field(default_factory=from_env("REMOTEGLM_OPENAI_BASE_URL", default="http://127.0.0.1:8000/v1"))
    """OpenAI-compatible endpoint (openai backend only). Env: REMOTEGLM_OPENAI_BASE_URL."""
    api_key: SecretStr = Field(default_factory=secret_from_env("REMOTEGLM_OPENAI_API_KEY", default="EMPTY"))
    """API key for the OpenAI-compatible endpoint. Env: REMOTEGLM_OPENAI_API_KEY."""
    temperature: float | None = None
    """Sampling temperature (0 = greedy). None: the model's default."""
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None
    max_tokens: int | None = Field(default=None, alias="max_new_tokens")
    """Maximum number of new tokens."""
    stop: list[str] | None = Field(default=None, alias="stop_sequences")
    """Stop strings: the answer is cut before the first one."""
    max_image_pixels: int = DEFAULT_MAX_PIXELS
    """Images are downscaled to at most this many pixels."""
    backend: ChatBackend | None = Field(default=None, exclude=True)
    """An already loaded backend to use instead of loading one from the fields above."""

    @property
    def _llm_type(self) -> str:
        return "remoteglm"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.model, "adapter": self.adapter, "quant": self.quant, **self._params_dict()}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_provider"] = "remoteglm"
        params["ls_model_name"] = kwargs.get("model", self.model)
        params["ls_temperature"] = kwargs.get("temperature", self.temperature)
        if self.max_tokens:
            params["ls_max_tokens"] = self.max_tokens
        if stop or self.stop:
            params["ls_stop"] = stop or self.stop
        return params

    def _params_dict(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k,
                "repetition_penalty": self.repetition_penalty, "max_new_tokens": self.max_tokens}

    def _backend(self) -> ChatBackend:
        if self.backend is None:
            self.backend = _shared_backend(self.backend_kind, self.model, self.adapter, self.quant, self.device,
                                           self.base_url, self.api_key.get_secret_value())
        return self.backend

    def _stream(
        self, messages: list[BaseMessage], stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        params = GenerationParams(**{k: v for k, v in self._params_dict().items() if v is not None}).merged(
            {("max_new_tokens" if k == "max_tokens" else k): v for k, v in kwargs.items()}
        )
        stops = stop or self.stop or []
        hold = max((len(s) - 1 for s in stops), default=0)  # a tail that could still become a stop string
        cancel = threading.Event()
        pending, completion = "", None
        for chunk in self._backend().stream(to_chat_messages(messages, self.max_image_pixels), params, cancel):
            completion = chunk.completion or completion
            if cancel.is_set():
                continue  # a stop string was seen; wait for the backend's final chunk
            pending += chunk.text
            cut = min((i for i in (pending.find(s) for s in stops) if i >= 0), default=-1)
            if cut >= 0:
                ready, pending = pending[:cut], ""
                cancel.set()
            else:
                ready = pending[: len(pending) - hold]
                pending = pending[len(ready):]
            if ready:
                yield self._text_chunk(ready, run_manager)
        if pending:
            yield self._text_chunk(pending, run_manager)
        if completion is not None:
            reason = "stop" if completion.finish_reason == "cancelled" and stops else completion.finish_reason
            yield ChatGenerationChunk(
                message=AIMessageChunk(content="", usage_metadata=_usage(completion),
                                       response_metadata={"finish_reason": reason, "model_name": self.model},
                                       chunk_position="last"),
                generation_info={"finish_reason": reason},
            )

    @staticmethod
    def _text_chunk(text: str, run_manager: CallbackManagerForLLMRun | None) -> ChatGenerationChunk:
        chunk = ChatGenerationChunk(message=AIMessageChunk(content=text))
        if run_manager:
            run_manager.on_llm_new_token(text, chunk=chunk)
        return chunk

    def _generate(
        self, messages: list[BaseMessage], stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any,
    ) -> ChatResult:
        final: ChatGenerationChunk | None = None
        for chunk in self._stream(messages, stop=stop, run_manager=run_manager, **kwargs):
            final = chunk if final is None else final + chunk
        message = AIMessage(content=final.message.content if final else "",
                            usage_metadata=getattr(final.message, "usage_metadata", None) if final else None,
                            response_metadata=final.message.response_metadata if final else {})
        return ChatResult(generations=[ChatGeneration(message=message,
                                                      generation_info=final.generation_info if final else None)])
