"""The agent's image metadata (`imagery.probe.read_metadata`) comes from the header (rasterio for every TIFF,
Pillow's header for the rest): GDAL-only multi-band GeoTIFFs, which Pillow cannot open, keep their bands, sample
type and georeferencing; nothing is decoded."""

from __future__ import annotations

import io

import numpy as np
import pytest
import rasterio
import rasterio.io
from PIL import Image, UnidentifiedImageError
from rasterio.transform import from_origin

from imagery.errors import ImageError
from imagery.probe import read_metadata


def gdal_geotiff(bands: int, dtype: str, crs: str | None = "EPSG:32650") -> bytes:
    profile = {"driver": "GTiff", "width": 300, "height": 200, "count": bands, "dtype": dtype, "compress": "deflate",
               "transform": from_origin(500_000, 4_000_000, 10, 10)}
    if crs:
        profile["crs"] = crs
    with rasterio.MemoryFile() as memfile:
        with memfile.open(**profile) as ds:
            ds.write(np.ones((bands, 200, 300), dtype=dtype))
        return memfile.read()


@pytest.fixture
def no_pixel_reads(monkeypatch):
    def read(self, *args, **kwargs):
        raise AssertionError("metadata decoded pixels")

    monkeypatch.setattr(rasterio.io.DatasetReader, "read", read)


def test_multiband_16_bit_geotiff_metadata(no_pixel_reads):
    data = gdal_geotiff(8, "uint16")
    with pytest.raises(UnidentifiedImageError):
        Image.open(io.BytesIO(data))  # Pillow cannot open it (8 samples per pixel): only rasterio reads it
    meta = read_metadata(data)
    assert (meta["format"], meta["width"], meta["height"], meta["bands"], meta["mode"]) == (
        "TIFF", 300, 200, 8, "uint16")
    geo = meta["geo"]
    assert geo["crs"] == "EPSG:32650" and geo["model_type"] == "projected" and geo["pixel_size"] == [10.0, 10.0]
    assert geo["bounds"] == [500_000.0, 4_000_000.0 - 2000, 500_000.0 + 3000, 4_000_000.0]


def test_geographic_and_unreferenced_tiffs(no_pixel_reads):
    assert read_metadata(gdal_geotiff(3, "uint8", crs="EPSG:4326"))["geo"]["model_type"] == "geographic"
    plain = io.BytesIO()
    Image.new("RGB", (64, 32)).save(plain, "TIFF")
    meta = read_metadata(plain.getvalue())
    assert (meta["width"], meta["height"], meta["bands"], meta["geo"]) == (64, 32, 3, None)


def test_non_tiffs_and_non_images():
    png = io.BytesIO()
    Image.new("LA", (20, 10)).save(png, "PNG")
    meta = read_metadata(png.getvalue())
    assert (meta["format"], meta["width"], meta["bands"], meta["mode"], meta.get("geo")) == ("PNG", 20, 2, "LA", None)
    with pytest.raises(ImageError, match="不是可识别的图像"):
        read_metadata(b"not an image at all")
