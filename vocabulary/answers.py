"""Reading a scene class, a yes / no or a number out of a free answer, in Chinese or English.

Pure functions over strings; no I/O. Used to build data (`finetune/data/intents.py`: refer-back answers), to grade
answers (`intents.grade`) and by the evaluator (`finetune/evaluate/`), so that neither imports the other for them.
"""

from __future__ import annotations

import re

from vocabulary.scenes import SCENES


def scene_names(dataset: str) -> list[tuple[str, str]]:
    """(name, class key) pairs of a dataset's scenes in Chinese and English, longest name first."""
    pairs = []
    for key, sc in SCENES[dataset].items():
        pairs += [(sc.zh, key), (sc.en.lower(), key), (key, key)]
    return sorted(set(pairs), key=lambda p: -len(p[0]))


def parse_scene(answer: str, dataset: str) -> str | None:
    """Class key named in a scene answer ("这是一张机场的遥感图像。" -> "airport"), the longest match; None if none."""
    text = answer.lower()
    for name, key in scene_names(dataset):
        if name in text:
            return key
    return None


_NO_ZH = re.compile(r"没有|看不到|不是|无|否|不")
_YES_ZH = re.compile(r"是的|有|是|可以看到|能看到")


def parse_yes_no(answer: str) -> str | None:
    """'yes' / 'no' / None from a presence answer in either language."""
    text = answer.strip().lower()
    if re.match(r"^(no|not)\b", text) or re.search(r"\b(no|not|cannot|can't|isn't|aren't)\b", text[:40]):
        return "no"
    if re.match(r"^yes\b", text) or re.search(r"\b(yes|there (is|are)|can be seen|i can see)\b", text):
        return "yes"
    if _NO_ZH.search(text[:8]):
        return "no"
    if _YES_ZH.search(text):
        return "yes"
    return None


_ZH_NUM = {"一": 1, "两": 2, "二": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9, "十": 10,
           "十一": 11, "十二": 12}
_EN_NUM = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
           "ten": 10, "eleven": 11, "twelve": 12}


def parse_count(answer: str) -> int | None:
    """First number in a count answer (digits, English words, Chinese numerals up to 12)."""
    m = re.search(r"\d+", answer)
    if m:
        return int(m.group())
    words = re.findall(r"[a-z]+", answer.lower())
    for w in words:
        if w in _EN_NUM:
            return _EN_NUM[w]
    text = _ZH_NOT_A_NUMBER.sub("", answer)
    found = [(m.start(), -len(zh), zh) for zh in _ZH_NUM for m in re.finditer(zh, text)]
    return _ZH_NUM[min(found)[2]] if found else None  # the first numeral, the longest one where two start


# Words with a numeral that is not a count ("一共有四架" = "four in all").
_ZH_NOT_A_NUMBER = re.compile(r"一共|一些|一起|一直|一样|一边|一侧|一部分|一下|一般|统一|唯一|之一|一片片")
