"""English -> Chinese glossary, colour and number words of the caption datasets.

Pure data plus one lookup; no I/O. The translation tool injects the glossary into its prompts and checks
translations against it and the colour / number tables (`translate/prompts.py`, `translate/validate.py`).
"""

from __future__ import annotations

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
