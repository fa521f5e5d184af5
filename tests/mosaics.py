"""Scenes with known ground truth for the land-use map tests: mosaics of UCM test tiles (tests/fixtures/ucm),
written as GeoTIFF (georeferenced or not, any band count, nodata areas), PNG or a corrupt file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "ucm"
TILE = 256


def fixture_tiles() -> dict[str, np.ndarray]:
    """UCM class -> (256, 256, 3) uint8 of the fixture image (all are UCM test-split images)."""
    return {p.stem.rsplit("_", 1)[0]: np.asarray(Image.open(p).convert("RGB").resize((TILE, TILE)))
            for p in sorted(FIXTURES.glob("*.jpg"))}


def mosaic(layout: list[list[str | None]], tiles: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """(H, W, 3) uint8: row-major layout of class names; None leaves a black (nodata) tile."""
    tiles = tiles or fixture_tiles()
    rows, cols = len(layout), len(layout[0])
    out = np.zeros((rows * TILE, cols * TILE, 3), dtype=np.uint8)
    for r, row in enumerate(layout):
        for c, key in enumerate(row):
            if key is not None:
                out[r * TILE:(r + 1) * TILE, c * TILE:(c + 1) * TILE] = tiles[key]
    return out


def write_geotiff(path: Path, image: np.ndarray, gsd: float | None = 0.3, crs: str = "EPSG:32650",
                  nodata: float | None = 0, bands: np.ndarray | None = None, origin=(500000.0, 4000000.0)) -> Path:
    """`image` (H, W, 3) or `bands` (B, H, W) as a tiled GeoTIFF; gsd=None writes no georeference."""
    import rasterio
    from rasterio.transform import from_origin

    data = bands if bands is not None else image.transpose(2, 0, 1)
    profile = {"driver": "GTiff", "width": data.shape[2], "height": data.shape[1], "count": data.shape[0],
               "dtype": data.dtype.name, "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate"}
    if nodata is not None:
        profile["nodata"] = nodata
    if gsd is not None:
        profile.update(crs=crs, transform=from_origin(*origin, gsd, gsd))
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path
