"""Instruction tasks derived from one image's captions: describe, scene, presence, count, multi-turn.

Each task is a function `(record, split, rng, pools) -> list[Sample]` registered in `TASKS`; `finetune/data/builder.py`
loads the records and writes the files. Everything here is pure and deterministic given the rng.

Facts come only from the captions and the file-name scene label (vocabulary/scenes.py):
- presence "yes" = an object some English reference names; "no" = an object with `negative_ok` that none of the 5
  references (English or Chinese) names and that the scene label does not imply. Ubiquitous things (trees, roads,
  buildings, houses, cars) are never "no" answers: captions that omit them say nothing about their absence.
- count = a number stated before an object ("four airplanes", "3 storage tanks") when every reference that
  quantifies that object agrees (no other number, no "many" for fewer than 5; "some" / "several" are compatible).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from vocabulary.glossary import NUMBERS

from vocabulary.objects import OBJECTS, ObjectTerm

from vocabulary.scenes import scene

POOL_DIR = Path(__file__).resolve().parent / "prompt_pools"
LANGS = ("zh", "en")
ZH_NUMERALS = {1: "一", 2: "两", 3: "三", 4: "四", 5: "五", 6: "六", 7: "七", 8: "八", 9: "九", 10: "十",
               11: "十一", 12: "十二"}
NUMBER_WORDS = {v: k for k, v in NUMBERS.items()}
# Scene class -> object its images show by definition (never used as a "no" answer for that class).
SCENE_OBJECTS: dict[str, str] = {
    "airplane": "airplane", "airport": "airplane", "storagetanks": "storage_tank", "tenniscourt": "tennis_court",
    "harbor": "boat", "port": "boat", "baseballdiamond": "baseball_field", "baseballfield": "baseball_field",
    "runway": "runway", "bridge": "bridge", "overpass": "overpass", "viaduct": "overpass", "parkinglot": "parking_lot",
    "parking": "parking_lot", "river": "river", "pond": "pond", "church": "church", "playground": "playground",
    "beach": "beach", "agricultural": "farmland", "farmland": "farmland", "golfcourse": "golf_course",
    "railwaystation": "railway", "stadium": "football_field",
}


@dataclass
class ImageRecord:
    """One image with its references: what the trainer, the evaluator and the task builders share."""

    dataset: str  # "ucm" | "sydney" | "rsicd"
    filename: str  # as in dataset.json ("101.tif", "viaduct_99.jpg")
    image: str  # path relative to the data root ("ucm/images/101.jpg")
    split: str  # "train" | "val" | "test"
    refs_en: list[str]  # 5 English sentences, stripped
    refs_zh: list[str]  # their Chinese translations, same order
    label: str | None  # scene class key (vocabulary/scenes.py) or None
    imgid: int = 0

    @property
    def stem(self) -> str:
        return self.filename.rsplit(".", 1)[0]


Sample = dict  # one conversation JSONL object (format in the team conventions)


# --- prompt pools -------------------------------------------------------------------------------------------------
def load_pools(pool_dir: Path = POOL_DIR) -> dict[str, list[str]]:
    """`{"describe_zh": [...], "presence_zh.answers": [...], ...}` from the pool files (comments start with #)."""
    pools = {}
    for path in sorted(pool_dir.glob("*.txt")):
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
        pools[path.name[:-4]] = [ln for ln in lines if ln and not ln.startswith("#")]
    return pools


def _yes_no(pool: list[str]) -> tuple[list[str], list[str]]:
    cut = pool.index("---")
    return pool[:cut], pool[cut + 1:]


def _article(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


# --- caption facts ------------------------------------------------------------------------------------------------
# "many" contradicts a small stated number; "some" / "several" do not ("four airplanes" + "some airplanes" -> 4).
_MANY = ("many", "lots of", "a lot of", "numerous", "plenty of", "dozens of")
_VAGUE = "|".join([*_MANY, "some", "several", "a few", "few", "multiple", "rows of", "a row of"])
_NUM = "|".join([*NUMBERS, r"\d{1,2}"])
_STOP = {"and", "with", "of", "are", "is", "in", "on", "at", "the", "a", "an", "by", "to", "near", "there"}


def mentioned_objects(record: ImageRecord) -> list[ObjectTerm]:
    """Objects that at least one English reference names."""
    return [o for o in OBJECTS.values() if any(o.in_en(s) for s in record.refs_en)]


def absent_objects(record: ImageRecord) -> list[ObjectTerm]:
    """Objects safe to ask about with a "no" answer (see module docstring)."""
    implied = SCENE_OBJECTS.get(record.label or "")
    return [o for o in OBJECTS.values()
            if o.negative_ok and o.key != implied
            and not any(o.in_en_loose(s) for s in record.refs_en) and not any(o.in_zh(s) for s in record.refs_zh)]


def _quantities(obj: ObjectTerm, sentence: str) -> list[int | str]:
    """Numbers (or "many" / "some") stated right before `obj` in one sentence, up to two adjectives in between."""
    found: list[int | str] = []
    obj_re = obj.pattern.pattern
    pat = re.compile(rf"\b({_NUM}|{_VAGUE})\s+((?:[a-z-]+\s+){{0,2}}?)({obj_re})")
    for m in pat.finditer(sentence.lower()):
        if any(w in _STOP for w in m.group(2).split()):
            continue
        q = m.group(1)
        found.append(int(q) if q.isdigit() else NUMBERS.get(q, "many" if q in _MANY else "some"))
    return found


def stated_counts(record: ImageRecord) -> dict[str, int]:
    """`{object key: n}` for countable objects whose quantified mentions all state the same number."""
    counts = {}
    for obj in OBJECTS.values():
        if not obj.countable:
            continue
        qs = [q for s in record.refs_en for q in _quantities(obj, s)]
        nums = {q for q in qs if isinstance(q, int)}
        n = next(iter(nums)) if len(nums) == 1 else 0
        if 0 < n <= 12 and not ("many" in qs and n < 5):
            counts[obj.key] = n
    return counts


# --- sample construction ------------------------------------------------------------------------------------------
def _sample(record: ImageRecord, split: str, task: str, lang: str, k: int, question: str, answer: str,
            references: list[str] | None = None, meta: dict | None = None) -> Sample:
    s = {"id": f"{record.dataset}-{record.stem}-{task}-{k}", "dataset": record.dataset, "split": split,
         "image": record.image, "task": task, "lang": lang,
         "messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
         "references": references if references is not None else [answer]}
    if record.label:
        s["label"] = record.label
    if meta:
        s["meta"] = meta
    return s


def _distinct(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def tidy_en(sentence: str) -> str:
    """Caption-file English as a chat answer: "a pond near trees ." -> "A pond near trees." (words untouched)."""
    s = re.sub(r"\s+([.,;!?])", r"\1", " ".join(sentence.split()))
    s = s[:1].upper() + s[1:]
    return s if s.endswith((".", "!", "?")) else s + "."


def describe(record: ImageRecord, split: str, rng: random.Random, pools: dict, lang: str,
             per_image: int = 5) -> list[Sample]:
    refs = record.refs_zh if lang == "zh" else [tidy_en(s) for s in record.refs_en]
    if not refs:
        return []
    task = f"describe_{lang}"
    answers = _distinct(refs)[:per_image] if split == "train" else [refs[0]]
    return [_sample(record, split, task, lang, k, rng.choice(pools[task]), a, references=list(refs))
            for k, a in enumerate(answers)]


def scene_task(record: ImageRecord, split: str, rng: random.Random, pools: dict, lang: str) -> list[Sample]:
    if not record.label:
        return []
    sc = scene(record.dataset, record.label)
    task = f"scene_{lang}"
    name = sc.zh if lang == "zh" else sc.en
    answer = rng.choice(pools[f"{task}.answers"]).format(scene=name, a_scene=_article(name))
    return [_sample(record, split, task, lang, 0, rng.choice(pools[task]), answer,
                    meta={"scene": record.label, "scene_name": name})]


def _obj_fields(obj: ObjectTerm, lang: str) -> dict[str, str]:
    if lang == "zh":
        return {"obj": obj.zh, "measure": obj.measure}
    return {"obj": obj.en_name, "a_obj": _article(obj.en_name), "objs": obj.en_plural}


def presence(record: ImageRecord, split: str, rng: random.Random, pools: dict, lang: str,
             per_image: int = 1) -> list[Sample]:
    """`per_image` yes and as many no questions (balanced; fewer when one side has no candidates)."""
    task = f"presence_{lang}"
    yes_pool, no_pool = _yes_no(pools[f"{task}.answers"])
    pos, neg = mentioned_objects(record), absent_objects(record)
    n = min(per_image, len(pos), len(neg))
    chosen = [(o, True) for o in rng.sample(pos, n)] + [(o, False) for o in rng.sample(neg, n)]
    out = []
    for k, (obj, yes) in enumerate(chosen):
        f = _obj_fields(obj, lang)
        q = rng.choice(pools[task]).format(**f)
        a = rng.choice(yes_pool if yes else no_pool).format(**f)
        out.append(_sample(record, split, task, lang, k, q, a,
                           meta={"object": obj.key, "answer": "yes" if yes else "no"}))
    return out


def count(record: ImageRecord, split: str, rng: random.Random, pools: dict, lang: str) -> list[Sample]:
    task = f"count_{lang}"
    out = []
    for k, (key, n) in enumerate(sorted(stated_counts(record).items())):
        obj = OBJECTS[key]
        f = _obj_fields(obj, lang) | {"n": str(n), "n_zh": ZH_NUMERALS[n], "n_word": NUMBER_WORDS[n],
                                      "obj_n": obj.en_name if n == 1 else obj.en_plural,
                                      "be": "is" if n == 1 else "are"}
        q = rng.choice(pools[task]).format(**f)
        a = rng.choice(pools[f"{task}.answers"]).format(**f)
        out.append(_sample(record, split, task, lang, k, q, a, meta={"object": key, "count": n}))
    return out


def multiturn(record: ImageRecord, split: str, rng: random.Random, pools: dict, singles: list[Sample]) -> list[Sample]:
    """One conversation chaining 2-3 single-turn samples of one language about this image (order shuffled)."""
    lang = rng.choice(LANGS)
    by_task: dict[str, list[Sample]] = {}
    for s in singles:
        if s["lang"] == lang:
            by_task.setdefault(s["task"], []).append(s)
    if len(by_task) < 2:
        return []
    tasks = rng.sample(sorted(by_task), min(len(by_task), rng.choice((2, 3))))
    turns = [rng.choice(by_task[t]) for t in tasks]
    messages = [m for t in turns for m in t["messages"]]
    last = turns[-1]
    s = _sample(record, split, "multiturn", lang, 0, "", "", references=last["references"],
                meta={"tasks": tasks})
    s["messages"] = messages
    return [s]


TaskFn = Callable[..., list[Sample]]
# Single-turn task name -> (builder, language). Multi-turn chains their outputs.
TASKS: dict[str, tuple[TaskFn, str]] = {
    "describe_zh": (describe, "zh"), "describe_en": (describe, "en"),
    "scene_zh": (scene_task, "zh"), "scene_en": (scene_task, "en"),
    "presence_zh": (presence, "zh"), "presence_en": (presence, "en"),
    "count_zh": (count, "zh"), "count_en": (count, "en"),
}
ALL_TASKS = (*TASKS, "multiturn")


def samples_for(record: ImageRecord, seed: int, pools: dict, tasks: tuple[str, ...] = ALL_TASKS,
                describe_per_image: int = 5, presence_per_image: int = 1) -> list[Sample]:
    """All samples of one image; the rng depends only on (seed, dataset, filename), so output is order-independent."""
    rng = random.Random(f"{seed}:{record.dataset}:{record.filename}")
    split = record.split
    singles: list[Sample] = []
    for name, (fn, lang) in TASKS.items():
        kwargs = {"per_image": describe_per_image} if fn is describe else {}
        kwargs = {"per_image": presence_per_image} if fn is presence else kwargs
        got = fn(record, split, rng, pools, lang, **kwargs)
        singles.extend(got)
    out = [s for s in singles if s["task"] in tasks]
    if "multiturn" in tasks:
        out += multiturn(record, split, rng, pools, singles)
    return out
