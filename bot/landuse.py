"""Land-use map of a large scene: every tile classified by the mini's UCM scene head, class shares, a summary, and
the follow-ups a user asks of the map (where is a class, how large is it, which tile is at this pixel).

Reads through `imagery.tiles` (windowed, never the whole raster), classifies through
`model_adapter.scene_classifier` (batched, no text generation). The result is a plain JSON-able `LandUseMap`;
drawing and exports are in `bot/landuse_export.py`, storage with a conversation in `bot/landuse_store.py`.

    classifier = SceneClassifier.from_pretrained("checkpoints/remoteglm-mini")
    result = analyze_scene(Path("scene.tif"), classifier, progress=print, cancel=threading.Event())
    result.shares()            # [ClassShare(key='harbor', fraction=0.31, km2=0.12, ...), ...]
    result.summary("zh")       # '共 64 个分块（每块约 76.8 米见方）……'
    answer_from_map(result, "港口占多大面积？", "zh")
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from vocabulary.scenes import UCM_SCENES
from imagery.tiles import TILE_GROUND_M, SceneSource, Window, open_scene

MIN_VALID = 0.5  # a cell with less data than this (nodata, mask, outside the scene) is skipped, marked "nodata"
BATCH_SIZE = 32
FORMAT_VERSION = 1

# Words users say for a class besides its glossary names (UCM_SCENES zh / en).
CLASS_WORDS: dict[str, tuple[str, ...]] = {
    "agricultural": ("耕地", "农业", "农地", "farmland", "cropland", "field"),
    "airplane": ("飞机", "机场", "airport", "plane", "aircraft"),
    "baseballdiamond": ("棒球", "baseball"),
    "beach": ("沙滩", "海岸", "coast"),
    "buildings": ("建筑", "楼房", "building"),
    "chaparral": ("灌木", "shrub"),
    "denseresidential": ("密集住宅", "dense residential"),
    "forest": ("树林", "林地", "woods", "trees"),
    "freeway": ("公路", "高速", "highway", "motorway"),
    "golfcourse": ("高尔夫", "golf"),
    "harbor": ("港", "码头", "船", "harbour", "port", "marina", "dock"),
    "intersection": ("路口", "交叉口", "crossroad"),
    "mediumresidential": ("中密度住宅", "medium residential"),
    "mobilehomepark": ("移动房屋", "房车", "mobile home", "trailer park"),
    "overpass": ("立交", "高架", "interchange"),
    "parkinglot": ("停车", "parking"),
    "river": ("河", "江", "stream"),
    "runway": ("跑道", "runway"),
    "sparseresidential": ("稀疏住宅", "sparse residential"),
    "storagetanks": ("储罐", "油罐", "储油罐", "罐", "tank", "tanks", "oil tank"),
    "tenniscourt": ("网球", "tennis"),
}
WHERE_WORDS = ("哪里", "哪儿", "在哪", "位置", "分布", "where", "locate", "show", "highlight", "find")
AREA_WORDS = ("面积", "多大", "多少", "占", "比例", "how much", "how large", "how big", "area", "share", "percent")


class AnalysisCancelled(Exception):
    """Internal: the cancel flag was set; the finished tiles are kept."""


@dataclass
class TileResult:
    row: int
    col: int
    window: Window  # the grid cell (col_off, row_off, width, height) in scene pixels
    status: str  # "classified" | "nodata" | "pending" (not reached: cancelled)
    cls: str | None = None  # UCM class key
    prob: float | None = None
    valid: float = 1.0  # fraction of the cell that holds data


@dataclass
class ClassShare:
    key: str
    zh: str
    en: str
    tiles: int
    fraction: float  # of the classified area
    km2: float | None  # when the scene is georeferenced in a projected CRS


@dataclass
class LandUseMap:
    width: int
    height: int
    tile_px: int  # tile side in scene pixels
    rows: int
    cols: int
    classes: list[str]
    bands: list[int]
    crs: str | None = None
    transform: list[float] | None = None
    gsd_m: float | None = None  # metres per pixel: the GeoTIFF's, else the one the caller gave, else None
    georef_gsd: bool = False  # gsd_m came from the GeoTIFF (areas in km² are then real)
    tiles: list[TileResult] = field(default_factory=list)
    cancelled: bool = False
    seconds: float = 0.0
    source_name: str = ""
    version: int = FORMAT_VERSION

    # --- derived ------------------------------------------------------------------------------------------------
    @property
    def complete(self) -> bool:
        return not any(t.status == "pending" for t in self.tiles)

    def counts(self) -> dict[str, int]:
        out = {"classified": 0, "nodata": 0, "pending": 0}
        for t in self.tiles:
            out[t.status] += 1
        return out

    def pixel_area_m2(self) -> float | None:
        return self.gsd_m**2 if self.gsd_m else None

    def tile_area_px(self, tile: TileResult) -> float:
        return tile.window[2] * tile.window[3] * tile.valid

    def shares(self) -> list[ClassShare]:
        """Classes found, largest first: tiles, fraction of the classified area, km² when known."""
        area: dict[str, float] = {}
        tiles: dict[str, int] = {}
        for t in self.tiles:
            if t.status == "classified":
                area[t.cls] = area.get(t.cls, 0.0) + self.tile_area_px(t)
                tiles[t.cls] = tiles.get(t.cls, 0) + 1
        total = sum(area.values()) or 1.0
        pixel = self.pixel_area_m2()
        rows = [ClassShare(k, scene_name(k, "zh"), scene_name(k, "en"), tiles[k], a / total,
                           a * pixel / 1e6 if pixel else None) for k, a in area.items()]
        return sorted(rows, key=lambda s: (-s.fraction, s.key))

    def tiles_of(self, key: str) -> list[TileResult]:
        return [t for t in self.tiles if t.status == "classified" and t.cls == key]

    def tile_at(self, x: float, y: float) -> TileResult | None:
        """The tile holding scene pixel (x, y), or None outside the scene."""
        if not (0 <= x < self.width and 0 <= y < self.height):
            return None
        row, col = int(y // self.tile_px), int(x // self.tile_px)
        return self.tiles[row * self.cols + col]

    def pixel_to_map(self, x: float, y: float) -> tuple[float, float]:
        """Scene pixel -> CRS coordinates (the pixel itself when not georeferenced)."""
        if not self.transform:
            return x, y
        a, b, c, d, e, f = self.transform
        return a * x + b * y + c, d * x + e * y + f

    # --- text -----------------------------------------------------------------------------------------------------
    def summary(self, lang: str = "zh", top: int = 5) -> str:
        counts = self.counts()
        shares = self.shares()
        size = f"{TILE_GROUND_M:g}" if self.gsd_m else None
        km2 = self.georef_gsd and self.gsd_m is not None
        if lang == "zh":
            head = (f"共 {len(self.tiles)} 个分块（{self.rows} 行 × {self.cols} 列，每块 {self.tile_px} 像素"
                    + (f"，约 {size} 米见方" if size else "") + f"），已分类 {counts['classified']} 块")
            if counts["nodata"]:
                head += f"，{counts['nodata']} 块无数据已跳过"
            if counts["pending"]:
                head += f"，已取消，{counts['pending']} 块未分析"
            parts = [f"{s.zh} {s.fraction:.0%}" + (f"（{s.km2:.3g} 平方公里）" if km2 else "") for s in shares[:top]]
            body = ("。主要地物：" + "、".join(parts) + "。") if parts else "。没有可分类的分块。"
            if len(shares) == 1 or (len(shares) > 1 and shares[0].fraction > shares[1].fraction):
                body += f"面积最大的是{shares[0].zh}。"
            return head + body
        head = (f"{len(self.tiles)} tiles ({self.rows} rows x {self.cols} columns of {self.tile_px} px"
                + (f", about {size} m a side" if size else "") + f"), {counts['classified']} classified")
        if counts["nodata"]:
            head += f", {counts['nodata']} without data skipped"
        if counts["pending"]:
            head += f", cancelled with {counts['pending']} not analysed"
        parts = [f"{s.en} {s.fraction:.0%}" + (f" ({s.km2:.3g} km²)" if km2 else "") for s in shares[:top]]
        body = (". Main land uses: " + ", ".join(parts) + ".") if parts else ". No tile could be classified."
        return head + body

    # --- JSON -------------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        # compact tiles: [row, col, x, y, w, h, status, cls, prob, valid]
        data["tiles"] = [[t.row, t.col, *t.window, t.status, t.cls, None if t.prob is None else round(t.prob, 4),
                          round(t.valid, 6)] for t in self.tiles]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LandUseMap:
        values = dict(data)
        values["tiles"] = [TileResult(r[0], r[1], tuple(r[2:6]), r[6], r[7], r[8], r[9]) for r in data["tiles"]]
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in values.items() if k in known})


def scene_name(key: str, lang: str) -> str:
    scene = UCM_SCENES.get(key)
    if scene is None:
        return key
    return scene.zh if lang == "zh" else scene.en


def analyze_scene(
    source: SceneSource,
    classifier,
    gsd: float | None = None,
    bands: Sequence[int] | str | None = None,
    batch_size: int = BATCH_SIZE,
    progress: Callable[[int, int], None] | None = None,
    cancel: threading.Event | None = None,
    min_valid: float = MIN_VALID,
    source_name: str = "",
) -> LandUseMap:
    """Classify every tile of a scene. `gsd`: metres per pixel for a scene without a projected CRS (ignored when
    the GeoTIFF has one). `progress(done, total)` is called after each batch; when `cancel` is set the tiles
    finished so far are kept and the rest stay "pending" (`result.cancelled`). Raises ImageError (bilingual) for
    unreadable input."""
    started = time.perf_counter()
    with open_scene(source, bands) as scene:
        info = scene.info
        grid = scene.grid(gsd)
        result = LandUseMap(
            width=info.width, height=info.height, tile_px=grid.side, rows=grid.rows, cols=grid.cols,
            classes=list(classifier.classes), bands=list(info.bands), crs=info.crs,
            transform=list(info.transform) if info.transform else None, gsd_m=info.gsd_m or gsd,
            georef_gsd=info.gsd_m is not None, source_name=source_name,
            tiles=[TileResult(r, c, grid.cell(r, c), "pending") for r, c in grid.cells()],
        )
        total = len(result.tiles)
        batch: list[tuple[TileResult, np.ndarray]] = []
        done = 0

        def flush() -> None:
            nonlocal done
            if not batch:
                return
            probs = classifier.classify(np.stack([pixels for _, pixels in batch]))  # (B, K)
            for (tile, _), p in zip(batch, probs):
                best = int(p.argmax())
                tile.status, tile.cls, tile.prob = "classified", result.classes[best], float(p[best])
            done += len(batch)
            batch.clear()
            if progress:
                progress(done, total)

        try:
            for tile in result.tiles:
                if cancel is not None and cancel.is_set():
                    raise AnalysisCancelled
                read = scene.read_tile(grid, tile.row, tile.col)
                tile.valid = read.valid
                if read.valid < min_valid:
                    tile.status = "nodata"
                    done += 1
                    continue
                batch.append((tile, read.pixels))
                if len(batch) >= batch_size:
                    flush()
            flush()
            if progress and not batch and result.tiles[-1].status == "nodata":
                progress(done, total)  # the last tiles were nodata: no batch reported the end
        except AnalysisCancelled:
            for tile, _ in batch:
                tile.status = "pending"
            result.cancelled = True
    result.seconds = time.perf_counter() - started
    return result


# --- follow-ups ------------------------------------------------------------------------------------------------------
def find_classes(text: str) -> list[str]:
    """UCM classes a question names ("哪里有储罐？" -> ['storagetanks']), longest match first so that
    "密集住宅区" is not also "住宅"."""
    lowered = text.lower()
    hits: list[tuple[int, str]] = []
    for key, scene in UCM_SCENES.items():
        words = (scene.zh, scene.en.lower(), key, *CLASS_WORDS.get(key, ()))
        best = max((len(w) for w in words if w and w.lower() in lowered), default=0)
        if best:
            hits.append((best, key))
    if not hits:
        return []
    # One-character words ("港", "罐") count only when nothing more specific matched ("飞机和港口" -> both).
    floor = min(max(n for n, _ in hits), 2)
    return [key for n, key in sorted(hits, key=lambda h: -h[0]) if n >= floor]


def intent_of(text: str) -> str | None:
    lowered = text.lower()
    if any(w in lowered for w in AREA_WORDS):
        return "area"
    if any(w in lowered for w in WHERE_WORDS):
        return "where"
    return None


def describe_tiles(result: LandUseMap, key: str, lang: str = "zh", limit: int = 8) -> str:
    """Where a class is: how many tiles, and the first few as (row, column) with their centres."""
    tiles = result.tiles_of(key)
    name = scene_name(key, lang)
    if not tiles:
        return (f"分块地图中没有被识别为{name}的分块。" if lang == "zh"
                else f"No tile of the map was classified as {name}.")
    spots = []
    for t in sorted(tiles, key=lambda t: -(t.prob or 0))[:limit]:
        cx, cy = t.window[0] + t.window[2] / 2, t.window[1] + t.window[3] / 2
        mx, my = result.pixel_to_map(cx, cy)
        where = f"({mx:.1f}, {my:.1f})" if result.transform else f"(x={cx:.0f}, y={cy:.0f})"
        spots.append(f"{t.row + 1}-{t.col + 1} {where} {t.prob:.0%}" if lang != "zh"
                     else f"第{t.row + 1}行第{t.col + 1}列 {where} 置信度 {t.prob:.0%}")
    more = len(tiles) - len(spots)
    if lang == "zh":
        return (f"{name}出现在 {len(tiles)} 个分块中（已在地图上高亮）：" + "；".join(spots)
                + (f"；另有 {more} 块。" if more else "。"))
    return (f"{name} appears in {len(tiles)} tiles (highlighted on the map): " + "; ".join(spots)
            + (f"; {more} more." if more else "."))


def describe_area(result: LandUseMap, key: str, lang: str = "zh") -> str:
    name = scene_name(key, lang)
    share = next((s for s in result.shares() if s.key == key), None)
    if share is None:
        return (f"分块地图中没有{name}，面积为 0。" if lang == "zh" else f"The map has no {name}: its area is 0.")
    km2 = share.km2 if result.georef_gsd else None
    if lang == "zh":
        return (f"{name}占已分类面积的 {share.fraction:.1%}（{share.tiles} 个分块）"
                + (f"，约 {km2:.3g} 平方公里。" if km2 is not None else "。影像没有地理参考，只能给出比例。"))
    return (f"{name} covers {share.fraction:.1%} of the classified area ({share.tiles} tiles)"
            + (f", about {km2:.3g} km²." if km2 is not None else "; the image has no georeference, so only the share."))


def answer_from_map(result: LandUseMap, text: str, lang: str = "zh") -> tuple[str, str | None] | None:
    """(answer, highlighted class or None) for a where / area question about a class of the map; None when the
    question is not one (it then goes to the chat model)."""
    keys = find_classes(text)
    intent = intent_of(text)
    if not keys or intent is None:
        return None
    answers = [describe_area(result, k, lang) if intent == "area" else describe_tiles(result, k, lang) for k in keys]
    return "\n".join(answers), (keys[0] if intent == "where" else None)


__all__ = ["LandUseMap", "TileResult", "ClassShare", "analyze_scene", "answer_from_map", "describe_area",
           "describe_tiles", "find_classes", "intent_of", "scene_name", "MIN_VALID"]
