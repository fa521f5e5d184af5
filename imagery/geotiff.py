"""Read any TIFF a remote-sensing user has as a display image: GeoTIFFs through rasterio (GDAL inside).

Pixel- and band-interleaved, 8 / 12 / 16-bit, signed, float32 / float64, nodata and masks, 1 to any number of
bands, tiled and striped, compressed, BigTIFF. Three bands are shown as R, G, B:

- default: bands whose colour interpretation or description says red / green / blue (so a blue, green, red, NIR
  scene shows as 3-2-1), else the first three (an alpha band is skipped); one or two bands show as grey (the first);
- or the bands the user names, 1-based: `read_tiff(data, bands=(4, 3, 2))` (false colour).

Before any pixel is read, the header's width x height x bands x bytes per sample must fit the decode budget
(`imagery.header.check_header`): a 2 MB deflate TIFF declaring 8 bands of 16-bit 10 000 x 10 000 pixels is refused
in milliseconds. Then only the bands shown are read, decimated while reading (GDAL uses overviews when the file
has them), in strips of rows under a fixed GDAL block cache, so memory follows `max_pixels`, not the scene, and
every compressed block is decoded once. 8-bit bands keep their values; deeper data is stretched per band between
its 2nd and 98th percentiles of valid pixels, as GIS viewers do; nodata / masked pixels are black.

    from imagery.geotiff import read_tiff, tiff_header, tiff_info
    image = read_tiff(Path("scene.tif").read_bytes(), max_pixels=1024 * 1024)   # PIL image, RGB or L
    tiff_header(data)   # ImageHeader(format='TIFF', width=..., bands=4, dtype='uint16', ...), no pixel read
    tiff_info(data)   # {'width':..., 'bands': 4, 'dtype': 'uint16', 'nodata': 0.0, 'crs': 'EPSG:32633', ...}
    georeferencing(tiff_info(data))   # {'transform': [a..f], 'pixel_size', 'crs', 'bounds'}; map_bounds(geo, box)
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from PIL import Image

from imagery.errors import ImageError
from imagery.header import MAX_DECLARED_PIXELS, ImageHeader, check_header

TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF, both byte orders
# GDAL's block cache while we read (its default is 5 % of the machine's memory, so RSS would follow the machine).
# Strips of rows are read so that the blocks of two strips (every band of them, for pixel-interleaved files) fit
# in the cache: each block is then decoded once, not once per band shown.
# NOTE: an 8-band 16-bit 5000 x 5000 scene (400 MB decoded) read to 1024 x 1024: +155 MB RSS in 0.96 s with these,
# +290 MB with a 200 MB cache; band by band it took +482 MB and 1.2 s under GDAL's default cache on a 23 GB machine
# (which held the whole decoded scene); on a 4-band 7000 x 7000 one, band by band under a 128 MB cache took 2.5x
# the time of a cache that held it all (every band decoded every block again).
READ_CACHE_BYTES = 64 * 2**20
STRIP_BYTES = 16 * 2**20
_COLOUR_WORDS = {"red": ("red", "红"), "green": ("green", "绿"), "blue": ("blue", "蓝")}


def is_tiff(data: bytes) -> bool:
    return data[:4] in TIFF_MAGIC


def parse_bands(text: str | Sequence[int] | None) -> tuple[int, ...] | None:
    """'4,3,2' / '4 3 2' / (4, 3, 2) -> (4, 3, 2); empty -> None (the default choice). 1 or 3 bands."""
    if text is None:
        return None
    if isinstance(text, tuple) and all(isinstance(v, int) for v in text) and len(text) in (1, 3) and min(text) >= 1:
        return text
    values = re.split(r"[\s,，;/-]+", text.strip()) if isinstance(text, str) else list(text)
    values = [v for v in values if v != ""]
    if not values:
        return None
    try:
        bands = tuple(int(v) for v in values)
    except ValueError:
        raise ImageError(f"波段应写成数字，例如 4,3,2 (bands are numbers such as 4,3,2, got {text!r})") from None
    if len(bands) not in (1, 3) or min(bands) < 1:
        raise ImageError(f"请选择 1 个或 3 个波段（从 1 开始），例如 4,3,2 "
                         f"(choose 1 or 3 bands, numbered from 1, such as 4,3,2; got {text!r})")
    return bands


def default_bands(count: int, colorinterp: Sequence[str], descriptions: Sequence[str | None]) -> tuple[int, ...]:
    """The bands shown when the user picks none (1-based): red / green / blue by band description, else by colour
    interpretation, else the first three (or the first, for one- or two-band images). Descriptions come first:
    GDAL marks any 3+ band 8-bit file R, G, B, whatever its sensor's order."""
    for names in ([(d or "").lower() for d in descriptions], [c.lower() for c in colorinterp]):
        found = []
        for colour, words in _COLOUR_WORDS.items():
            hits = [i + 1 for i, name in enumerate(names) if any(w in name for w in words)
                    and not any(other in name for c, ws in _COLOUR_WORDS.items() if c != colour for other in ws)]
            if len(hits) != 1:
                break
            found.append(hits[0])
        if len(found) == 3 and len(set(found)) == 3:
            return tuple(found)
    visible = [i + 1 for i, c in enumerate(colorinterp) if c.lower() != "alpha"] or list(range(1, count + 1))
    return tuple(visible[:3]) if len(visible) >= 3 else (visible[0],)


