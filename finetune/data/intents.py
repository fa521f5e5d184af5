"""Instruction data v2: a fact sheet per image, question intents built on it, held-out phrasings and graders.

The v1 tasks (`finetune/data/tasks.py`: describe, scene, presence, count) teach captions and labels; this module teaches
the model to answer *what it is asked*: water, vegetation, buildings, roads, urban or rural, density, colours,
layout, land use, "what else", one-sentence summaries, detailed descriptions, honest refusals for what pixels
cannot show, an upload request when there is no image, a scope answer for out-of-scope requests, language requests,
translating and referring back to its previous answer, and multi-turn conversations mixing them.

Faithful by construction: every fact comes from the image's 5 references (English and their Chinese translations)
and its scene label (`FactSheet`); an answer quotes a reference that supports it ("evidence") or fills a template
with sheet values only; "no" answers need a scene where the thing is implausible *and* no reference naming it.

Phrasings and answer templates are data files (`finetune/prompt_pools/v2/*.txt`, see its README): `train.*`
sections build training samples, `heldout.*` sections only the evaluation (`heldout_items`), graded by `grade`.
Pure and deterministic given the seed; no I/O except reading the pool files.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from vocabulary.objects import OBJECTS

from vocabulary.scenes import scene
from finetune.data.tasks import (
    NUMBER_WORDS, ZH_NUMERALS, ImageRecord, Sample, _article, absent_objects, mentioned_objects,
    stated_counts, tidy_en, _quantities,
)

POOL_DIR = Path(__file__).resolve().parent / "prompt_pools" / "v2"
LANGS = ("zh", "en")
OTHER = {"zh": "en", "en": "zh"}


# --- pools --------------------------------------------------------------------------------------------------------
def load_pools(pool_dir: Path = POOL_DIR) -> dict[str, dict[str, list[str]]]:
    """`{intent: {section: [lines]}}` from the v2 pool files (`[section]` headers, `#` comments)."""
    pools: dict[str, dict[str, list[str]]] = {}
    for path in sorted(pool_dir.glob("*.txt")):
        sections: dict[str, list[str]] = {}
        current = None
        for line in path.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("[") and line.endswith("]"):
                current = sections.setdefault(line[1:-1], [])
            elif current is not None:
                current.append(line)
        pools[path.stem] = sections
    return pools


def pools_digest(pool_dir: Path = POOL_DIR) -> dict[str, str]:
    """SHA-256 (first 12 hex digits) of each pool file, recorded in the dataset card."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()[:12] for p in sorted(pool_dir.glob("*.txt"))}


# --- fact sheet ---------------------------------------------------------------------------------------------------
WATER_EN = re.compile(r"\b(water|rivers?|lakes?|ponds?|seas?|ocean|harbou?rs?|beach(?:es)?|boats?|ships?|waves?|"
                      r"stream|creek|bay|coast(?:line)?|shore)\b")
POOL_EN = re.compile(r"\b(pools?|swimming)\b")
GREEN_EN = re.compile(r"\b(trees?|grass(?:land)?|lawns?|forests?|woods?|meadows?|green|vegetation|plants?|bush(?:es)?|"
                      r"shrubs?|crops?|farm ?lands?|fields?|chaparral|greenbelts?)\b")
ROAD_EN = OBJECTS["road"].pattern
BUILT_EN = re.compile(r"\b(buildings?|houses?|villas?|homes?|residential|apartments?|factory|factories|warehouses?|"
                      r"churche?s?|schools?|offices?|terminals?|structures?)\b")
DENSE_EN = re.compile(r"\b(dense(?:ly)?|crowded|close(?:ly)? together|compact(?:ly)?|tightly)\b")
SPARSE_EN = re.compile(r"\b(sparse(?:ly)?|scattered|few houses|far apart|loosely)\b")
POSITION_EN = re.compile(r"\b(in the (?:middle|center|centre)|both sides|on (?:the )?(?:left|right)|one side|"
                         r"surrounded by|around|beside|next to|along|between|at the (?:top|bottom|corner|edge))\b")
POSITION_ZH = re.compile(r"中间|中央|中心|两侧|两边|两旁|左|右|周围|旁边|旁|沿|之间|上方|下方|角|边上|一侧")
COLOURS: dict[str, tuple[str, str]] = {  # English word -> (Chinese word, Chinese match)
    "red": ("红色", "红"), "white": ("白色", "白"), "blue": ("蓝色", "蓝"), "grey": ("灰色", "灰"),
    "gray": ("灰色", "灰"), "yellow": ("黄色", "黄"), "orange": ("橙色", "橙"), "brown": ("棕色", "棕|褐"),
    "green": ("绿色", "绿"), "black": ("黑色", "黑"), "dark": ("深色", "深色|黑"),
}
COLOUR_EN = re.compile(r"\b(" + "|".join(COLOURS) + r")\b")

