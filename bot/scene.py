"""Image operations the remote-sensing agent's tools use: metadata (size, bands, GeoTIFF georeferencing), boxes and
tiles. Plain functions over bytes, PIL images and tuples; no model, no storage, no LangChain.

GeoTIFF georeferencing is read from the TIFF tags themselves (ModelPixelScale 33550, ModelTiepoint 33922,
ModelTransformation 34264, GeoKeyDirectory 34735) through Pillow, or tifffile for band-per-sample scenes Pillow
cannot open, so no GDAL / rasterio is needed for the common north-up case.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from PIL import Image, UnidentifiedImageError

from model_adapter.images import TIFF_MAGIC

Box = tuple[int, int, int, int]  # (x0, y0, x1, y1) in full-scene pixels, x1 / y1 exclusive
MIN_BOX_SIDE = 8

PIXEL_SCALE, TIEPOINT, TRANSFORMATION, GEOKEYS = 33550, 33922, 34264, 34735
# GeoKey ids -> names (GeoTIFF 1.1, section 7); the EPSG code sits in one of the two *Type keys.
GEOKEY_NAMES = {1024: "model_type", 1025: "raster_type", 2048: "geographic_type", 3072: "projected_type"}
MODEL_TYPES = {1: "projected", 2: "geographic", 3: "geocentric"}
USER_DEFINED = 32767


def read_metadata(data: bytes) -> dict[str, Any]:
    """Format, size, bands, sample type and (for GeoTIFFs) CRS, pixel size and bounds of an image file."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                frames = getattr(image, "n_frames", 1)
                meta: dict[str, Any] = {
                    "format": image.format, "width": image.width, "height": image.height, "mode": image.mode,
                    "bands": len(image.getbands()), "bytes": len(data),
                }
                if image.format == "TIFF":
                    if frames > 1 and len(image.getbands()) == 1:
                        meta["bands"] = frames  # one band per page, as load_image reads it
                    tags = {code: image.tag_v2.get(code) for code in (PIXEL_SCALE, TIEPOINT, TRANSFORMATION, GEOKEYS)}
                    meta["geo"] = georeferencing(tags, image.width, image.height)
                return meta
    except UnidentifiedImageError:
        if data[:4] not in TIFF_MAGIC:
            raise
    return _tifffile_metadata(data)


def _tifffile_metadata(data: bytes) -> dict[str, Any]:
    import tifffile

    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        page = tif.pages[0]
        shape = tif.series[0].shape
        tags = {code: page.tags[code].value if code in page.tags else None
                for code in (PIXEL_SCALE, TIEPOINT, TRANSFORMATION, GEOKEYS)}
        height, width = page.shape[0], page.shape[1]
        if len(shape) == 3 and shape[0] < shape[-1] and shape[0] <= 16:  # (bands, H, W)
            bands, height, width = shape
        else:
            bands = shape[-1] if len(shape) == 3 else 1
        return {"format": "TIFF", "width": int(width), "height": int(height), "mode": str(page.dtype),
                "bands": int(bands), "bytes": len(data), "geo": georeferencing(tags, int(width), int(height))}


def geokeys(directory: Sequence[int] | None) -> dict[str, int]:
    """The inline (short-valued) keys of a GeoKeyDirectory tag, by name."""
    if not directory or len(directory) < 4:
        return {}
    keys = {}
    for i in range(directory[3]):
        key, location, _count, value = directory[4 + 4 * i: 8 + 4 * i]
        if location == 0 and key in GEOKEY_NAMES:
            keys[GEOKEY_NAMES[key]] = int(value)
    return keys


def georeferencing(tags: Mapping[int, Any], width: int, height: int) -> dict[str, Any] | None:
    """Affine pixel -> map transform, CRS and bounds from GeoTIFF tags; None when the image has none."""
    scale, tie, matrix = tags.get(PIXEL_SCALE), tags.get(TIEPOINT), tags.get(TRANSFORMATION)
    if matrix and len(matrix) >= 8:
        a, b, _, c, d, e, _, f = (float(v) for v in matrix[:8])
    elif scale and tie and len(scale) >= 2 and len(tie) >= 6:
        sx, sy = float(scale[0]), float(scale[1])
        i, j, x, y = float(tie[0]), float(tie[1]), float(tie[3]), float(tie[4])
        a, b, c, d, e, f = sx, 0.0, x - i * sx, 0.0, -sy, y + j * sy  # north-up: y decreases downwards
    else:
        return None
    keys = geokeys(tags.get(GEOKEYS))
    code = keys.get("projected_type") or keys.get("geographic_type")
    geo: dict[str, Any] = {
        "transform": [a, b, c, d, e, f],  # map_x = a*col + b*row + c ; map_y = d*col + e*row + f
        "pixel_size": [math.hypot(a, d), math.hypot(b, e)],
        "crs": f"EPSG:{code}" if code and code != USER_DEFINED else None,
        "model_type": MODEL_TYPES.get(keys.get("model_type", 0)),
    }
    geo["bounds"] = map_bounds(geo, (0, 0, width, height))
    return geo