def _open(data: bytes):
    import rasterio
    from rasterio.errors import RasterioIOError

    try:
        memfile = rasterio.MemoryFile(data)
        return memfile, memfile.open()
    except RasterioIOError as exc:
        raise ImageError(f"无法读取该 TIFF 文件，文件可能已损坏 (cannot read this TIFF, it may be corrupt: {exc})") from exc


@contextmanager
def _opened(data: bytes) -> Iterator[tuple[Any, list[tuple[Any, int]]]]:
    """(dataset, bands): every band as (dataset, 1-based index). A band-per-page TIFF (one single-band page per
    band, as tifffile and some sensors write) has its pages as bands, since GDAL would show only the first."""
    import rasterio

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        memfile, ds = _open(data)
        pages: list[Any] = []
        try:
            bands = [(ds, i) for i in range(1, ds.count + 1)]
            if ds.count == 1 and len(ds.subdatasets) > 1:
                for name in ds.subdatasets:
                    page = rasterio.open(name)
                    pages.append(page)
                    if (page.width, page.height, page.count) != (ds.width, ds.height, 1):
                        break
                else:
                    bands = [(page, 1) for page in pages]
            yield ds, bands
        finally:
            for page in pages:
                page.close()
            ds.close()
            memfile.close()


def tiff_info(data: bytes) -> dict[str, Any]:
    """Size, band count, data type, nodata, band names / colours, default bands and georeferencing of a TIFF."""
    with _opened(data) as (ds, bands):
        crs = ds.crs
        transform = ds.transform
        georeferenced = crs is not None or not transform.is_identity
        colours = [src.colorinterp[i - 1].name for src, i in bands]
        descriptions = [src.descriptions[i - 1] for src, i in bands]
        return {
            "format": "TIFF", "width": ds.width, "height": ds.height, "bands": len(bands), "dtype": ds.dtypes[0],
            "nodata": ds.nodata, "descriptions": descriptions, "colorinterp": colours,
            "interleave": ds.interleaving.name.lower() if ds.interleaving else None,
            "tiled": bool(ds.block_shapes and ds.block_shapes[0][1] < ds.width),
            "default_bands": default_bands(len(bands), colours, descriptions),
            "crs": crs.to_string() if crs else None, "epsg": crs.to_epsg() if crs else None,
            "crs_kind": ("projected" if crs.is_projected else "geographic" if crs.is_geographic else None)
            if crs else None,
            "transform": list(transform)[:6] if georeferenced else None,
            "bounds": list(ds.bounds) if georeferenced else None, "bytes": len(data),
        }