WATER_SCENES = {"river", "beach", "harbor", "port", "pond", "ocean"}
DRY_SCENES = {"airplane", "airport", "runway", "parkinglot", "parking", "intersection", "freeway", "overpass",
              "viaduct", "buildings", "denseresidential", "mediumresidential", "mobilehomepark", "tenniscourt",
              "baseballdiamond", "baseballfield", "storagetanks", "desert", "bareland", "chaparral", "commercial",
              "industrial", "railwaystation", "school", "church", "square", "center", "stadium", "playground",
              "forest", "farmland", "agricultural", "meadow", "mountain", "residential"}
GREEN_SCENES = {"forest", "meadow", "chaparral", "agricultural", "farmland", "golfcourse", "park"}
BARE_SCENES = {"desert", "bareland"}
BUILT_SCENES = {"buildings", "denseresidential", "mediumresidential", "sparseresidential", "mobilehomepark",
                "commercial", "industrial", "church", "school", "center", "residential"}
UNBUILT_SCENES = {"desert", "forest", "chaparral", "agricultural", "farmland", "meadow", "mountain", "bareland",
                  "beach", "ocean"}
ROADLESS_SCENES = {"forest", "desert", "beach", "chaparral", "meadow", "mountain", "ocean"}
SETTING = {
    **dict.fromkeys(["buildings", "denseresidential", "mediumresidential", "intersection", "parkinglot", "parking",
                     "overpass", "viaduct", "mobilehomepark", "commercial", "industrial", "center", "square",
                     "school", "church", "railwaystation", "stadium", "storagetanks", "tenniscourt", "playground",
                     "harbor", "port", "residential"], "urban"),
    **dict.fromkeys(["agricultural", "farmland", "sparseresidential"], "rural"),
    **dict.fromkeys(["forest", "chaparral", "desert", "mountain", "beach", "river", "meadow", "bareland", "pond",
                     "ocean"], "natural"),
}
SETTING_WORDS = {"urban": ("城市建成区", "urban", "Urban"), "rural": ("乡村地区", "rural", "Rural"),
                 "natural": ("自然地貌，人工建设很少", "natural, with little built-up land", "Natural")}
SETTING_MATCH = {"urban": r"城市|城区|urban", "rural": r"乡村|农村|rural", "natural": r"自然|natural"}
DENSITY_LABEL = {"denseresidential": "dense", "mediumresidential": "medium", "sparseresidential": "sparse",
                 "mobilehomepark": "dense", "buildings": "dense"}
DENSITY_WORDS = {"dense": ("建筑很密集", "dense", "Dense"), "medium": ("建筑密度中等", "of medium density", "Medium density"),
                 "sparse": ("建筑比较稀疏", "sparse", "Sparse")}
DENSITY_MATCH = {"dense": r"密集|dense|crowded", "medium": r"中等|medium|moderate", "sparse": r"稀疏|sparse|scattered"}
LAND_USE = {  # category -> (zh, en, classes)
    "residential": ("居住用地", "residential land", ["denseresidential", "mediumresidential", "sparseresidential",
                                                   "mobilehomepark", "residential"]),
    "transport": ("交通用地", "transport land", ["airplane", "airport", "runway", "freeway", "intersection", "overpass",
                                              "viaduct", "parkinglot", "parking", "railwaystation", "bridge",
                                              "harbor", "port"]),
    "agricultural": ("农业用地", "agricultural land", ["agricultural", "farmland"]),
    "industrial": ("工业用地", "industrial land", ["industrial", "storagetanks"]),
    "commercial": ("商业用地", "commercial land", ["commercial", "center", "buildings"]),
    "recreation": ("休闲体育用地", "recreational and sports land", ["baseballdiamond", "baseballfield", "golfcourse",
                                                              "tenniscourt", "stadium", "playground", "park",
                                                              "resort", "beach"]),
    "public": ("公共服务用地", "public service land", ["school", "church", "square"]),
    "water": ("水域", "water", ["river", "pond", "ocean"]),
    "woodland": ("林地", "woodland", ["forest", "chaparral"]),
    "grassland": ("草地", "grassland", ["meadow"]),
    "unused": ("未利用地", "unused land", ["desert", "bareland", "mountain"]),
}
LAND_USE_OF = {c: k for k, (_, _, classes) in LAND_USE.items() for c in classes}


@dataclass
class FactSheet:
    """What the references and the label of one image support; None = the data cannot tell (no question asked)."""

    dataset: str
    label: str | None
    scene_zh: str | None
    scene_en: str | None
    objects: list[str]  # OBJECTS keys some reference names
    absent: list[str]  # OBJECTS keys safe for a "no" answer
    counts: dict[str, int]  # agreed numbers
    hedged: dict[str, tuple[int, int] | str]  # disagreeing numbers: (lo, hi) or "many"
    water: bool | None
    vegetation: bool | None
    buildings: bool | None
    roads: bool | None
    setting: str | None
    density: str | None  # dense / medium / sparse / "none" (no buildings)
    land_use: str | None
    colours: list[str]  # English colour words named
    evidence: dict[str, int] = field(default_factory=dict)  # fact -> index of a supporting reference
    aligned: bool = True  # refs_zh[i] translates refs_en[i]


