"""Fixtures of the UI tests: a conversation service on the tiny GLM-4.1V model, the web chat's handlers, bad
uploads, a slow fake backend for stop tests, and a helper that starts `python app.py` as a real process."""

from __future__ import annotations

import io
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from bot.service import ConversationService
from model_adapter import ChatBackend, Completion, StreamChunk, load_backend
from settings import REPO_ROOT, Settings
from storage import ConversationStore
from ui.handlers import ChatHandlers

MAX_NEW_TOKENS = 12


@pytest.fixture(scope="session")
def ui_backend(tiny_glm4v_dir):
    return load_backend(model=str(tiny_glm4v_dir), max_new_tokens=MAX_NEW_TOKENS, device="cpu")


@pytest.fixture
def ui_settings(tmp_path) -> Settings:
    return Settings(data_dir=tmp_path / "data", max_new_tokens=MAX_NEW_TOKENS, max_upload_mb=2)


def make_service(backend: ChatBackend, settings: Settings) -> ConversationService:
    return ConversationService(backend, ConversationStore.from_settings(settings), settings)


@pytest.fixture
def service(ui_backend, ui_settings) -> ConversationService:
    return make_service(ui_backend, ui_settings)


@pytest.fixture
def handlers(service, ui_settings, tmp_path) -> ChatHandlers:
    return ChatHandlers(service, ui_settings, export_dir=tmp_path / "export")


class EndlessBackend(ChatBackend):
    """Streams '遥感 ' every few milliseconds until cancelled: makes stop tests deterministic."""

    model_name = "endless"

    def __init__(self, delay: float = 0.01):
        self.delay = delay
        self.started = threading.Event()

    def stream(self, messages, params=None, cancel=None) -> Iterator[StreamChunk]:
        cancel = cancel or threading.Event()
        parts = []
        try:
            while not cancel.is_set() and len(parts) < 5000:
                time.sleep(self.delay)
                parts.append("遥感 ")
                self.started.set()
                yield StreamChunk("遥感 ")
        finally:
            cancel.set()
        yield StreamChunk("", Completion("".join(parts), 1, len(parts), "cancelled"))


def _png_bomb() -> bytes:
    buffer = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(buffer, "PNG")  # ~50 KB declaring 400 million pixels
    return buffer.getvalue()


def _tiff(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array)
    return buffer.getvalue()


REFUSED = {  # name -> (bytes maker, words the message must contain)
    "notes.txt": (lambda jpg: "这不是图像 not an image\n".encode() * 20, "不是可识别的图像"),
    "truncated.jpg": (lambda jpg: jpg[: len(jpg) // 2], "损坏"),
    "empty.jpg": (lambda jpg: b"", "文件为空"),
    "bomb.png": (lambda jpg: _png_bomb(), "过大"),
}
def _gdal_tiff(bands: int, dtype: str) -> bytes:
    """A 64 x 64 GeoTIFF as GDAL writes it by default (pixel-interleaved)."""
    import rasterio
    from rasterio.transform import from_origin

    data = np.random.default_rng(0).integers(0, 250 if dtype == "uint8" else 4000, (bands, 64, 64)).astype(dtype)
    with rasterio.MemoryFile() as mem:
        with mem.open(driver="GTiff", width=64, height=64, count=bands, dtype=dtype, crs="EPSG:32633",
                      transform=from_origin(500_000, 4_000_000, 0.3, 0.3)) as ds:
            ds.write(data)
        return mem.read()


CONVERTED = {  # name -> bytes maker: unusual but valid scenes, accepted after conversion
    "dem16.tif": lambda: _tiff((np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 7)),
    "sentinel6.tif": lambda: _tiff(np.random.default_rng(0).integers(0, 4000, (6, 64, 64), dtype=np.uint16)),
    "gdal_4band_8bit.tif": lambda: _gdal_tiff(4, "uint8"),
    "gdal_4band_16bit.tif": lambda: _gdal_tiff(4, "uint16"),
}


@pytest.fixture
def bad_uploads(tmp_path, airplane_jpg) -> dict[str, Path]:
    folder = tmp_path / "uploads"
    folder.mkdir()
    paths = {}
    for name, (make, _) in REFUSED.items():
        paths[name] = folder / name
        paths[name].write_bytes(make(airplane_jpg))
    for name, make in CONVERTED.items():
        paths[name] = folder / name
        paths[name].write_bytes(make())
    return paths


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class AppProcess:
    """`python app.py ...` in a subprocess; `wait_for(text)` reads its output until `text` appears."""

    def __init__(self, *args: str, env: dict[str, str] | None = None):
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-u", str(REPO_ROOT / "app.py"), *args], cwd=REPO_ROOT, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, text: str, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                raise AssertionError(f"app.py exited ({self.proc.wait()}) before printing {text!r}:\n"
                                     + "".join(self.lines))
            self.lines.append(line)
            if text in line:
                return line
        raise AssertionError(f"no {text!r} within {timeout}s:\n" + "".join(self.lines))

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