def tiff_header(data: bytes) -> ImageHeader:
    """Size, band count (pages, for a band-per-page TIFF) and sample type from the TIFF's header; no pixel read."""
    with _opened(data) as (ds, bands):
        return _header(ds, bands)


def _header(ds, bands: list[tuple[Any, int]]) -> ImageHeader:
    dtype = max((src.dtypes[i - 1] for src, i in bands), key=lambda name: np.dtype(name).itemsize)
    return ImageHeader("TIFF", ds.width, ds.height, len(bands), dtype)


def georeferencing(info: Mapping[str, Any]) -> dict[str, Any] | None:
    """Affine pixel -> map transform, CRS and bounds from `tiff_info`; None when the image has none."""
    if not info.get("transform"):
        return None
    a, b, c, d, e, f = (float(v) for v in info["transform"])
    geo: dict[str, Any] = {
        "transform": [a, b, c, d, e, f],  # map_x = a*col + b*row + c ; map_y = d*col + e*row + f
        "pixel_size": [math.hypot(a, d), math.hypot(b, e)],
        "crs": f"EPSG:{info['epsg']}" if info.get("epsg") else info.get("crs"),
        "model_type": info.get("crs_kind"),
    }
    geo["bounds"] = map_bounds(geo, (0, 0, info["width"], info["height"]))
    return geo


def rescaled(geo: Mapping[str, Any] | None, sx: float, sy: float) -> dict[str, Any] | None:
    """The georeferencing of the same scene resampled so that one new pixel spans (sx, sy) old ones."""
    if not geo:
        return None
    a, b, c, d, e, f = geo["transform"]
    return {**geo, "transform": [a * sx, b * sy, c, d * sx, e * sy, f],
            "pixel_size": [geo["pixel_size"][0] * sx, geo["pixel_size"][1] * sy]}


def map_bounds(geo: Mapping[str, Any], box: Sequence[float]) -> list[float]:
    """[min_x, min_y, max_x, max_y] in map units of a pixel box (x0, y0, x1, y1)."""
    a, b, c, d, e, f = geo["transform"]
    corners = [(a * x + b * y + c, d * x + e * y + f) for x in (box[0], box[2]) for y in (box[1], box[3])]
    xs, ys = [p[0] for p in corners], [p[1] for p in corners]
    return [min(xs), min(ys), max(xs), max(ys)]


def read_tiff(data: bytes, max_pixels: int = 1024 * 1024, bands: Sequence[int] | str | None = None,
              max_declared_pixels: int = MAX_DECLARED_PIXELS) -> Image.Image:
    """The TIFF as an 8-bit PIL image (RGB for three bands, L for one) of at most about `max_pixels` pixels.

    Raises `ImageTooLarge` before reading any pixel when the header declares more than `max_declared_pixels`
    pixels or more bytes to decode than their budget (`imagery.header`), and ImageError for unusable files."""
    from rasterio.enums import ColorInterp

    chosen = parse_bands(bands)
    with _opened(data) as (ds, sources):
        check_header(_header(ds, sources), max_declared_pixels)
        if chosen is None:
            chosen = default_bands(len(sources), [src.colorinterp[i - 1].name for src, i in sources],
                                   [src.descriptions[i - 1] for src, i in sources])
        elif max(chosen) > len(sources):
            raise ImageError(f"该图像只有 {len(sources)} 个波段，无法选择 {','.join(map(str, chosen))} "
                             f"(this image has {len(sources)} bands; cannot show bands {list(chosen)})")
        scale = min(1.0, math.sqrt(max_pixels / (ds.width * ds.height)))
        shape = (max(1, round(ds.height * scale)), max(1, round(ds.width * scale)))
        read = _read_decimated([sources[band - 1] for band in chosen], shape)
        palette = None
        if len(chosen) == 1:
            src, index = sources[chosen[0] - 1]
            if src.colorinterp[index - 1] == ColorInterp.palette:
                palette = src.colormap(index)
        planes = read if palette else [_to_8bit(plane, src.dtypes[i - 1])
                                       for plane, (src, i) in zip(read, (sources[b - 1] for b in chosen))]
    if palette:
        lut = np.array([palette.get(i, (0, 0, 0, 255))[:3] for i in range(256)], dtype=np.uint8)
        return Image.fromarray(lut[np.clip(planes[0].filled(0), 0, 255).astype(np.uint8)], mode="RGB")
    if len(planes) == 1:
        return Image.fromarray(planes[0], mode="L")
    return Image.fromarray(np.dstack(planes), mode="RGB")