def _first(refs: list[str], pattern: re.Pattern) -> int | None:
    return next((i for i, s in enumerate(refs) if pattern.search(s.lower())), None)


def fact_sheet(rec: ImageRecord) -> FactSheet:
    en = [s.lower() for s in rec.refs_en]
    label = rec.label
    sc = scene(rec.dataset, label) if label else None
    ev: dict[str, int] = {}

    def mark(name: str, pattern: re.Pattern) -> bool:
        i = _first(en, pattern)
        if i is not None:
            ev[name] = i
        return i is not None

    water = True if mark("water", WATER_EN) else None
    if water is None and label in WATER_SCENES:
        water = None  # a water scene whose captions never say so: ask nothing
    if water is None and label in DRY_SCENES and not any(POOL_EN.search(s) for s in en):
        water = False
    veg = True if mark("vegetation", GREEN_EN) else (False if label in BARE_SCENES else None)
    built = True if mark("buildings", BUILT_EN) else (False if label in UNBUILT_SCENES else None)
    roads = True if mark("roads", ROAD_EN) else (False if label in ROADLESS_SCENES else None)
    density = DENSITY_LABEL.get(label or "")
    if density is None and built:
        dense, sparse = sum(bool(DENSE_EN.search(s)) for s in en), sum(bool(SPARSE_EN.search(s)) for s in en)
        density = "dense" if dense >= 2 and not sparse else "sparse" if sparse >= 2 and not dense else None
    if density is None and built is False:
        density = "none"
    if density in DENSITY_LABEL.values():
        mark("density", DENSE_EN if density == "dense" else SPARSE_EN if density == "sparse" else BUILT_EN)
        ev.setdefault("density", ev.get("buildings", 0))
    mark("layout", POSITION_EN)
    colours = sorted({m for s in en for m in COLOUR_EN.findall(s)})
    if colours:
        mark("colours", COLOUR_EN)
    hedged: dict[str, tuple[int, int] | str] = {}
    counts = stated_counts(rec)
    for key, obj in OBJECTS.items():
        if not obj.countable or key in counts:
            continue
        qs = [q for s in rec.refs_en for q in _quantities(obj, s)]
        nums = sorted({q for q in qs if isinstance(q, int) and q <= 12})
        if len(nums) >= 2 and nums[-1] - nums[0] <= 3:
            hedged[key] = (nums[0], nums[-1])
        elif "many" in qs and not nums:
            hedged[key] = "many"
    return FactSheet(
        dataset=rec.dataset, label=label, scene_zh=sc.zh if sc else None, scene_en=sc.en if sc else None,
        objects=[o.key for o in mentioned_objects(rec)], absent=[o.key for o in absent_objects(rec)],
        counts=counts, hedged=hedged, water=water, vegetation=veg, buildings=built, roads=roads,
        setting=SETTING.get(label or ""), density=density, land_use=LAND_USE_OF.get(label or ""), colours=colours,
        evidence=ev, aligned=len(rec.refs_zh) == len(rec.refs_en))


# --- answers ------------------------------------------------------------------------------------------------------
def _ref(rec: ImageRecord, i: int, lang: str) -> str:
    return rec.refs_zh[i] if lang == "zh" else tidy_en(rec.refs_en[i])