def rescaled(geo: Mapping[str, Any] | None, sx: float, sy: float) -> dict[str, Any] | None:
    """The georeferencing of the same scene resampled so that one new pixel spans (sx, sy) old ones."""
    if not geo:
        return None
    a, b, c, d, e, f = geo["transform"]
    return {**geo, "transform": [a * sx, b * sy, c, d * sx, e * sy, f],
            "pixel_size": [geo["pixel_size"][0] * sx, geo["pixel_size"][1] * sy]}


def map_bounds(geo: Mapping[str, Any], box: Box) -> list[float]:
    """[min_x, min_y, max_x, max_y] in map units of a pixel box."""
    a, b, c, d, e, f = geo["transform"]
    corners = [(a * x + b * y + c, d * x + e * y + f) for x in (box[0], box[2]) for y in (box[1], box[3])]
    xs, ys = [p[0] for p in corners], [p[1] for p in corners]
    return [min(xs), min(ys), max(xs), max(ys)]


def resolve_box(box: Sequence[float] | None, width: int, height: int) -> Box:
    """A box in pixels, or in fractions of the scene when every value is within 0..1, clamped to the scene."""
    if box is None:
        return (0, 0, width, height)
    if len(box) != 4:
        raise ValueError(f"a box is [x0, y0, x1, y1], got {list(box)}")
    values = [float(v) for v in box]
    if all(0.0 <= v <= 1.0 for v in values):
        values = [values[0] * width, values[1] * height, values[2] * width, values[3] * height]
    x0, y0, x1, y1 = (int(round(v)) for v in values)
    x0, x1 = sorted((max(0, min(width, x0)), max(0, min(width, x1))))
    y0, y1 = sorted((max(0, min(height, y0)), max(0, min(height, y1))))
    if x1 - x0 < MIN_BOX_SIDE or y1 - y0 < MIN_BOX_SIDE:
        raise ValueError(f"box {list(box)} leaves {x1 - x0}x{y1 - y0} pixels of this {width}x{height} scene; "
                         f"boxes need at least {MIN_BOX_SIDE} pixels a side")
    return (x0, y0, x1, y1)


def tile_grid(box: Box, tile_size: int, max_tiles: int, rows: int | None = None,
              cols: int | None = None) -> list[tuple[int, int, Box]]:
    """Split `box` into a rows x cols grid of (row, col, tile box), row-major, 1-based.

    Without rows / cols the grid has tiles of about `tile_size` pixels, grown until there are at most
    `max_tiles`."""
    width, height = box[2] - box[0], box[3] - box[1]
    if rows is None or cols is None:
        size = float(tile_size)
        while True:
            rows, cols = max(1, math.ceil(height / size - 0.01)), max(1, math.ceil(width / size - 0.01))
            if rows * cols <= max_tiles:
                break
            size *= 1.25
    if rows < 1 or cols < 1 or rows * cols > max_tiles:
        raise ValueError(f"a {rows}x{cols} grid is not allowed: 1 to {max_tiles} tiles")
    xs = [box[0] + round(width * i / cols) for i in range(cols + 1)]
    ys = [box[1] + round(height * i / rows) for i in range(rows + 1)]
    return [(r + 1, c + 1, (xs[c], ys[r], xs[c + 1], ys[r + 1])) for r in range(rows) for c in range(cols)]


def describe_metadata(meta: Mapping[str, Any]) -> str:
    """A short bilingual description of `read_metadata`'s result for a planner to read."""
    lines = [f"图像 image: {meta.get('format') or '?'} {meta['width']}×{meta['height']} px, "
             f"{meta.get('bands', 3)} 波段 bands ({meta.get('mode')}), {meta.get('bytes', 0):,} bytes"]
    geo = meta.get("geo")
    if geo:
        sx, sy = geo["pixel_size"]
        minx, miny, maxx, maxy = geo["bounds"]
        lines.append(f"地理参考 georeferenced: CRS {geo['crs'] or 'unknown'}, 像元大小 pixel size {sx:g}×{sy:g}, "
                     f"范围 bounds [{minx:.6g}, {miny:.6g}, {maxx:.6g}, {maxy:.6g}]")
    else:
        lines.append("无地理参考 not georeferenced")
    return "\n".join(lines)
