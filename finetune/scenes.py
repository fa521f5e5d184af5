"""Scene classes, object vocabulary and the English -> Chinese glossary of the three caption datasets.

Pure data plus small lookups; no I/O. Used by the data builder (`finetune/data.py`), the translation tool
(`translate/`, glossary injection and checking), the mini model and the evaluator (scene labels, and the object
vocabulary for the faithfulness check "objects named that no reference mentions").

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
from dataclasses import dataclass, field


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


# --- glossary -------------------------------------------------------------------------------------------------
# English term -> Chinese term, derived from the shipped translations (data/zh/*.jsonl): each term below is rendered
# this way in >= 97 % of the shipped sentences that contain it (measured 2026-11-27). Ambiguous words (square as a
# shape, track, center as "middle") are left out so the check never fights a correct translation.
GLOSSARY: dict[str, str] = {
    "farmland": "农田", "cropland": "耕地", "storage tank": "储罐", "overpass": "立交桥",
    "mobile home park": "移动房屋社区", "mobile home": "移动房屋", "viaduct": "高架桥", "playground": "操场",
    "pond": "池塘", "church": "教堂", "dense residential": "密集住宅区", "medium residential": "中等密度住宅区",
    "sparse residential": "稀疏住宅区", "residential area": "住宅区", "tennis court": "网球场",
    "baseball diamond": "棒球场", "baseball field": "棒球场", "golf course": "高尔夫球场", "harbor": "港口",
    "port": "港口", "runway": "跑道", "airplane": "飞机", "airport": "机场", "beach": "海滩", "freeway": "高速公路",
    "crossroad": "十字路口", "parking lot": "停车场", "river": "河", "forest": "森林", "meadow": "草地",
    "grassland": "草地", "bare land": "裸地", "bareland": "裸地", "desert": "沙漠", "school": "学校",
    "railway station": "火车站", "commercial area": "商业区", "industrial area": "工业区", "bridge": "桥",
    "boat": "船", "ship": "船", "lawn": "草坪", "swimming pool": "游泳池", "bunker": "沙坑",
    "football field": "足球场", "basketball court": "篮球场", "villa": "别墅", "oval": "椭圆", "lake": "湖",
    "container": "集装箱", "resort": "度假村", "chaparral": "灌木",
}
# Other renderings of a glossary term that the shipped translations use and a checker must accept.
GLOSSARY_ALTERNATES: dict[str, tuple[str, ...]] = {
    "beach": ("沙滩",), "storage tank": ("油罐",), "harbor": ("港",), "port": ("港",), "stadium": ("球场",),
    "airplane": ("客机",), "meadow": ("草甸", "草原"), "desert": ("荒漠",),
    "playground": ("球场", "运动场", "田径场"), "forest": ("林",), "dense residential": ("密集的住宅", "密集住宅"), "resort": ("度假",),
}

COLOURS: dict[str, tuple[str, ...]] = {
    "red": ("红",), "white": ("白",), "blue": ("蓝", "藏青"), "grey": ("灰",), "gray": ("灰",),
    "yellow": ("黄",), "orange": ("橙", "橘"), "brown": ("棕", "褐"), "purple": ("紫",), "pink": ("粉",),
}
NUMBERS: dict[str, int] = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "eleven": 11, "twelve": 12,
}
ZH_DIGITS: dict[int, tuple[str, ...]] = {
    1: ("一",), 2: ("两", "二", "双"), 3: ("三",), 4: ("四",), 5: ("五",), 6: ("六",), 7: ("七",), 8: ("八",),
    9: ("九",), 10: ("十",), 11: ("十一",), 12: ("十二",),
}


def glossary_variants(term: str) -> tuple[str, ...]:
    """All accepted Chinese renderings of a glossary term."""
    return (GLOSSARY[term], *GLOSSARY_ALTERNATES.get(term, ()))


# --- object vocabulary (presence / count questions, faithfulness) ------------------------------------------------
@dataclass(frozen=True)
class ObjectTerm:
    """A countable or checkable thing in captions.

    `en` are regexes matched on lower-cased English (plural forms and frequent caption typos included), `zh_match`
    are regexes (mostly plain substrings) that name it in Chinese text. `negative_ok` is False for things so common in aerial images (trees, roads, buildings, cars) that
    captions omitting them say nothing about their absence: these are never used as "no" answers.
    """

    key: str
    en_name: str
    en_plural: str
    zh: str
    measure: str  # Chinese measure word for counts, e.g. 架 for airplanes
    en: tuple[str, ...]
    zh_match: tuple[str, ...]
    negative_ok: bool = True
    countable: bool = True
    support: tuple[str, ...] = ()  # extra English regexes that may refer to it (runway: "track"); see in_en_loose
    pattern: re.Pattern = field(init=False, repr=False, compare=False)
    loose: re.Pattern = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "pattern", re.compile(r"\b(?:" + "|".join(self.en) + r")\b"))
        object.__setattr__(self, "loose", re.compile(r"\b(?:" + "|".join(self.en + self.support) + r")\b"))

    def in_en(self, text: str) -> bool:
        """Named for sure: used for presence "yes" answers and counts."""
        return bool(self.pattern.search(text.lower()))

    def in_en_loose(self, text: str) -> bool:
        """Possibly named: used to rule out "no" answers and to accept an answer's object as supported."""
        return bool(self.loose.search(text.lower()))

    def in_zh(self, text: str) -> bool:
        return any(re.search(z, text) for z in self.zh_match)


