"""Image operations the remote-sensing agent's tools use: metadata (size, bands, GeoTIFF georeferencing), boxes and
tiles. Plain functions over bytes, PIL images and tuples; no model, no storage, no LangChain.

Metadata comes from the file's header through `imagery` (the one image reader): TIFFs through rasterio / GDAL
(`imagery.geotiff.tiff_info`: every layout, band-per-page scenes, any CRS GDAL knows), other formats through
`imagery.probe`. No pixel is decoded here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from imagery.geotiff import is_tiff, tiff_info
from imagery.probe import probe

Box = tuple[int, int, int, int]  # (x0, y0, x1, y1) in full-scene pixels, x1 / y1 exclusive
MIN_BOX_SIDE = 8


def read_metadata(data: bytes) -> dict[str, Any]:
    """Format, size, bands, sample type and (for GeoTIFFs) CRS, pixel size and bounds of an image file, from its
    header. Raises ImageError for files that are not images."""
    if not is_tiff(data):
        header = probe(data)
        return {"format": header.format, "width": header.width, "height": header.height, "mode": header.mode,
                "bands": header.bands, "bytes": len(data)}
    info = tiff_info(data)
    return {"format": "TIFF", "width": info["width"], "height": info["height"], "mode": info["dtype"],
            "bands": info["bands"], "bytes": len(data), "geo": georeferencing(info)}


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
