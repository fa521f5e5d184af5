"""Object vocabulary of the captions: the things presence / count questions ask about, and the faithfulness check.

Pure data plus small lookups; no I/O. Used by the task generators (`finetune/data/tasks.py`), the evaluator
("objects named that no reference mentions", `unsupported_objects`) and the translation checker.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


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
