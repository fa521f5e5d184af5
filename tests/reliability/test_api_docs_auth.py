"""The API schema and its viewers are behind the API key when one is set (issue 15, item 8)."""

from __future__ import annotations

import httpx
import pytest
from pydantic import SecretStr

from server import create_app
from settings import Settings
from tests.server.running import RunningServer, ScriptedBackend


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/openapi.json"])
def test_docs_and_schema_need_the_api_key(tmp_path, path):
    settings = Settings(data_dir=tmp_path, api_key=SecretStr("s3cret"))
    with RunningServer(create_app(ScriptedBackend(["a"]), settings)) as running:
        base = f"http://127.0.0.1:{running.port}"
        refused = httpx.get(base + path)
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
        allowed = httpx.get(base + path, headers={"Authorization": "Bearer s3cret"})
        assert allowed.status_code == 200