def _join(items: list[str], lang: str) -> str:
    if lang == "zh":
        return "、".join(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _slots(fs: FactSheet, rec: ImageRecord, lang: str) -> dict[str, str]:
    name = (fs.scene_zh if lang == "zh" else fs.scene_en) or ("遥感场景" if lang == "zh" else "remote sensing scene")
    return {"scene": name, "a_scene": _article(name)}


COUNTABLE = sorted(k for k, o in OBJECTS.items() if o.measure)  # objects a count question can name


def _obj_slots(key: str, lang: str) -> dict[str, str]:
    o = OBJECTS[key]
    return {"obj": o.zh, "measure": o.measure} if lang == "zh" else \
        {"obj": o.en_name, "a_obj": _article(o.en_name), "objs": o.en_plural, "be_some": "are some"}


class Builder:
    """Builds (question, answer, meta) for one intent of one image. Content is chosen with `crng` before any
    phrasing (with `prng`), so the same content seed gives the same facts in both languages (translation turns)."""

    def __init__(self, rec: ImageRecord, fs: FactSheet, pools: dict, heldout: bool = False):
        self.rec, self.fs, self.pools, self.heldout = rec, fs, pools, heldout

    def question(self, intent: str, lang: str, prng: random.Random, section: str | None = None) -> str:
        sec = section or ("heldout" if self.heldout else "train")
        return prng.choice(self.pools[intent][f"{sec}.{lang}"])

    def answer(self, intent: str, section: str, lang: str, prng: random.Random, **slots) -> str:
        return prng.choice(self.pools[intent][f"{section}.{lang}"]).format(**slots)

    def build(self, intent: str, qlang: str, alang: str, crng: random.Random, prng: random.Random):
        fn = getattr(self, f"_{intent}")
        return fn(qlang, alang, crng, prng)

    # each returns (question, answer, meta) or None when the sheet cannot support the intent
    def _scene(self, q, a, crng, prng):
        if not self.fs.label:
            return None
        s = _slots(self.fs, self.rec, a)
        ans = ("这是一张{scene}的遥感图像。" if a == "zh" else "This is a remote sensing image of {a_scene}.").format(**s)
        return self.question("scene", q, prng), ans, {"scene": self.fs.label}

    def _yes_no_fact(self, intent, value, q, a, crng, prng):
        if value is None:
            return None
        s = _slots(self.fs, self.rec, a)
        i = self.fs.evidence.get(intent)
        if value and (i is None or (a == "zh" and not self.fs.aligned)):
            return None
        s["evidence"] = _ref(self.rec, i, a) if value else ""
        ans = self.answer(intent, "answer_yes" if value else "answer_no", a, prng, **s)
        return self.question(intent, q, prng), ans, {"answer": "yes" if value else "no"}

    def _water(self, q, a, crng, prng):
        return self._yes_no_fact("water", self.fs.water, q, a, crng, prng)

    def _vegetation(self, q, a, crng, prng):
        return self._yes_no_fact("vegetation", self.fs.vegetation, q, a, crng, prng)

    def _buildings(self, q, a, crng, prng):
        return self._yes_no_fact("buildings", self.fs.buildings, q, a, crng, prng)

    def _roads(self, q, a, crng, prng):
        return self._yes_no_fact("roads", self.fs.roads, q, a, crng, prng)

    def _presence(self, q, a, crng, prng):
        yes = crng.random() < 0.5
        cands = self.fs.objects if yes else self.fs.absent
        if not cands:
            return None
        key = crng.choice(sorted(cands))
        qs, as_ = _obj_slots(key, q), _obj_slots(key, a)
        ques = self.question("presence", q, prng).format(**qs)
        ans = self.answer("presence", "answer_yes" if yes else "answer_no", a, prng, **as_)
        return ques, ans, {"object": key, "answer": "yes" if yes else "no"}

    def _count(self, q, a, crng, prng):
        options = sorted(self.fs.counts) + sorted(self.fs.hedged)
        if not options:
            return None
        key = crng.choice(options)
        ques = self.question("count", q, prng).format(**_obj_slots(key, q))
        s = _obj_slots(key, a)
        if key in self.fs.counts:
            n = self.fs.counts[key]
            o = OBJECTS[key]
            s |= {"n": str(n), "n_zh": ZH_NUMERALS[n], "n_word": NUMBER_WORDS[n],
                  "obj_n": o.en_name if n == 1 else o.en_plural, "be": "is" if n == 1 else "are"}
            return ques, self.answer("count", "answer", a, prng, **s), {"object": key, "count": n}
        h = self.fs.hedged[key]
        if h == "many":
            return ques, self.answer("count", "answer_many", a, prng, **s), {"object": key, "count": "many"}
        lo, hi = h
        s |= {"lo": str(lo), "hi": str(hi), "lo_zh": ZH_NUMERALS[lo], "hi_zh": ZH_NUMERALS[hi]}
        return ques, self.answer("count", "answer_hedge", a, prng, **s), {"object": key, "count": [lo, hi]}

    def _setting(self, q, a, crng, prng):
        if not self.fs.setting:
            return None
        zh, en, cap = SETTING_WORDS[self.fs.setting]
        s = _slots(self.fs, self.rec, a) | {"setting_zh": zh, "setting_en": en, "setting_en_cap": cap}
        return self.question("setting", q, prng), self.answer("setting", "answer", a, prng, **s), \
            {"setting": self.fs.setting}

    def _density(self, q, a, crng, prng):
        d = self.fs.density
        if d is None or (a == "zh" and not self.fs.aligned):
            return None
        if d == "none":
            s = _slots(self.fs, self.rec, a)
            return self.question("density", q, prng), self.answer("buildings", "answer_no", a, prng, **s), \
                {"density": "none"}
        zh, en, cap = DENSITY_WORDS[d]
        s = {"density_zh": zh, "density_en": en, "density_en_cap": cap,
             "evidence": _ref(self.rec, self.fs.evidence.get("density", 0), a)}
        return self.question("density", q, prng), self.answer("density", "answer", a, prng, **s), {"density": d}

    def _colours(self, q, a, crng, prng):
        if not self.fs.colours or (a == "zh" and not self.fs.aligned):
            return None
        names = list(dict.fromkeys(COLOURS[c][0] if a == "zh" else c for c in self.fs.colours))
        s = {"colours_zh": _join(names, "zh"), "colours_en": _join(names, "en"),
             "evidence": _ref(self.rec, self.fs.evidence["colours"], a)}
        return self.question("colours", q, prng), self.answer("colours", "answer", a, prng, **s), \
            {"colours": self.fs.colours}

    def _layout(self, q, a, crng, prng):
        i = self.fs.evidence.get("layout")
        if i is None or (a == "zh" and not (self.fs.aligned and POSITION_ZH.search(self.rec.refs_zh[i]))):
            return None
        return self.question("layout", q, prng), self.answer("layout", "answer", a, prng, evidence=_ref(self.rec, i, a)), {}

    def _land_use(self, q, a, crng, prng):
        if not self.fs.land_use:
            return None
        zh, en, _ = LAND_USE[self.fs.land_use]
        s = _slots(self.fs, self.rec, a) | {"land_use_zh": zh, "land_use_en": en}
        return self.question("land_use", q, prng), self.answer("land_use", "answer", a, prng, **s), \
            {"land_use": self.fs.land_use}

    def _what_else(self, q, a, crng, prng):
        keys = list(self.fs.objects)
        if not keys:
            return None
        keys = crng.sample(keys, min(4, len(keys)))
        names = [OBJECTS[k].zh if a == "zh" else OBJECTS[k].en_plural for k in keys]
        s = {"objects_zh": _join(names, "zh"), "objects_en": _join(names, "en")}
        return self.question("what_else", q, prng), self.answer("what_else", "answer", a, prng, **s), \
            {"objects": keys}

    def _summary(self, q, a, crng, prng):
        refs = self.rec.refs_zh if a == "zh" else self.rec.refs_en
        if not refs:
            return None
        i = min(range(len(refs)), key=lambda j: (len(refs[j]), j))
        return self.question("summary", q, prng), _ref(self.rec, i, a), {}

    def _detailed(self, q, a, crng, prng):
        refs = self.rec.refs_zh if a == "zh" else self.rec.refs_en
        distinct = [i for i in range(len(refs)) if refs[i] not in refs[:i]]
        if len(distinct) < 2:
            return None
        picked = sorted(crng.sample(distinct, min(3, len(distinct))))
        text = ("" if a == "zh" else " ").join(_ref(self.rec, i, a) for i in picked)
        return self.question("detailed", q, prng), text, {}

    def _unanswerable(self, q, a, crng, prng):
        lines = self.pools["unanswerable"][f"{'heldout' if self.heldout else 'train'}.{q}"]
        topic, ques = prng.choice(lines).split("|", 1)
        topics = dict(line.split("|", 1) for line in self.pools["unanswerable"][f"topic.{a}"])
        s = _slots(self.fs, self.rec, a) | {"topic": topics[topic]}
        return ques, self.answer("unanswerable", "answer", a, prng, **s), {"topic": topic}

    def _out_of_scope(self, q, a, crng, prng):
        return self.question("out_of_scope", q, prng), self.answer("out_of_scope", "answer", a, prng), {}

    def _help(self, q, a, crng, prng):
        return self.question("help", q, prng), self.answer("help", "answer_image", a, prng), {}


# Intents asked about an image (single turn), with their share of one image's training samples.
IMAGE_INTENTS = ("scene", "presence", "count", "water", "vegetation", "buildings", "roads", "setting", "density",
                 "colours", "layout", "land_use", "what_else", "summary", "detailed", "unanswerable")
EVAL_INTENTS = (*IMAGE_INTENTS, "no_image", "out_of_scope", "language", "translate", "refer_back")


def _sample(rec: ImageRecord | None, split: str, task: str, lang: str, k: int, messages: list[dict],
            meta: dict | None = None, with_image: bool = True) -> Sample:
    s = {"id": f"{rec.dataset}-{rec.stem}-{task}-{k}" if rec else f"none-{task}-{k}",
         "dataset": rec.dataset if rec else "none", "split": split, "image": rec.image if rec and with_image else None,
         "task": task, "lang": lang, "messages": messages, "references": [messages[-1]["content"]]}
    if rec and rec.label:
        s["label"] = rec.label
    if meta:
        s["meta"] = meta
    return s


def _turn(q: str, a: str) -> list[dict]:
    return [{"role": "user", "content": q}, {"role": "assistant", "content": a}]


def _language_request(b: Builder, intent: str, qlang: str, crng, prng, section: str = "train"):
    """A question in `qlang` that asks for the answer in the other language."""
    alang = OTHER[qlang]
    got = b.build(intent, qlang, alang, crng, prng)
    if got is None:
        return None
    q, a, meta = got
    key = f"to_{alang}.{qlang}" if section == "train" else f"heldout.to_{alang}.{qlang}"
    suffix = prng.choice(b.pools["language"][key])
    sep = "" if qlang == "zh" else " "
    return f"{q}{sep}{suffix}", a, {**meta, "intent": intent, "answer_lang": alang}


def _translate_turn(b: Builder, intent: str, lang: str, seed: str, prng, section: str = "train"):
    """Turn 1 (intent in `lang`) and turn 2 asking to repeat it in the other language: same content seed."""
    first = b.build(intent, lang, lang, random.Random(seed), prng)
    second = b.build(intent, lang, OTHER[lang], random.Random(seed), random.Random(seed + "p"))
    if first is None or second is None:
        return None
    key = f"translate_to_{OTHER[lang]}.{lang}" if section == "train" else f"heldout.translate_to_{OTHER[lang]}.{lang}"
    follow = prng.choice(b.pools["language"][key])
    return _turn(first[0], first[1]) + _turn(follow, second[1]), {"intent": intent, "answer_lang": OTHER[lang]}


def refer_back_answer(b: Builder, kind: str, previous: str, lang: str, prng) -> str | None:
    """The answer to "what did you just say?" about `previous` (the model's own earlier answer)."""
    from vocabulary.answers import parse_scene
    from vocabulary.objects import objects_in

    if kind == "scene":
        key = parse_scene(previous, b.rec.dataset)
        if key is None:
            return None
        sc = scene(b.rec.dataset, key)
        name = sc.zh if lang == "zh" else sc.en
        return b.answer("refer_back", "answer_scene", lang, prng, scene=name, a_scene=_article(name))
    keys = sorted(objects_in(previous))
    if not keys:
        return None
    names = [OBJECTS[k].zh if lang == "zh" else OBJECTS[k].en_plural for k in keys[:4]]
    return b.answer("refer_back", "answer_objects", lang, prng, objects_zh=_join(names, "zh"),
                    objects_en=_join(names, "en"))


def no_image_turn(pools: dict, lang: str, prng: random.Random, section: str = "train") -> tuple[str, str]:
    """An image question with no image in the conversation -> a request to upload one. Training questions include
    presence and counting ones about a random countable object. NOTE: v3, trained without them, answered
    「图中有多少辆车？」 with no image by a count hedge (「图中有很多汽车，数量较多，无法准确数清。」); the held-out draw is
    left as it was, so that the evaluation stays comparable across versions."""
    skip = ("unanswerable",) if section == "train" else ("presence", "count", "unanswerable")
    intent = prng.choice([i for i in IMAGE_INTENTS if i not in skip])
    q = prng.choice(pools[intent][f"{section}.{lang}"])
    if intent in ("presence", "count"):
        q = q.format(**_obj_slots(prng.choice(COUNTABLE), lang))
    return q, prng.choice(pools["no_image"][f"answer.{lang}"])


def samples_v2(rec: ImageRecord, seed: int, pools: dict) -> list[Sample]:
    """Training / validation samples of one image: each intent once (random language), two language requests,
    a no-image conversation, a help turn now and then, and two multi-turn conversations of 3-6 turns."""
    rng = random.Random(f"v2:{seed}:{rec.dataset}:{rec.filename}")
    fs = fact_sheet(rec)
    b = Builder(rec, fs, pools)
    out: list[Sample] = []
    for intent in IMAGE_INTENTS:
        lang = rng.choice(LANGS)
        got = b.build(intent, lang, lang, random.Random(rng.random()), rng)
        if got:
            out.append(_sample(rec, rec.split, intent, lang, 0, _turn(got[0], got[1]), got[2]))
    for k in range(2):
        lang = rng.choice(LANGS)
        got = _language_request(b, rng.choice(IMAGE_INTENTS[:14]), lang, random.Random(rng.random()), rng)
        if got:
            out.append(_sample(rec, rec.split, "language", lang, k, _turn(got[0], got[1]), got[2]))
    lang = rng.choice(LANGS)
    q, a = no_image_turn(pools, lang, rng)
    msgs = _turn(q, a)
    if rng.random() < 0.3:  # the user then uploads the image and asks again: the image sits in the second turn
        got = b.build("scene", lang, lang, random.Random(rng.random()), rng)
        if got:
            msgs += _turn(got[0], got[1])
    s = _sample(rec, rec.split, "no_image", lang, 0, msgs, {"image_turn": 1} if len(msgs) > 2 else None,
                with_image=len(msgs) > 2)
    out.append(s)
    if rng.random() < 0.25:
        lang = rng.choice(LANGS)
        got = b.build("out_of_scope", lang, lang, rng, rng)
        out.append(_sample(rec, rec.split, "out_of_scope", lang, 0, _turn(got[0], got[1])))
    if rng.random() < 0.1:
        lang = rng.choice(LANGS)
        with_image = rng.random() < 0.5
        q = b.question("help", lang, rng)
        a = b.answer("help", "answer_image" if with_image else "answer_noimage", lang, rng)
        out.append(_sample(rec, rec.split, "help", lang, 0, _turn(q, a), with_image=with_image))
    for k in range(2):
        conv = multiturn_v2(b, rng)
        if conv:
            out.append(_sample(rec, rec.split, "multiturn_v2", conv[1], k, conv[0]))
    return out


def multiturn_v2(b: Builder, rng: random.Random) -> tuple[list[dict], str] | None:
    """3-6 turns about one image: intents in one main language, with translate and refer-back turns after an
    answer they can build on; exactly the message list the app sends (image in the first user turn)."""
    lang = rng.choice(LANGS)
    n = rng.randint(3, 6)
    msgs: list[dict] = []
    while len(msgs) < 2 * n:
        roll = rng.random()
        if msgs and roll < 0.15:
            prev = msgs[-1]["content"]
            kind = rng.choice(("scene", "objects"))
            ans = refer_back_answer(b, kind, prev, lang, rng)
            if ans:
                msgs += _turn(rng.choice(b.pools["refer_back"][f"{kind}.{lang}"]), ans)
                continue
        if roll < 0.3:
            got = _translate_turn(b, rng.choice(("scene", "summary", "what_else", "water", "setting", "count")),
                                  lang, f"{rng.random()}", rng)
            if got:
                msgs += got[0]
                continue
        intent = rng.choice(IMAGE_INTENTS)
        got = b.build(intent, lang, lang, random.Random(rng.random()), rng)
        if got:
            msgs += _turn(got[0], got[1])
        elif rng.random() < 0.2:
            break
    return (msgs, lang) if len(msgs) >= 6 else None


# --- evaluation: held-out phrasings ---------------------------------------------------------------------------------
@dataclass
class FollowItem:
    """One held-out question: `messages` up to the question to answer; turn 2 items get the model's own first
    answer put in place of `messages[1]` by the evaluator (`needs_first`)."""

    intent: str
    image: str | None
    lang: str
    messages: list[dict]
    meta: dict
    references: list[str]
    label: str | None = None
    dataset: str = "ucm"
    needs_first: bool = False
    answer: str = ""
    first_answer: str = ""


def heldout_items(rec: ImageRecord, seed: int, pools: dict) -> list[FollowItem]:
    """Every evaluation intent the sheet supports, once per image, in a language alternating by image."""
    rng = random.Random(f"heldout:{seed}:{rec.dataset}:{rec.filename}")
    fs = fact_sheet(rec)
    b = Builder(rec, fs, pools, heldout=True)
    lang = LANGS[rec.imgid % 2] if rec.imgid else rng.choice(LANGS)
    refs = rec.refs_en + rec.refs_zh
    items = []

    def add(intent, msgs, meta, image=True, needs_first=False):
        items.append(FollowItem(intent, rec.image if image else None, lang, msgs, meta, refs, rec.label,
                                rec.dataset, needs_first))

    for intent in IMAGE_INTENTS:
        got = b.build(intent, lang, lang, random.Random(rng.random()), rng)
        if got:
            add(intent, [{"role": "user", "content": got[0]}], got[2])
    q, _ = no_image_turn(pools, lang, rng, section="heldout")
    add("no_image", [{"role": "user", "content": q}], {}, image=False)
    add("out_of_scope", [{"role": "user", "content": b.question("out_of_scope", lang, rng)}], {})
    got = _language_request(b, rng.choice(("scene", "water", "setting", "summary", "what_else")), lang,
                            random.Random(rng.random()), rng, section="heldout")
    if got:
        add("language", [{"role": "user", "content": got[0]}], got[2])
    # turn-2 intents: the first question is a training-style describe / scene question, answered by the model
    first_q = b.question("scene" if rng.random() < 0.5 else "summary", lang, rng, section="train")
    key = f"heldout.translate_to_{OTHER[lang]}.{lang}"
    add("translate", [{"role": "user", "content": first_q}, {"role": "assistant", "content": ""},
                      {"role": "user", "content": rng.choice(pools["language"][key])}],
        {"answer_lang": OTHER[lang]}, needs_first=True)
    kind = rng.choice(("scene", "objects"))
    first_q = b.question("scene" if kind == "scene" else "summary", lang, rng, section="train")
    add("refer_back", [{"role": "user", "content": first_q}, {"role": "assistant", "content": ""},
                       {"role": "user", "content": rng.choice(pools["refer_back"][f"heldout.{kind}.{lang}"])}],
        {"kind": kind}, needs_first=True)
    return items


# --- grading --------------------------------------------------------------------------------------------------------
_CJK = re.compile(r"[\u4e00-\u9fff]")
REFUSAL = re.compile(r"无法|不能|没法|看不出|cannot|can't|can not|unable|not possible|cannot be determined", re.I)
# An honest "I cannot tell" (not "I cannot see any churches", a presence answer).
CANNOT_TELL = re.compile(r"无法(判断|得出|确定|看出|知道|回答)|看不出|不能(判断|确定)|没法(判断|确定)|"
                         r"(cannot|can't|can not|unable to) (tell|determine|be determined|judge|know|say)|"
                         r"not possible to (tell|determine)", re.I)
UPLOAD = re.compile(r"上传|upload", re.I)
SCOPE = re.compile(r"遥感图像|remote sensing", re.I)


def answer_lang(text: str) -> str:
    """"zh" when at least a third of the letters are Chinese characters, else "en"."""
    cjk = len(_CJK.findall(text))
    latin = len(re.findall(r"[A-Za-z]", text))
    return "zh" if cjk and cjk * 3 >= latin / 4 else "en"


def _colours_in(text: str) -> set[str]:
    low = text.lower()
    found = {c for c in COLOURS if re.search(rf"\b{c}\b", low)}
    found |= {c for c, (_, zh) in COLOURS.items() if re.search(zh, text)}
    return {"grey" if c == "gray" else c for c in found}


def grade(item: FollowItem) -> bool:
    """Is the answer relevant and correct for its intent, against the fact sheet? (See EVAL_INTENTS.)"""
    from vocabulary.answers import parse_count, parse_scene, parse_yes_no
    from vocabulary.objects import objects_in, unsupported_objects

    a, m, intent = item.answer.strip(), item.meta, item.intent
    if not a:
        return False
    faithful = not unsupported_objects(a, item.references, distinctive_only=True)
    if intent == "scene":
        return parse_scene(a, item.dataset) == m["scene"]
    if intent in ("presence", "water", "vegetation", "buildings", "roads"):
        return parse_yes_no(a) == m["answer"]
    if intent == "count":
        n = m["count"]
        got = parse_count(a)
        if isinstance(n, int):
            return got == n
        if n == "many":
            return bool(re.search(r"很多|许多|大量|many|lots", a, re.I))
        return got is not None and n[0] <= got <= n[1]
    if intent == "setting":
        return bool(re.search(SETTING_MATCH[m["setting"]], a, re.I)) and not any(
            re.search(p, a, re.I) for k, p in SETTING_MATCH.items() if k != m["setting"])
    if intent == "density":
        if m["density"] == "none":
            return parse_yes_no(a) == "no" or bool(re.search(r"没有|几乎没有|no buildings|cannot see any", a, re.I))
        return bool(re.search(DENSITY_MATCH[m["density"]], a, re.I)) and not any(
            re.search(p, a, re.I) for k, p in DENSITY_MATCH.items() if k != m["density"])
    if intent == "colours":
        named = _colours_in(a)
        allowed = {"grey" if c == "gray" else c for c in m["colours"]}
        return bool(named & allowed) and faithful
    if intent == "layout":
        return bool(POSITION_ZH.search(a) or POSITION_EN.search(a.lower())) and faithful
    if intent == "land_use":
        zh, en, _ = LAND_USE[m["land_use"]]
        return zh in a or en in a.lower()
    if intent in ("what_else", "summary", "detailed"):  # names an object, when the references name any
        named = bool(objects_in(a)) or not any(objects_in(r) for r in item.references)
        return named and faithful and not REFUSAL.search(a) and len(a) >= 4
    if intent == "unanswerable":  # honest, and says what it can tell instead
        says_what = parse_scene(a, item.dataset) is not None or bool(objects_in(a)) or item.label is None
        return bool(CANNOT_TELL.search(a)) and says_what
    if intent == "no_image":
        return bool(UPLOAD.search(a))
    if intent == "out_of_scope":
        return bool(SCOPE.search(a)) and not UPLOAD.search(a)
    if intent == "language":  # the requested language, and a right answer to the question asked in it
        if answer_lang(a) != m["answer_lang"] or len(a) < 4:
            return False
        inner = FollowItem(m["intent"], item.image, m["answer_lang"], item.messages, m, item.references, item.label,
                           item.dataset, answer=a)
        return grade(inner)
    if intent == "translate":  # the other language, saying what the first answer said
        if answer_lang(a) != m["answer_lang"] or len(a) < 4:
            return False
        first = item.first_answer
        key, got = parse_scene(first, item.dataset), parse_scene(a, item.dataset)
        if key is not None and got is not None:
            return key == got
        said = objects_in(first)
        return not said or bool(objects_in(a) & said)
    if intent == "refer_back":
        first = item.first_answer
        if m["kind"] == "scene":
            key = parse_scene(first, item.dataset)
            return key is not None and parse_scene(a, item.dataset) == key
        said = objects_in(first)
        return bool(said) and bool(objects_in(a) & said) and not (objects_in(a) - said)
    raise ValueError(f"unknown intent {intent!r}")
