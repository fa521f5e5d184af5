"""Every decoder path checks a file's cost from its header before decoding, and reads only what it needs (issue 15,
item 3): width x height x bands x bytes per sample against the decode budget, then only the bands shown, decimated.

The issue's bomb (8 bands, 16-bit, 10 000 x 10 000, deflate, ~1.9 MB) is refused by the probe, `load_image`,
storage and the agent's metadata without a pixel read: rasterio's read is made to fail, and tracemalloc sees no
large allocation. A large but allowed scene opens with bounded memory, measured in a fresh process."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.io
from PIL import Image
from rasterio.enums import Resampling

import imagery.geotiff as geotiff
from imagery.header import ImageHeader, ImageTooLarge, check_header, decode_budget
from imagery.probe import probe, probe_checked, read_metadata
from imagery import MAX_DECLARED_PIXELS, load_image
from storage.images import ImageStore
from testing.images import BOMB_BANDS, BOMB_SIDE, multiband_bomb, ramp_scene

ROOT = Path(__file__).resolve().parents[2]


def peak_allocation(fn) -> int:
    tracemalloc.start()
    try:
        fn()
    except ImageTooLarge:
        pass
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def test_probe_reads_the_bombs_header_without_decoding():
    data = multiband_bomb()
    assert len(data) < 4_000_000  # cheap to send
    header = probe(data)
    assert (header.format, header.width, header.height, header.bands, header.dtype) == (
        "TIFF", BOMB_SIDE, BOMB_SIDE, BOMB_BANDS, "uint16")
    assert header.decode_bytes == 1_600_000_000 and header.pixels == 100_000_000


def test_the_bomb_is_refused_before_any_pixel_is_read(tmp_path, no_pixel_reads):
    data = multiband_bomb()
    # 100 MP is within the pixel limit; its 8 bands x 16 bits are not within the budget.
    assert BOMB_SIDE * BOMB_SIDE <= MAX_DECLARED_PIXELS
    with pytest.raises(ImageTooLarge, match="解码需要 1,600 MB") as refused:
        load_image(data)
    assert "8 bands x 16-bit" in str(refused.value) and f"{decode_budget(MAX_DECLARED_PIXELS) / 1e6:,.0f} MB" in str(
        refused.value)
    with pytest.raises(ImageTooLarge):
        geotiff.read_tiff(data, bands="4,3,2")
    with pytest.raises(ImageTooLarge):
        probe_checked(data, max_pixels=100_000_000)
    store = ImageStore(tmp_path / "images", 1024 * 1024)
    with pytest.raises(ImageTooLarge):
        store.put(data)
    assert list((tmp_path / "images").iterdir()) == []  # nothing stored, no half file
    meta = read_metadata(data)  # the agent's metadata reads the header only
    assert (meta["width"], meta["bands"], meta["mode"], meta["geo"]) == (BOMB_SIDE, BOMB_BANDS, "uint16", None)


def test_the_refusal_allocates_almost_nothing():
    data = multiband_bomb()
    for refuse in (lambda: load_image(data), lambda: probe_checked(data, 100_000_000)):
        assert peak_allocation(refuse) < 2_000_000  # against 1.6 GB to decode, 200 MB for one band


def test_bands_and_bit_depth_count_not_only_pixels():
    pixels = 600 * 600
    limit = 500_000  # 600 x 600 passes the pixel count; the budget is 2 MB
    deep = ramp_scene(600, 600, 4)  # 4 bands x 16 bits: 2.88 MB to decode
    with pytest.raises(ImageTooLarge, match="4 bands x 16-bit"):
        geotiff.read_tiff(deep, max_declared_pixels=limit)
    with pytest.raises(ImageTooLarge):
        probe_checked(deep, limit)
    grey = ramp_scene(600, 600, 1, dtype="uint8")  # 0.36 MB
    assert geotiff.read_tiff(grey, max_declared_pixels=limit).size == (600, 600)
    assert probe_checked(grey, limit).decode_bytes == pixels
    with pytest.raises(ImageTooLarge, match="疑似解压炸弹"):  # the pixel count still counts first
        check_header(ImageHeader("PNG", 1000, 1000, 3, "uint8"), limit)


def test_pillow_formats_are_probed_with_their_mode():
    def encoded(image: Image.Image, fmt: str, **kwargs) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, fmt, **kwargs)
        return buffer.getvalue()

    rgb = probe(encoded(Image.new("RGB", (40, 30)), "JPEG"))
    assert (rgb.format, rgb.width, rgb.height, rgb.bands, rgb.dtype, rgb.mode) == ("JPEG", 40, 30, 3, "uint8", "RGB")
    deep = probe(encoded(Image.new("I;16", (40, 30)), "PNG"))
    assert (deep.bands, deep.dtype, deep.decode_bytes) == (1, "uint16", 40 * 30 * 2)
    exif = Image.Exif()
    exif[0x0112] = 6
    assert probe(encoded(Image.new("RGB", (8, 8)), "JPEG", exif=exif.tobytes())).orientation == 6
    # An 8-bit image never exceeds the budget of its own pixel count: the budget is 4 bytes a pixel.
    assert ImageHeader("PNG", 100, 100, 4, "uint8").decode_bytes == decode_budget(100 * 100)


def test_only_the_bands_shown_are_read_at_the_decimated_size(monkeypatch):
    data = ramp_scene(900, 600, 6, dtype="uint8", interleave="band")  # 8-bit bands keep their brightness
    calls = []
    original = rasterio.io.DatasetReader.read

    def spy(self, indexes=None, *args, **kwargs):
        calls.append((indexes, kwargs.get("out_shape")))
        return original(self, indexes, *args, **kwargs)

    monkeypatch.setattr(rasterio.io.DatasetReader, "read", spy)
    monkeypatch.setattr(geotiff, "STRIP_BYTES", 64 * 1024)  # many strips
    image = geotiff.read_tiff(data, max_pixels=150 * 100, bands="5,3,1")
    assert image.size == (150, 100)
    assert calls and all(indexes == [5, 3, 1] for indexes, _ in calls)
    assert sum(shape[1] for _, shape in calls) == 100 and all(shape[2] == 150 for _, shape in calls)
    assert len(calls) > 1  # read strip by strip
    red, green, blue = (np.asarray(image)[..., c].mean() for c in range(3))
    assert red > green > blue  # band 5 is the brightest ramp of the three, band 1 the darkest


def test_strip_reads_equal_one_whole_read(monkeypatch):
    data = ramp_scene(700, 500, 4, interleave="pixel")
    monkeypatch.setattr(geotiff, "STRIP_BYTES", 20_000)  # a strip of a few rows
    with geotiff._opened(data) as (ds, sources):
        chunked = geotiff._read_decimated(sources[:3], (123, 171))
        whole = ds.read([1, 2, 3], out_shape=(3, 123, 171), masked=True, resampling=Resampling.average)
    for plane, reference in zip(chunked, whole):
        assert np.abs(plane.astype(np.int64) - reference.astype(np.int64)).max() <= 1  # rounding at strip edges


CHILD = """
import json, re, sys
from pathlib import Path

