"""Vision-language model backends behind one interface (`ChatBackend`).

    from model_adapter import load_backend, ChatMessage, GenerationParams
    backend = load_backend(Settings())            # the shipped RemoteGLM-mini, or whatever settings say
    backend.generate([ChatMessage("user", "这张遥感图像展现了什么场景？", [load_image("scene.jpg")])])

Importing this package is light (no torch, no transformers), so the web chat's page comes up while the model
loads. `import model_adapter.mini` registers RemoteGLM-mini with the transformers Auto classes; the local
backend (`model_adapter.hf`) does so itself.
"""

from __future__ import annotations

from collections.abc import Callable

from model_adapter.base import BackendBusy, ChatBackend, ChatMessage, Completion, GenerationParams, StreamChunk
from imagery import ImageError, load_image
from settings import Settings

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
