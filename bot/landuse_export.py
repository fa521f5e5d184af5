"""Pictures and files of a land-use map (`bot.landuse.LandUseMap`): a colour overlay with a legend, a highlight of
one class, GeoJSON of the tile polygons and a classified GeoTIFF that QGIS opens with its colours.

Coordinates: GeoJSON polygons are in the scene's CRS when it is georeferenced (the CRS is named in a top-level
"crs" member and in each file's properties; RFC 7946 readers assume WGS 84, so QGIS reads the named CRS from
the GeoTIFF's sibling or the user sets it), else in scene pixels with y growing downwards ("crs": null). The
classified GeoTIFF has one uint8 band per tile (value = class index + 1, 0 = no data / not analysed), the colour
table of the overlay, and the transform / CRS of the scene scaled to one pixel per tile.

    overlay = render_overlay(view, result)                 # PIL RGB: view + colours + legend
    write_geojson(result, "map.geojson"); write_geotiff(result, "map.tif")
"""

from __future__ import annotations

import io
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from bot.landuse import LandUseMap, scene_name

# One distinct colour per UCM class, in the head's order (agricultural ... tenniscourt).
PALETTE: dict[str, tuple[int, int, int]] = {
    "agricultural": (230, 200, 60), "airplane": (255, 0, 160), "baseballdiamond": (255, 150, 80),
    "beach": (250, 235, 160), "buildings": (200, 40, 40), "chaparral": (150, 170, 90),
    "denseresidential": (150, 0, 0), "forest": (20, 120, 30), "freeway": (90, 90, 90),
    "golfcourse": (140, 230, 120), "harbor": (0, 90, 200), "intersection": (170, 120, 200),
    "mediumresidential": (230, 90, 90), "mobilehomepark": (200, 140, 170), "overpass": (120, 60, 160),
    "parkinglot": (180, 180, 180), "river": (60, 170, 250), "runway": (40, 40, 40),
    "sparseresidential": (255, 190, 190), "storagetanks": (255, 120, 0), "tenniscourt": (0, 200, 180),
}
NODATA_COLOUR = (128, 128, 128)
ALPHA = 110  # of the colour over the image, 0..255
FONT_PATHS = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/System/Library/Fonts/PingFang.ttc",
    "C:/Windows/Fonts/msyh.ttc",
)
LEGEND_WIDTH = 250


def colour(key: str | None) -> tuple[int, int, int]:
    return PALETTE.get(key or "", NODATA_COLOUR)


@lru_cache(maxsize=4)
def _font(size: int) -> tuple[Any, bool]:
    """(font, has Chinese glyphs): a CJK font when the system has one, else Pillow's own (English labels)."""
    for path in FONT_PATHS:
        if Path(path).exists():
            try:
                return ImageFont.truetype(path, size), True
            except OSError:
                continue
    return ImageFont.load_default(size=size), False


def class_grid(result: LandUseMap) -> np.ndarray:
    """(rows, cols) uint8: class index + 1 per tile, 0 for nodata / pending."""
    grid = np.zeros((result.rows, result.cols), dtype=np.uint8)
    index = {key: i + 1 for i, key in enumerate(result.classes)}
    for t in result.tiles:
        if t.status == "classified":
            grid[t.row, t.col] = index[t.cls]
    return grid


def _colour_layer(result: LandUseMap, size: tuple[int, int], only: str | None) -> Image.Image:
    """RGBA layer of the view's size: each tile's colour (or, with `only`, that class bright and the rest clear),
    nodata tiles hatched grey."""
    lut = np.zeros((256, 4), dtype=np.uint8)
    for i, key in enumerate(result.classes):
        if only is None or key == only:
            lut[i + 1] = (*colour(key), ALPHA if only is None else 170)
    cells = lut[class_grid(result)]  # (rows, cols, 4)
    for t in result.tiles:
        if t.status == "nodata":
            cells[t.row, t.col] = (*NODATA_COLOUR, 150)
    scale = size[0] / result.width
    full = (max(1, round(result.cols * result.tile_px * scale)), max(1, round(result.rows * result.tile_px * scale)))
    layer = Image.fromarray(cells, mode="RGBA").resize(full, Image.NEAREST).crop((0, 0, *size))
    draw = ImageDraw.Draw(layer)
    step = result.tile_px * scale
    if step >= 6:  # tile borders, when tiles are big enough on the view to read them
        for c in range(1, result.cols):
            draw.line([(c * step, 0), (c * step, size[1])], fill=(255, 255, 255, 90))
        for r in range(1, result.rows):
            draw.line([(0, r * step), (size[0], r * step)], fill=(255, 255, 255, 90))
    return layer


def render_overlay(view: Image.Image, result: LandUseMap, only: str | None = None, lang: str = "zh") -> Image.Image:
    """The scene view with tile colours and a legend (classes found, colour, share); with `only`, that class
    highlighted. `view` is the scene downscaled (`Scene.overview`), any size with the scene's aspect ratio."""
    base = view.convert("RGBA")
    if only is not None:  # dim everything but the highlighted class
        base = Image.blend(base, Image.new("RGBA", base.size, (0, 0, 0, 255)), 0.35)
    composed = Image.alpha_composite(base, _colour_layer(result, view.size, only)).convert("RGB")
    return _with_legend(composed, result, only, lang)