def peak_mb():  # this process's own peak RSS (getrusage's ru_maxrss would carry the forking parent's over exec)
    return int(re.search(r"VmHWM:\\s+(\\d+) kB", Path("/proc/self/status").read_text()).group(1)) / 1024

data = Path(sys.argv[1]).read_bytes()
import numpy as np
import rasterio
from imagery.geotiff import read_tiff
before = peak_mb()
image = read_tiff(data, max_pixels=1024 * 1024)
print(json.dumps({"size": image.size, "growth_mb": peak_mb() - before, "before_mb": before,
                  "means": np.asarray(image).reshape(-1, 3).mean(0).tolist()}))
"""


def test_a_large_allowed_scene_opens_with_bounded_memory(tmp_path):
    # 8 bands x 16 bits x 5000 x 5000: 400 MB to decode, within the budget; a fresh process measures peak RSS.
    path = tmp_path / "scene.tif"
    path.write_bytes(ramp_scene(5000, 5000, 8))
    assert check_header(probe(path.read_bytes())).decode_bytes == 400_000_000
    out = subprocess.run([sys.executable, "-c", CHILD, str(path)], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert tuple(result["size"]) == (1024, 1024)
    assert 0 < result["growth_mb"] < 250, result  # well under the 400 MB a full decode needs (cache 64 MB + strips)
    assert len(set(round(m) for m in result["means"])) == 1  # three bands, each stretched over its own ramp
