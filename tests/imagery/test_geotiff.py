"""Every TIFF a remote-sensing user has opens (issue 13, item 2): layouts, depths, band counts, nodata, BigTIFF,
band choice. The files are written by rasterio (GDAL), as GIS tools write them."""

from __future__ import annotations

import io

import numpy as np
import pytest
import rasterio
from rasterio.enums import ColorInterp
from rasterio.transform import from_origin

from imagery.geotiff import default_bands, parse_bands, read_tiff, tiff_info
from imagery import ImageError, load_image
from storage.images import ImageStore

H, W = 48, 64


def geotiff(bands: int = 4, dtype: str = "uint16", interleave: str = "pixel", tiled: bool = False,
            bigtiff: bool = False, nodata: float | None = None, descriptions=None, compress: str | None = None,
            seed: int = 0) -> bytes:
    """A georeferenced scene whose band i is a ramp of brightness i (so which band went where can be checked)."""
    rng = np.random.default_rng(seed)
    top = {"uint8": 250, "uint16": 4095 if bands > 4 else 60000, "int16": 3000, "float32": 1.0}[dtype]
    data = np.stack([np.full((H, W), top * (i + 1) / (bands + 1)) + rng.normal(0, top * 0.01, (H, W))
                     for i in range(bands)]).clip(0, top).astype(dtype)
    profile = {"driver": "GTiff", "width": W, "height": H, "count": bands, "dtype": dtype, "crs": "EPSG:32633",
               "transform": from_origin(500_000, 4_000_000, 0.3, 0.3), "interleave": interleave, "tiled": tiled}
    if tiled:
        profile.update(blockxsize=16, blockysize=16)
    if bigtiff:
        profile["BIGTIFF"] = "YES"
    if compress:
        profile["compress"] = compress
    if nodata is not None:
        profile["nodata"] = nodata
        data[:, :8, :8] = nodata
    with rasterio.MemoryFile() as mem:
        with mem.open(**profile) as ds:
            ds.write(data)
            for i, text in enumerate(descriptions or []):
                ds.set_band_description(i + 1, text)
        return mem.read()


CASES = {
    "4-band 8-bit pixel-interleaved (GDAL default)": dict(bands=4, dtype="uint8"),
    "4-band 16-bit pixel-interleaved": dict(bands=4, dtype="uint16"),
    "4-band 16-bit band-interleaved": dict(bands=4, dtype="uint16", interleave="band"),
    "12-bit in 16 (Sentinel-2, 13 bands)": dict(bands=13, dtype="uint16"),
    "float32 reflectance with nodata": dict(bands=5, dtype="float32", nodata=-9999.0),
    "signed 16-bit": dict(bands=3, dtype="int16"),
    "tiled, deflate": dict(bands=6, dtype="uint16", tiled=True, compress="deflate"),
    "BigTIFF": dict(bands=4, dtype="uint16", bigtiff=True),
    "single band": dict(bands=1, dtype="uint16"),
    "two bands": dict(bands=2, dtype="float32"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_every_tiff_layout_opens_as_rgb(name):
    image = load_image(geotiff(**CASES[name]))
    assert image.mode == "RGB" and image.size == (W, H)
    assert np.asarray(image).std() > 0 or CASES[name]["bands"] == 1  # not a blank image


@pytest.mark.parametrize("name", list(CASES))
def test_every_tiff_layout_is_stored_as_png(tmp_path, name):
    record, image = ImageStore(tmp_path, 1024 * 1024).put(geotiff(**CASES[name]))
    assert record.filename.endswith(".png") and (record.width, record.height) == (W, H)


def test_default_is_the_first_three_bands_in_order():
    rgb = np.asarray(load_image(geotiff(bands=6, dtype="uint8"))).astype(int)
    red, green, blue = (rgb[..., c].mean() for c in range(3))
    assert red < green < blue  # bands 1, 2, 3 are ramps of rising brightness, 4-6 brighter still
    assert blue < 255 * 4 / 7


def test_band_descriptions_give_3_2_1():
    data = geotiff(bands=4, dtype="uint8", descriptions=["Blue", "Green", "Red", "NIR"])
    assert tiff_info(data)["default_bands"] == (3, 2, 1)
    rgb = np.asarray(load_image(data)).astype(int)
    assert rgb[..., 0].mean() > rgb[..., 1].mean() > rgb[..., 2].mean()  # red shows band 3, blue band 1


def test_user_chosen_bands():
    data = geotiff(bands=4, dtype="uint8")
    chosen = np.asarray(load_image(data, bands="4,3,2")).astype(int)
    default = np.asarray(load_image(data)).astype(int)
    assert chosen[..., 0].mean() > default[..., 2].mean()  # band 4 shown as red
    assert load_image(data, bands="2").getpixel((30, 30))[0] == load_image(data, bands="2").getpixel((30, 30))[2]
    with pytest.raises(ImageError, match="只有 4 个波段"):
        load_image(data, bands="5,3,2")
    with pytest.raises(ImageError, match="1 个或 3 个波段"):
        load_image(data, bands="1,2")


def test_nodata_is_black_and_does_not_skew_the_stretch():
    rgb = np.asarray(load_image(geotiff(bands=3, dtype="float32", nodata=-9999.0)))
    assert (rgb[:8, :8] == 0).all()
    assert rgb[20:, 20:].mean() > 30  # valid pixels are stretched over their own range


def test_large_scene_is_decimated_while_reading():
    big = geotiff(bands=4, dtype="uint16")
    image = load_image(big, max_pixels=600)
    assert image.width * image.height <= 600


def test_colorinterp_rgb_and_alpha():
    assert default_bands(4, ["blue", "green", "red", "alpha"], [None] * 4) == (3, 2, 1)
    assert default_bands(4, ["red", "green", "blue", "alpha"], [None] * 4) == (1, 2, 3)
    assert default_bands(2, ["gray", "alpha"], [None] * 2) == (1,)
    assert parse_bands(" 4, 3 ,2") == (4, 3, 2) and parse_bands("") is None


def test_tiff_info_reads_crs_nodata_and_layout():
    info = tiff_info(geotiff(bands=4, dtype="float32", nodata=-9999.0, tiled=True))
    assert info["crs"] == "EPSG:32633" and info["nodata"] == -9999.0 and info["bands"] == 4
    assert info["tiled"] and info["transform"][0] == pytest.approx(0.3)


def test_corrupt_tiff_is_refused_with_a_message():
    data = geotiff(bands=4, dtype="uint16", compress="deflate")
    with pytest.raises(ImageError):
        load_image(data[: len(data) // 3])
    with pytest.raises(ImageError):
        load_image(b"II*\x00" + b"\x00" * 100)


def test_palette_and_band_per_page_tiffs():
    from PIL import Image

    palette = Image.new("P", (16, 16), 1)
    palette.putpalette([0, 0, 0, 200, 30, 10] + [0] * 762)
    buffer = io.BytesIO()
    palette.save(buffer, "TIFF")
    assert load_image(buffer.getvalue()).getpixel((3, 3)) == (200, 30, 10)
    import tifffile

    pages = np.stack([np.full((16, 16), 100 * (i + 1), np.uint16) for i in range(5)])
    pages[:, 0, 0] = 0
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, pages)  # one single-band page per band
    assert tiff_info(buffer.getvalue())["bands"] == 5
    assert load_image(buffer.getvalue(), bands=(5, 1, 3)).size == (16, 16)