def _with_legend(image: Image.Image, result: LandUseMap, only: str | None, lang: str) -> Image.Image:
    font, chinese = _font(14)
    small, _ = _font(12)
    shares = result.shares()
    if only is not None:
        shares = [s for s in shares if s.key == only]
    counts = result.counts()
    lines = len(shares) + (1 if counts["nodata"] else 0) + (1 if counts["pending"] else 0)
    height = max(image.height, 40 + 20 * lines)
    canvas = Image.new("RGB", (image.width + LEGEND_WIDTH, height), (255, 255, 255))
    canvas.paste(image, (0, 0))
    draw = ImageDraw.Draw(canvas)
    x = image.width + 10
    use_zh = chinese and lang == "zh"
    title = ("分块地物分类" if use_zh else "Land use per tile") if only is None else (
        f"{scene_name(only, 'zh')} 分块" if use_zh else f"Tiles of {scene_name(only, 'en')}")
    draw.text((x, 8), title, fill=(0, 0, 0), font=font)
    y = 32
    for s in shares:
        draw.rectangle([x, y + 2, x + 14, y + 16], fill=colour(s.key), outline=(0, 0, 0))
        name = s.zh if use_zh else s.en
        area = f" {s.km2:.3g} km²" if (s.km2 is not None and result.georef_gsd) else ""
        draw.text((x + 20, y), f"{name} {s.fraction:.0%}{area}", fill=(0, 0, 0), font=small)
        y += 20
    if counts["nodata"]:
        draw.rectangle([x, y + 2, x + 14, y + 16], fill=NODATA_COLOUR, outline=(0, 0, 0))
        draw.text((x + 20, y), ("无数据 " if use_zh else "no data ") + str(counts["nodata"]), fill=(0, 0, 0),
                  font=small)
        y += 20
    if counts["pending"]:
        draw.text((x + 20, y), ("未分析（已取消） " if use_zh else "not analysed (cancelled) ") + str(counts["pending"]),
                  fill=(0, 0, 0), font=small)
    return canvas


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def to_geojson(result: LandUseMap) -> dict[str, Any]:
    """FeatureCollection: one polygon per analysed tile (classified or nodata) with row, col, class (key, zh,
    en), probability and valid fraction; coordinates in the scene's CRS, or scene pixels without georeference."""
    features = []
    for t in result.tiles:
        if t.status == "pending":
            continue
        x, y, w, h = t.window
        ring = [result.pixel_to_map(px, py) for px, py in ((x, y), (x + w, y), (x + w, y + h), (x, y + h), (x, y))]
        features.append({
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": [[[round(a, 6), round(b, 6)] for a, b in ring]]},
            "properties": {
                "row": t.row, "col": t.col, "status": t.status, "class": t.cls,
                "class_zh": scene_name(t.cls, "zh") if t.cls else None,
                "class_en": scene_name(t.cls, "en") if t.cls else None,
                "probability": None if t.prob is None else round(t.prob, 4), "valid": round(t.valid, 4),
            },
        })
    return {
        "type": "FeatureCollection",
        "crs": result.crs,  # None: coordinates are scene pixels (x right, y down)
        "coordinates": "crs" if result.transform else "pixels",
        "features": features,
    }


def write_geojson(result: LandUseMap, path: str | Path) -> Path:
    path = Path(path)
    path.write_text(json.dumps(to_geojson(result), ensure_ascii=False), encoding="utf-8")
    return path


def write_geotiff(result: LandUseMap, path: str | Path) -> Path:
    """One pixel per tile, uint8 class index + 1 (0 = nodata), colour table, the scene's CRS and transform scaled
    by the tile size (no transform when the scene has none). Band description and metadata name the classes."""
    import rasterio
    from rasterio.transform import Affine

    path = Path(path)
    grid = class_grid(result)
    profile: dict[str, Any] = {
        "driver": "GTiff", "width": result.cols, "height": result.rows, "count": 1, "dtype": "uint8",
        "nodata": 0, "compress": "deflate",
    }
    if result.transform:
        a, b, c, d, e, f = result.transform
        profile["transform"] = Affine(a, b, c, d, e, f) @ Affine.scale(result.tile_px)
        profile["crs"] = result.crs
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(grid, 1)
        dst.write_colormap(1, {0: (0, 0, 0, 0), **{i + 1: (*colour(k), 255) for i, k in enumerate(result.classes)}})
        dst.set_band_description(1, "UCM scene class index + 1 (0 = no data)")
        dst.update_tags(classes=json.dumps(result.classes), tile_px=str(result.tile_px),
                        **{str(i + 1): k for i, k in enumerate(result.classes)})
    return path


__all__ = ["PALETTE", "class_grid", "colour", "png_bytes", "render_overlay", "to_geojson", "write_geojson",
           "write_geotiff"]
