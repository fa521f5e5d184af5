"""Fixtures of the model-adapter tests: every real architecture the backend loads, the shipped mini included."""

from __future__ import annotations

from pathlib import Path

import pytest

MINI = Path(__file__).resolve().parents[2] / "checkpoints" / "remoteglm-mini"


@pytest.fixture(scope="module", params=["glm4v", "qwen2_5_vl", "mini"])
def model_dir(request) -> Path:
    """Each test using this runs on the tiny GLM-4V, the tiny Qwen2.5-VL and the shipped RemoteGLM-mini."""
    if request.param == "mini":
        if not (MINI / "model.safetensors").exists():
            pytest.skip("shipped mini model absent")
        return MINI
    return request.getfixturevalue(f"tiny_{request.param}_dir")
