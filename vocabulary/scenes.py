"""Scene classes of the three caption datasets (UCM, Sydney, RSICD) and the file-name -> class rules.

Pure data plus small lookups; no I/O. Used by the data builder (`finetune/data/`), the mini model, the evaluator,
the land-use map (`bot/landuse.py`, `bench/landuse.py`) and chat titles (`bot/titles.py`). The glossary lives in
`vocabulary/glossary.py`, the object vocabulary in `vocabulary/objects.py`.

Scene labels:
- UCM (UCMerced_LandUse, 21 classes): caption file `N.tif`, N in 1..2100, is class `(N - 1) // 100` of the
  alphabetical class list (verified against the captions: 1..100 farmland, 101..200 airplanes, ...).
- Sydney (7 classes): the caption file is ordered by class, `N.tif` falls in contiguous ranges
  (residential 1-242, airport 243-264, meadow 265-314, river 315-359, ocean 360-451, industrial 452-547,
  runway 548-613; boundaries checked against the captions, class sizes match Qu et al. 2016).
- RSICD (30 classes): the class is the file-name prefix (`viaduct_99.jpg`). The 921 numeric names (`00001.jpg`)
  carry no class; `scene_of` returns None for them. `guess_scene_from_captions` offers a conservative caption vote
  (used by nobody by default; documented so a caller can opt in knowingly).
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Scene:
    """One scene class: `key` as in file names, Chinese and English display names."""

    key: str
    zh: str
    en: str


def _scenes(rows: list[tuple[str, str, str]]) -> dict[str, Scene]:
    return {k: Scene(k, zh, en) for k, zh, en in rows}


UCM_SCENES: dict[str, Scene] = _scenes([
    ("agricultural", "农田", "agricultural land"),
    ("airplane", "飞机", "airplane"),
    ("baseballdiamond", "棒球场", "baseball diamond"),
    ("beach", "海滩", "beach"),
    ("buildings", "建筑群", "buildings"),
    ("chaparral", "灌木丛", "chaparral"),
    ("denseresidential", "密集住宅区", "dense residential area"),
    ("forest", "森林", "forest"),
    ("freeway", "高速公路", "freeway"),
    ("golfcourse", "高尔夫球场", "golf course"),
    ("harbor", "港口", "harbor"),
    ("intersection", "十字路口", "intersection"),
    ("mediumresidential", "中等密度住宅区", "medium residential area"),
    ("mobilehomepark", "移动房屋社区", "mobile home park"),
    ("overpass", "立交桥", "overpass"),
    ("parkinglot", "停车场", "parking lot"),
    ("river", "河流", "river"),
    ("runway", "跑道", "runway"),
    ("sparseresidential", "稀疏住宅区", "sparse residential area"),
    ("storagetanks", "储罐", "storage tanks"),
    ("tenniscourt", "网球场", "tennis court"),
])

SYDNEY_SCENES: dict[str, Scene] = _scenes([
    ("residential", "住宅区", "residential area"),
    ("airport", "机场", "airport"),
    ("meadow", "草地", "meadow"),
    ("river", "河流", "river"),
    ("ocean", "海洋", "ocean"),
    ("industrial", "工业区", "industrial area"),
    ("runway", "跑道", "runway"),
])
# Inclusive upper file number of each Sydney class, in file order.
SYDNEY_RANGES: list[tuple[int, str]] = [
    (242, "residential"), (264, "airport"), (314, "meadow"), (359, "river"),
    (451, "ocean"), (547, "industrial"), (613, "runway"),
]

RSICD_SCENES: dict[str, Scene] = _scenes([
    ("airport", "机场", "airport"),
    ("bareland", "裸地", "bare land"),
    ("baseballfield", "棒球场", "baseball field"),
    ("beach", "海滩", "beach"),
    ("bridge", "桥梁", "bridge"),
    ("center", "中心", "center"),
    ("church", "教堂", "church"),
    ("commercial", "商业区", "commercial area"),
    ("denseresidential", "密集住宅区", "dense residential area"),
    ("desert", "沙漠", "desert"),
    ("farmland", "农田", "farmland"),
    ("forest", "森林", "forest"),
    ("industrial", "工业区", "industrial area"),
    ("meadow", "草地", "meadow"),
    ("mediumresidential", "中等密度住宅区", "medium residential area"),
    ("mountain", "山地", "mountain"),
    ("park", "公园", "park"),
    ("parking", "停车场", "parking lot"),
    ("playground", "操场", "playground"),
    ("pond", "池塘", "pond"),
    ("port", "港口", "port"),
    ("railwaystation", "火车站", "railway station"),
    ("resort", "度假村", "resort"),
    ("river", "河流", "river"),
    ("school", "学校", "school"),
    ("sparseresidential", "稀疏住宅区", "sparse residential area"),
    ("square", "广场", "square"),
    ("stadium", "体育场", "stadium"),
    ("storagetanks", "储罐", "storage tanks"),
    ("viaduct", "高架桥", "viaduct"),
])

SCENES: dict[str, dict[str, Scene]] = {"ucm": UCM_SCENES, "sydney": SYDNEY_SCENES, "rsicd": RSICD_SCENES}


def _stem(filename: str) -> str:
    return filename.rsplit("/", 1)[-1].rsplit(".", 1)[0]


def _ucm_scene(filename: str) -> str | None:
    stem = _stem(filename)
    if not stem.isdigit() or not 1 <= int(stem) <= 2100:
        return None
    return list(UCM_SCENES)[(int(stem) - 1) // 100]


def _sydney_scene(filename: str) -> str | None:
    stem = _stem(filename)
    if not stem.isdigit():
        return None
    n = int(stem)
    for last, key in SYDNEY_RANGES:
        if 1 <= n <= last:
            return key
    return None


def _rsicd_scene(filename: str) -> str | None:
    prefix = _stem(filename).rsplit("_", 1)[0]
    return prefix if prefix in RSICD_SCENES else None


_SCENE_RULES = {"ucm": _ucm_scene, "sydney": _sydney_scene, "rsicd": _rsicd_scene}


def scene_of(dataset: str, filename: str) -> str | None:
    """Scene class key of an image from its caption-file name (`"ucm", "101.tif"` -> `"airplane"`), or None."""
    rule = _SCENE_RULES.get(dataset.lower())
    return rule(filename) if rule else None


def scene(dataset: str, key: str) -> Scene:
    """The `Scene` (Chinese / English names) of a class key of a dataset."""
    return SCENES[dataset.lower()][key]


# --- optional caption-based scene guess for RSICD's unnamed files --------------------------------------------------
_GUESS_KEYWORDS: dict[str, str] = {
    "airport": "airport", "bareland": r"bare ?land", "baseballfield": r"baseball ?fields?", "beach": "beach",
    "bridge": "bridge", "church": "church", "commercial": "commercial", "desert": "desert", "farmland": r"farm ?lands?",
    "forest": "forest", "industrial": "industrial", "meadow": "meadow", "mountain": "mountains?", "park": r"park\b",
    "parking": "parking", "playground": "playground", "pond": "ponds?", "port": r"port\b|harbou?r",
    "railwaystation": r"railway station|train station", "resort": "resort", "river": "river", "school": "school",
    "square": r"\bsquare\b", "stadium": "stadium", "storagetanks": "storage tanks?", "viaduct": "viaduct",
}


def guess_scene_from_captions(sentences: list[str], min_votes: int = 4) -> str | None:
    """RSICD class whose keyword is in at least `min_votes` of the captions while no other class reaches 2, else None.

    Conservative on purpose (for the 921 numerically named RSICD images); callers must treat the result as a guess.
    """
    votes = {k: sum(bool(re.search(p, s.lower())) for s in sentences) for k, p in _GUESS_KEYWORDS.items()}
    best = max(votes, key=votes.get)
    others = [v for k, v in votes.items() if k != best]
    return best if votes[best] >= min_votes and max(others, default=0) < 2 else None
