"""RemoteGLM's OpenAI-compatible API server (`python app.py serve`, or `python -m server`).

    from server import serve
    serve(Settings(model="checkpoints/remoteglm-mini"))         # http://127.0.0.1:8000/v1

Layout, as in vLLM's entrypoint: `protocol.py` (request / response types), `serving.py` (handlers and the
bounded wait for the model), `app.py` (FastAPI app, auth, size limits, errors). The model itself comes from
`model_adapter.load_backend`, so the server can also front another OpenAI-compatible server (backend 'openai').
"""

from __future__ import annotations

import argparse

from server.app import create_app
from server.serving import ServerConfig
from settings import add_flags, config_from_flags

DEFAULT_PORT = 8000
_PREFIX = "server_"


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """One `--flag` per ServerConfig field (--max-waiting, --allowed-image-dir, ...), for `serve` commands."""
    add_flags(parser, ServerConfig, dest_prefix=_PREFIX)


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    """ServerConfig from the environment, overridden by the flags `add_server_arguments` added."""
    return config_from_flags(args, ServerConfig, dest_prefix=_PREFIX)


def serve(settings, port: int | None = None, config: ServerConfig | None = None) -> None:
    """Load the backend that `settings` names and serve it with uvicorn on settings.host.

    The port is `port`, else settings.port when it was given explicitly (--port / REMOTEGLM_PORT), else 8000
    (settings.port's own default, 7860, belongs to the web chat)."""
    import uvicorn

    from model_adapter import load_backend

    if port is None:
        port = settings.port if "port" in settings.model_fields_set else DEFAULT_PORT
    backend = load_backend(settings)
    try:
        uvicorn.run(create_app(backend, settings, config), host=settings.host, port=port, log_level="info")
    finally:
        backend.close()


__all__ = ["DEFAULT_PORT", "ServerConfig", "add_server_arguments", "config_from_args", "create_app", "serve"]
