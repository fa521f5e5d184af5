"""Shared fixtures: tiny real-architecture checkpoints, fixture images, a store on SQLite or PostgreSQL."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FIXTURES = ROOT / "tests" / "fixtures"

torch.set_num_threads(min(2, torch.get_num_threads()))

from testing.tiny_models import build_tiny_glm4v, build_tiny_qwen2_5_vl  # noqa: E402


@pytest.fixture(scope="session")
def tiny_glm4v_dir(tmp_path_factory) -> Path:
    return build_tiny_glm4v(tmp_path_factory.mktemp("tiny-glm4v"))


@pytest.fixture(scope="session")
def tiny_qwen2_5_vl_dir(tmp_path_factory) -> Path:
    return build_tiny_qwen2_5_vl(tmp_path_factory.mktemp("tiny-qwen2_5_vl"))


@pytest.fixture(scope="session", params=["glm4v", "qwen2_5_vl"])
def tiny_model_dir(request) -> Path:
    """Each test using this runs once per architecture."""
    return request.getfixturevalue(f"tiny_{request.param}_dir")


@pytest.fixture(scope="session")
def airplane_jpg() -> bytes:
    return (FIXTURES / "ucm" / "airplane_192.jpg").read_bytes()


@pytest.fixture(scope="session")
def harbor_jpg() -> bytes:
    return (FIXTURES / "ucm" / "harbor_1092.jpg").read_bytes()


POSTGRES_URL = os.environ.get("REMOTEGLM_TEST_POSTGRES_URL")


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:
    """A fresh empty database: SQLite in tmp, or the PostgreSQL server named by REMOTEGLM_TEST_POSTGRES_URL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'remoteglm.db'}"
    if not POSTGRES_URL:
        if os.environ.get("REMOTEGLM_REQUIRE_POSTGRES"):
            pytest.fail("REMOTEGLM_REQUIRE_POSTGRES is set but REMOTEGLM_TEST_POSTGRES_URL is not")
        pytest.skip("PostgreSQL tests need REMOTEGLM_TEST_POSTGRES_URL (set by .ci/run, which starts a server)")
    from sqlalchemy import create_engine, text

    from storage.models import Base

    engine = create_engine(POSTGRES_URL)
    with engine.begin() as conn:
        Base.metadata.drop_all(conn)
        conn.execute(text("SELECT 1"))
    engine.dispose()
    return POSTGRES_URL


@pytest.fixture
def no_pixel_reads(monkeypatch):
    """Any rasterio pixel read fails the test: a refusal must come from the header alone."""
    import rasterio.io

    def read(self, *args, **kwargs):
        raise AssertionError("a pixel read happened before the refusal")

    monkeypatch.setattr(rasterio.io.DatasetReader, "read", read)
    monkeypatch.setattr(rasterio.io.DatasetReader, "read_masks", read)