def _o(key, en_name, en_plural, zh, measure, en, zh_match, negative_ok=True, countable=True, support=()) -> ObjectTerm:
    return ObjectTerm(key, en_name, en_plural, zh, measure, tuple(en), tuple(zh_match), negative_ok, countable,
                      tuple(support))


OBJECTS: dict[str, ObjectTerm] = {o.key: o for o in [
    _o("airplane", "airplane", "airplanes", "飞机", "架", [r"air ?planes?", r"planes?", r"aeroplanes?", r"aircrafts?",
                                                          r"jets?"], ["飞机", "客机"]),
    _o("storage_tank", "storage tank", "storage tanks", "储罐", "个", [r"storage ?tanks?", r"oil tanks?", r"tanks?"],
       ["储罐", "油罐"]),
    _o("tennis_court", "tennis court", "tennis courts", "网球场", "个", [r"tennis ?courts?"], ["网球场"]),
    _o("boat", "boat", "boats", "船", "艘", [r"boats?", r"ships?", r"yachts?", r"speedboats?", r"vessels?"], ["船", "艇"]),
    _o("baseball_field", "baseball field", "baseball fields", "棒球场", "个",
       [r"baseball ?(?:fields?|diamonds?)"], ["棒球场"]),
    _o("football_field", "football field", "football fields", "足球场", "个",
       [r"fo\w?tball ?(?:fields?|courts?|pitch(?:es)?|playgrounds?|stadiums?)",
        r"soccer ?(?:fields?|courts?|pitch(?:es)?|playgrounds?|stadiums?)"], ["足球场"]),
    _o("basketball_court", "basketball court", "basketball courts", "篮球场", "个", [r"ba(?:sk|ks)\w*ball ?(?:courts?|fields?|playgrounds?)"],
       ["篮球场"]),
    _o("swimming_pool", "swimming pool", "swimming pools", "游泳池", "个", [r"swimming ?pools?", r"pools?"],
       ["游泳池", "泳池", "水池"]),
    _o("runway", "runway", "runways", "跑道", "条", [r"runways?", r"flight paths?", r"airstrips?"], ["跑道"],
       support=[r"tracks?"]),
    _o("bridge", "bridge", "bridges", "桥", "座", [r"bridges?", r"overpass(?:es)?", r"viaducts?", r"flyovers?"], ["桥"]),
    _o("overpass", "overpass", "overpasses", "立交桥", "座", [r"overpass(?:es)?", r"viaducts?"], ["立交桥", "高架桥"]),
    _o("parking_lot", "parking lot", "parking lots", "停车场", "个",
       [r"parking ?lots?", r"parking (?:areas?|places?|spaces?)"], ["停车场"]),
    _o("river", "river", "rivers", "河流", "条", [r"rivers?"], ["河"]),
    _o("pond", "pond", "ponds", "池塘", "个", [r"ponds?", r"lakes?"], ["池塘", "湖"]),
    _o("church", "church", "churches", "教堂", "座", [r"church(?:es)?"], ["教堂"]),
    _o("playground", "playground", "playgrounds", "操场", "个",
       [r"(?<!basketball )(?<!football )(?<!tennis )playgrounds?"], ["操场"]),
    _o("beach", "beach", "beaches", "海滩", "片", [r"beach(?:es)?"], ["海滩", "沙滩"], countable=False),
    _o("farmland", "farmland", "farmland", "农田", "片", [r"farm ?lands?", r"farms?", r"croplands?", r"fields? of crops?"],
       ["农田", "耕地"], countable=False),
    _o("railway", "railway", "railways", "铁路", "条",
       [r"railways?(?! station)", r"railroads?", r"rails?", r"rail ?tracks?"], ["铁路", "铁轨"]),
    _o("golf_course", "golf course", "golf courses", "高尔夫球场", "个", [r"golf ?courses?"], ["高尔夫"]),
    _o("road", "road", "roads", "道路", "条", [r"roads?", r"streets?", r"highways?", r"freeways?", r"intersections?", r"crossroads?",
        r"junctions?", r"lanes?", r"avenues?", r"overpass(?:es)?", r"viaducts?"], [r"(?<!铁)路", r"街(?!区)"],
       negative_ok=False),
    _o("building", "building", "buildings", "建筑物", "栋", [r"buildings?", r"bui\w*ings?", r"offices?", r"terminals?", r"flats?",
       r"apartments?", r"stations?", r"factory|factories", r"warehouses?", r"churche?s?", r"schools?"], ["建筑", "楼"], negative_ok=False),
    _o("house", "house", "houses", "房屋", "栋", [r"houses?", r"villas?", r"homes?", r"residential", r"housing", r"apartments?",
       r"dwellings?", r"cottages?"], ["房", "别墅", "住宅"], negative_ok=False),
    _o("tree", "tree", "trees", "树", "棵", [r"trees?", r"tress", r"woods?", r"groves?", r"forests?"], ["树", "森林"], negative_ok=False),
    _o("car", "car", "cars", "汽车", "辆", [r"cars?", r"casr", r"vehicles?", r"trucks?", r"automobiles?", r"buses"],
       ["汽车", "车辆", "轿车", "卡车", "小车", "车子"], negative_ok=False),
]}


_CJK = re.compile(r"[\u4e00-\u9fff]")


def objects_in(text: str, loose: bool = False) -> set[str]:
    """Keys of the OBJECTS a text names (Chinese text is matched with `zh_match`, other text with the regexes)."""
    if _CJK.search(text):
        return {k for k, o in OBJECTS.items() if o.in_zh(text)}
    return {k for k, o in OBJECTS.items() if (o.in_en_loose(text) if loose else o.in_en(text))}


def unsupported_objects(answer: str, references: list[str], distinctive_only: bool = False) -> list[str]:
    """Objects the answer names that no reference (English or Chinese) mentions: the faithfulness check.

    Example: answer "图中有两架飞机和一个储罐", references about airplanes only -> ["storage_tank"].
    Pass references in the answer's language when you have them (vocabularies match best within a language);
    `distinctive_only` ignores ubiquitous things (roads, trees, buildings, houses, cars).
    """
    mentioned = set().union(*(objects_in(r, loose=True) for r in references)) if references else set()
    found = objects_in(answer) - mentioned
    return sorted(k for k in found if OBJECTS[k].negative_ok or not distinctive_only)


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
