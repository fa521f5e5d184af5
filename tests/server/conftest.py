"""A real server on a free port answering with a tiny GLM-4V checkpoint (one model load per test session)."""

from __future__ import annotations

import base64

import pytest

from model_adapter import load_backend
from server import create_app
from server.serving import ServerConfig
from settings import Settings
from tests.server.running import RunningServer


@pytest.fixture(scope="session")
def tiny_backend(tiny_glm4v_dir):
    return load_backend(model=str(tiny_glm4v_dir), device="cpu", max_new_tokens=8)


@pytest.fixture(scope="session")
def server_settings(tiny_glm4v_dir, tmp_path_factory) -> Settings:
    return Settings(model=str(tiny_glm4v_dir), device="cpu", max_new_tokens=8,
                    data_dir=tmp_path_factory.mktemp("server-data"))


@pytest.fixture(scope="session")
def allowed_dir(tmp_path_factory, airplane_jpg):
    folder = tmp_path_factory.mktemp("allowed-images")
    (folder / "airplane.jpg").write_bytes(airplane_jpg)
    return folder


@pytest.fixture(scope="session")
def server(tiny_backend, server_settings, allowed_dir):
    """No API key; file URLs allowed under `allowed_dir`."""
    app = create_app(tiny_backend, server_settings, ServerConfig(allowed_image_dir=allowed_dir))
    with RunningServer(app) as running:
        yield running


@pytest.fixture(scope="session")
def served_name(tiny_backend) -> str:
    return "remoteglm"  # ServerConfig's default, the id the README's examples send


def data_url(image: bytes, mime: str = "image/jpeg") -> str:
    return f"data:{mime};base64,{base64.b64encode(image).decode()}"
