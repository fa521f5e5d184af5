"""Cut a large scene into model-sized tiles, window by window: never the whole raster in memory.

Any raster GDAL opens (GeoTIFF of any bit depth and band count, PNG, JPEG) is read through rasterio one tile
window at a time, resampled to the ground resolution the scene model was trained on (UCM: 256 px at 0.3 m/px, so a
tile covers 76.8 m), with its nodata / mask / alpha marked. Knows nothing of models or classes.

Tile size in scene pixels (`tile_side`):
- a projected CRS in metres (or feet...): 76.8 m / the pixel size, read out of the GeoTIFF's transform;
- otherwise the caller's `gsd` (metres per pixel) when given, else 256 px at native resolution.

    with open_scene(Path("scene.tif")) as scene:            # or bytes
        grid = scene.grid(gsd=None)                        # TileGrid: rows, cols, side (scene px)
        for cell in grid.cells():
            tile = scene.read_tile(grid, cell)             # Tile: (256, 256, 3) uint8 RGB + valid fraction
        view = scene.overview(max_pixels=768 * 768)        # PIL RGB downscaled view, nodata black

The agent's boxes and grids are plain pixel maths here too: `resolve_box(box, width, height)` (pixels, or fractions
of the scene, clamped), `split_box(box, tile_size, max_tiles)` (a rows x cols grid of tile boxes).

Bands: as `imagery.geotiff` shows them (R, G, B by band names / colour interpretation, else the first three; or the
1-based bands the caller names). Deeper than 8-bit data is stretched between the 2nd and 98th percentile of each
band, measured once on a decimated read of the whole scene, so every tile uses the same stretch.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from imagery.errors import ImageError
from imagery.geotiff import default_bands, parse_bands

TRAIN_GSD_M = 0.3  # UCMerced_LandUse (USGS orthoimagery): one foot per pixel
TRAIN_TILE_PX = 256
TILE_GROUND_M = TRAIN_GSD_M * TRAIN_TILE_PX  # 76.8 m: the ground footprint of one training tile
MIN_TILE_PX = 16
STATS_PIXELS = 1024 * 1024  # pixels of the decimated read that measures the stretch
GDAL_CACHE_MB = 128  # bounds GDAL's block cache (its default is 5 % of RAM)

Window = tuple[int, int, int, int]  # (col_off, row_off, width, height) in scene pixels
Box = tuple[int, int, int, int]  # (x0, y0, x1, y1) in full-scene pixels, x1 / y1 exclusive
MIN_BOX_SIDE = 8


@dataclass(frozen=True)
class SceneInfo:
    width: int
    height: int
    count: int  # bands in the file
    dtype: str
    bands: tuple[int, ...]  # the 1 or 3 bands shown / classified, 1-based
    crs: str | None
    transform: tuple[float, ...] | None  # GDAL affine (a, b, c, d, e, f) when georeferenced
    gsd_m: float | None  # metres per pixel (square root of the pixel area) when the CRS is projected
    nodata: float | None

    @property
    def georeferenced(self) -> bool:
        return self.transform is not None

    @property
    def pixel_area_m2(self) -> float | None:
        return self.gsd_m**2 if self.gsd_m else None


@dataclass(frozen=True)
class TileGrid:
    width: int
    height: int
    side: int  # tile side in scene pixels
    rows: int
    cols: int

    def cells(self) -> Iterator[tuple[int, int]]:
        for row in range(self.rows):
            for col in range(self.cols):
                yield row, col

    def cell(self, row: int, col: int) -> Window:
        """The grid cell in scene pixels, clipped to the scene (edge cells are smaller)."""
        x, y = col * self.side, row * self.side
        return x, y, min(self.side, self.width - x), min(self.side, self.height - y)

    def read_window(self, row: int, col: int) -> Window:
        """What is read to classify a cell: a full tile, shifted inward at the right / bottom edges so the model
        sees a whole tile (the cell's area still counts once, as the cell)."""
        x, y, _, _ = self.cell(row, col)
        x = max(0, min(x, self.width - self.side))
        y = max(0, min(y, self.height - self.side))
        return x, y, min(self.side, self.width), min(self.side, self.height)

    def at(self, x: float, y: float) -> tuple[int, int] | None:
        """(row, col) of the cell holding scene pixel (x, y), or None outside the scene."""
        if not (0 <= x < self.width and 0 <= y < self.height):
            return None
        return int(y // self.side), int(x // self.side)


@dataclass
class Tile:
    pixels: np.ndarray  # (TRAIN_TILE_PX, TRAIN_TILE_PX, 3) uint8 RGB, invalid pixels black
    valid: float  # fraction of the cell's pixels that hold data (not nodata / masked / outside the scene)


def tile_side(info: SceneInfo, gsd: float | None = None) -> int:
    """Tile side in scene pixels: the training footprint (76.8 m) at the scene's or the given ground resolution."""
    resolution = info.gsd_m or gsd
    if resolution is None:
        return TRAIN_TILE_PX
    if not resolution > 0 or not math.isfinite(resolution):
        raise ImageError(f"地面分辨率必须是正数（米/像素） (gsd must be a positive number of metres per pixel, "
                         f"got {resolution})")
    return max(MIN_TILE_PX, round(TILE_GROUND_M / resolution))


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


def split_box(box: Box, tile_size: int, max_tiles: int, rows: int | None = None,
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


def _ground_resolution(crs: Any, transform: Any) -> float | None:
    """Metres per pixel for a projected CRS (linear units converted), None for geographic / unknown ones."""
    if crs is None or not crs.is_projected:
        return None
    try:
        _, to_metres = crs.linear_units_factor
    except Exception:  # noqa: BLE001  (a CRS without linear units: treat as unknown)
        return None
    area = abs(transform.a * transform.e - transform.b * transform.d)
    return math.sqrt(area) * to_metres if area > 0 else None


class Scene:
    """An opened raster; use through `open_scene`."""

    def __init__(self, ds: Any, bands: tuple[int, ...]):
        from rasterio.errors import RasterioError

        self.ds = ds
        transform = ds.transform
        georeferenced = ds.crs is not None or not transform.is_identity
        self.info = SceneInfo(
            width=ds.width, height=ds.height, count=ds.count, dtype=ds.dtypes[0], bands=bands,
            crs=ds.crs.to_string() if ds.crs else None,
            transform=tuple(transform)[:6] if georeferenced else None,
            gsd_m=_ground_resolution(ds.crs, transform) if georeferenced else None, nodata=ds.nodata,
        )
        try:
            self.stretch = self._measure_stretch()
        except (RasterioError, ValueError) as exc:
            raise ImageError(f"图像文件已损坏或不完整，无法解码 (the image is corrupt or truncated: {exc})") from exc

    def grid(self, gsd: float | None = None) -> TileGrid:
        side = tile_side(self.info, gsd)
        w, h = self.info.width, self.info.height
        return TileGrid(w, h, side, rows=math.ceil(h / side), cols=math.ceil(w / side))

    def _read(self, window: Window | None, shape: tuple[int, int], resampling: Any) -> np.ma.MaskedArray:
        """(bands, H, W) masked read of a window resampled to `shape`; a pixel is invalid where every band is."""
        from rasterio.windows import Window as RioWindow

        win = RioWindow(*window) if window is not None else None
        return self.ds.read(list(self.info.bands), window=win, out_shape=(len(self.info.bands), *shape),
                            masked=True, resampling=resampling)

    def _measure_stretch(self) -> list[tuple[float, float]] | None:
        """Per band (low, high) = 2nd / 98th percentile of valid pixels on a decimated read; None for 8-bit data."""
        from rasterio.enums import Resampling

        if self.info.dtype == "uint8":
            return None
        w, h = self.info.width, self.info.height
        scale = min(1.0, math.sqrt(STATS_PIXELS / (w * h)))
        data = self._read(None, (max(1, round(h * scale)), max(1, round(w * scale))), Resampling.nearest)
        stretch = []
        for band in data:
            valid = np.ma.masked_invalid(band.astype(np.float64)).compressed()
            low, high = (np.percentile(valid, [2, 98]) if valid.size else (0.0, 1.0))
            stretch.append((float(low), float(high) if high > low else float(low) + 1.0))
        return stretch

    def _to_rgb(self, data: np.ma.MaskedArray) -> tuple[np.ndarray, np.ndarray]:
        """(bands, H, W) masked -> (H, W, 3) uint8 RGB (grey repeated for one band) and (H, W) valid mask."""
        mask = np.ma.getmaskarray(data)
        valid = ~mask.all(axis=0)
        if self.stretch is None:
            planes = np.asarray(data.filled(0), dtype=np.uint8)
        else:
            planes = np.empty(data.shape, dtype=np.uint8)
            for i, (low, high) in enumerate(self.stretch):
                band = np.asarray(data[i].filled(low), dtype=np.float32)
                band = np.nan_to_num(band, nan=low, posinf=high, neginf=low)
                planes[i] = np.clip((band - low) * (255.0 / (high - low)), 0, 255).astype(np.uint8)
        planes[:, ~valid] = 0
        if planes.shape[0] == 1:
            planes = np.repeat(planes, 3, axis=0)
        return np.ascontiguousarray(planes.transpose(1, 2, 0)), valid

    def read_tile(self, grid: TileGrid, row: int, col: int) -> Tile:
        """The tile that classifies cell (row, col), resampled to the training size (256 x 256)."""
        from rasterio.enums import Resampling
        from rasterio.errors import RasterioError

        x, y, w, h = grid.read_window(row, col)
        size = TRAIN_TILE_PX
        scale = size / grid.side
        shape = (max(1, round(h * scale)), max(1, round(w * scale)))
        resampling = Resampling.average if scale < 1 else Resampling.bilinear if scale > 1 else Resampling.nearest
        try:
            data = self._read((x, y, w, h), shape, resampling)
        except (RasterioError, ValueError) as exc:
            raise ImageError(f"图像文件已损坏或不完整，无法读取第 {row + 1} 行第 {col + 1} 列分块 "
                             f"(the image is corrupt or truncated at tile row {row + 1}, column {col + 1}: "
                             f"{exc})") from exc
        rgb, valid = self._to_rgb(data)
        # The cell is the bottom-right part of the read window at the edges (the window was shifted inward).
        cx, cy, cw, ch = grid.cell(row, col)
        x0, y0 = round((cx - x) * scale), round((cy - y) * scale)
        cell_valid = valid[y0 : y0 + max(1, round(ch * scale)), x0 : x0 + max(1, round(cw * scale))]
        tile = np.zeros((size, size, 3), dtype=np.uint8)  # scenes smaller than a tile: padded black
        tile[: rgb.shape[0], : rgb.shape[1]] = rgb
        return Tile(tile, float(cell_valid.mean()) if cell_valid.size else 0.0)

    def overview(self, max_pixels: int = 768 * 768) -> Image.Image:
        """The whole scene as a downscaled RGB view (GDAL reads overviews when the file has them)."""
        from rasterio.enums import Resampling
        from rasterio.errors import RasterioError

        w, h = self.info.width, self.info.height
        scale = min(1.0, math.sqrt(max_pixels / (w * h)))
        shape = (max(1, round(h * scale)), max(1, round(w * scale)))
        try:
            data = self._read(None, shape, Resampling.average if scale < 1 else Resampling.nearest)
        except (RasterioError, ValueError) as exc:
            raise ImageError(f"图像文件已损坏或不完整，无法解码 (the image is corrupt or truncated: {exc})") from exc
        return Image.fromarray(self._to_rgb(data)[0], mode="RGB")

    def crop(self, window: Window, max_side: int = 1024) -> Image.Image:
        """A window of the scene as RGB (at most `max_side` px a side): the tile a user clicked, for the model."""
        from rasterio.enums import Resampling

        x, y, w, h = window
        scale = min(1.0, max_side / max(w, h))
        data = self._read(window, (max(1, round(h * scale)), max(1, round(w * scale))),
                          Resampling.average if scale < 1 else Resampling.nearest)
        return Image.fromarray(self._to_rgb(data)[0], mode="RGB")


SceneSource = str | Path | bytes | bytearray


@contextmanager
def open_scene(source: SceneSource, bands: Sequence[int] | str | None = None) -> Iterator[Scene]:
    """Open a scene (a path, or the file's bytes) for windowed reads; raises ImageError, in both languages, for a
    file GDAL cannot read, a missing file or bands the scene does not have."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

    chosen = parse_bands(bands)
    with warnings.catch_warnings(), rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        memfile = None
        try:
            if isinstance(source, (bytes, bytearray)):
                memfile = rasterio.MemoryFile(bytes(source))
                ds = memfile.open()
            else:
                if not Path(source).is_file():
                    raise ImageError(f"找不到文件 {source} (no such file: {source})")
                ds = rasterio.open(Path(source))
        except RasterioIOError as exc:
            if memfile is not None:
                memfile.close()
            raise ImageError(f"无法读取该影像，文件可能已损坏或格式不受支持 "
                             f"(cannot read this image, it may be corrupt or of an unsupported format: {exc})") from exc
        try:
            names = [c.name for c in ds.colorinterp]
            if chosen is None:
                chosen = default_bands(ds.count, names, list(ds.descriptions))
            elif max(chosen) > ds.count:
                raise ImageError(f"该图像只有 {ds.count} 个波段，无法选择 {','.join(map(str, chosen))} "
                                 f"(this image has {ds.count} bands; cannot use bands {list(chosen)})")
            yield Scene(ds, tuple(chosen))
        finally:
            ds.close()
            if memfile is not None:
                memfile.close()


__all__ = ["Box", "Scene", "SceneInfo", "Tile", "TileGrid", "TILE_GROUND_M", "TRAIN_GSD_M", "TRAIN_TILE_PX",
           "open_scene", "resolve_box", "split_box", "tile_side"]
