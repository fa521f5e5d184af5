"""Vision-language model backends behind one interface (`ChatBackend`).

    from model_adapter import load_backend, ChatMessage, GenerationParams
    backend = load_backend(Settings())            # the shipped RemoteGLM-mini, or whatever settings say
    backend.generate([ChatMessage("user", "这张遥感图像展现了什么场景？", [load_image("scene.jpg")])])

Importing this package also registers RemoteGLM-mini with the transformers Auto classes.
"""

from __future__ import annotations

from collections.abc import Callable

from model_adapter.base import BackendBusy, ChatBackend, ChatMessage, Completion, GenerationParams, StreamChunk
from imagery import ImageError, load_image
from settings import Settings

try:  # registers the remoteglm_mini model type with AutoConfig / AutoModelForImageTextToText / AutoProcessor
    import model_adapter.mini  # noqa: F401
except ImportError:  # pragma: no cover - only while the mini model package is absent
    pass


def _hf(settings: Settings) -> ChatBackend:
    from model_adapter.hf import HFBackend

    return HFBackend.from_settings(settings)


def _openai(settings: Settings) -> ChatBackend:
    from model_adapter.openai_compat import OpenAIBackend

    return OpenAIBackend.from_settings(settings)


BACKENDS: dict[str, Callable[[Settings], ChatBackend]] = {"hf": _hf, "openai": _openai}


def load_backend(settings: Settings | None = None, **overrides) -> ChatBackend:
    """Build the backend that `settings.backend` names; keyword overrides win over settings."""
    settings = settings.model_copy(update=overrides) if settings else Settings(**overrides)
    return BACKENDS[settings.backend](settings)


__all__ = [
    "BACKENDS", "BackendBusy", "ChatBackend", "ChatMessage", "Completion", "GenerationParams", "ImageError",
    "StreamChunk", "load_backend", "load_image",
]
