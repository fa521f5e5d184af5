"""bot.scene words the image metadata for the agent's planner, in Chinese and English."""

from __future__ import annotations

from bot.scene import describe_metadata

GEOTIFF = {"format": "TIFF", "width": 300, "height": 200, "mode": "uint16", "bands": 8, "bytes": 1234,
           "geo": {"crs": "EPSG:32650", "pixel_size": [10.0, 10.0],
                   "bounds": [500_000.0, 3_998_000.0, 503_000.0, 4_000_000.0]}}


def test_a_georeferenced_scene_is_described_with_its_bands_crs_and_bounds():
    text = describe_metadata(GEOTIFF)
    assert "TIFF 300×200 px, 8 波段 bands (uint16), 1,234 bytes" in text
    assert "CRS EPSG:32650" in text and "像元大小 pixel size 10×10" in text and "[500000, 3.998e+06" in text


def test_a_plain_image_is_said_to_have_no_georeferencing():
    text = describe_metadata({"format": "PNG", "width": 20, "height": 10, "mode": "LA", "bands": 2, "bytes": 99})
    assert text.splitlines() == ["图像 image: PNG 20×10 px, 2 波段 bands (LA), 99 bytes", "无地理参考 not georeferenced"]
