"""After a large decode the freed heap goes back to the OS (issue 15 item 6: the server stayed large while idle)."""

from __future__ import annotations

import io
import platform

import numpy as np
import pytest
from PIL import Image

import imagery.load as images
from imagery.memory import TRIM_AFTER_BYTES, release_free_memory


def _png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((height, width, 3), np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_glibc_returns_free_pages(monkeypatch):
    assert release_free_memory() is True
    monkeypatch.setenv("REMOTEGLM_MALLOC_TRIM", "0")  # the switch bench.memory compares with
    assert release_free_memory() is False


def test_a_large_decode_is_followed_by_a_trim_and_a_small_one_is_not(monkeypatch):
    calls = []
    monkeypatch.setattr(images, "release_free_memory", lambda: calls.append(1) or True)
    side = int((TRIM_AFTER_BYTES / 3) ** 0.5) + 1  # just over the threshold as 8-bit RGB
    out = images.load_image(_png(side, side), max_pixels=512 * 512)
    assert out.size[0] * out.size[1] <= 512 * 512 and calls == [1]
    images.load_image(_png(1000, 1000), max_pixels=512 * 512)
    assert calls == [1]