def _read_decimated(bands: list[tuple[Any, int]], shape: tuple[int, int]) -> list[np.ma.MaskedArray]:
    """The given (dataset, index) bands, each read at `shape` (H, W), masked where invalid (nodata, per-dataset
    masks, alpha). Only these bands are read; a dataset's bands are read together, strip by strip."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.errors import RasterioError
    from rasterio.windows import Window

    out_h, out_w = shape
    plans = []  # (dataset, its indexes read, source rows per strip)
    for src in {id(s): s for s, _ in bands}.values():
        indexes = list(dict.fromkeys(i for s, i in bands if s is src))
        # A block holds every band when the file is pixel-interleaved, else only its own band.
        decoded = src.count if src.interleaving is None or src.interleaving.name == "pixel" else len(indexes)
        row_bytes = src.width * decoded * np.dtype(src.dtypes[0]).itemsize
        block_rows = src.block_shapes[0][0] if src.block_shapes else 1
        plans.append((src, indexes, max(block_rows, STRIP_BYTES // max(1, row_bytes)), row_bytes))
    cache = max(READ_CACHE_BYTES, max(2 * rows * row_bytes for _, _, rows, row_bytes in plans))
    planes: dict[tuple[int, int], np.ma.MaskedArray] = {}
    try:
        with rasterio.Env(GDAL_CACHEMAX=cache):
            for src, indexes, src_rows, _ in plans:
                resampling = Resampling.nearest if (out_h, out_w) == (src.height, src.width) else Resampling.average
                step = max(1, int(src_rows * out_h / src.height))  # output rows per strip
                out = np.ma.masked_all((len(indexes), out_h, out_w), dtype=src.dtypes[0])
                for top in range(0, out_h, step):
                    bottom = min(out_h, top + step)
                    y0, y1 = top * src.height / out_h, bottom * src.height / out_h
                    out[:, top:bottom] = src.read(indexes, window=Window(0, y0, src.width, y1 - y0),
                                                  out_shape=(len(indexes), bottom - top, out_w), masked=True,
                                                  resampling=resampling)
                for k, index in enumerate(indexes):
                    planes[(id(src), index)] = out[k]
    except (RasterioError, ValueError) as exc:
        raise ImageError(f"图像文件已损坏或不完整，无法解码 (the image is corrupt or truncated: {exc})") from exc
    return [planes[(id(src), index)] for src, index in bands]


def _to_8bit(band: np.ma.MaskedArray, dtype: str) -> np.ndarray:
    """(H, W) band -> uint8: 8-bit kept, anything else stretched 2-98 % over valid pixels; invalid -> 0."""
    values = np.ma.masked_invalid(band.astype(np.float64))
    if dtype == "uint8":
        return values.filled(0).astype(np.uint8)
    valid = values.compressed()
    if valid.size == 0:
        return np.zeros(band.shape, dtype=np.uint8)
    low, high = np.percentile(valid, [2, 98])
    if high <= low:
        high = low + 1
    scaled = np.clip((values - low) / (high - low) * 255.0, 0, 255)
    return scaled.filled(0).astype(np.uint8)
