"""The v2 question intents: held-out phrasings stay out of training, answers follow the fact sheet, grading."""

import re
from pathlib import Path

import pytest

from finetune import data as D
from finetune.data import intents as I
from vocabulary.objects import objects_in

MINI = Path(__file__).resolve().parents[2] / "fixtures" / "mini_data"


@pytest.fixture(scope="module")
def pools():
    return I.load_pools()


@pytest.fixture(scope="module")
def records():
    return [r for ds in ("ucm", "rsicd") for r in D.load_captions(MINI, ds)]


def _lines(pool: dict, prefix: str) -> set[str]:
    return {x.split("|")[-1].strip() for k, v in pool.items() if k.startswith(prefix) for x in v}


def test_heldout_phrasings_never_appear_in_training_sections(pools):
    for intent, pool in pools.items():
        held = _lines(pool, "heldout")
        train = _lines(pool, "train") | _lines(pool, "to_") | _lines(pool, "translate_to") | _lines(
            pool, "scene.") | _lines(pool, "objects.")
        assert not held & train, (intent, sorted(held & train)[:3])
    assert all(_lines(pools[i], "heldout") for i in ("scene", "water", "refer_back", "language"))


def test_samples_follow_the_question(records, pools):
    samples = [s for r in records if r.split != "test" for s in I.samples_v2(r, 0, pools)]
    by_task = {}
    for s in samples:
        by_task.setdefault(s["task"], []).append(s)
    assert {"water", "setting", "count", "unanswerable", "no_image", "language", "multiturn_v2"} <= set(by_task)
    for s in by_task["no_image"]:
        first = s["messages"][1]["content"]
        assert I.UPLOAD.search(first), first  # asks for the image instead of inventing a scene
        assert (s["image"] is None) == (len(s["messages"]) == 2)
        if s["image"]:
            assert s["meta"]["image_turn"] == 1
    for s in by_task["unanswerable"]:
        assert I.REFUSAL.search(s["messages"][-1]["content"]), s["messages"]
    for s in by_task["language"]:
        assert I.answer_lang(s["messages"][-1]["content"]) == s["meta"]["answer_lang"] != s["lang"]
    for s in by_task["water"]:
        from finetune.evaluate.caption_metrics import parse_yes_no

        assert parse_yes_no(s["messages"][-1]["content"]) == s["meta"]["answer"]


def test_training_answers_pass_their_own_grader(records, pools):
    """Every single-turn training answer graded as an evaluation answer: the data teaches what the grader wants."""
    graded = 0
    for r in records:
        if r.split == "test":
            continue
        for s in I.samples_v2(r, 0, pools):
            if s["task"] not in I.IMAGE_INTENTS or len(s["messages"]) != 2:
                continue
            answer = s["messages"][1]["content"]
            if s["task"] == "summary" and not objects_in(answer):
                continue  # the shortest caption sometimes names nothing ("brush appear vitality ."): graded wrong
            item = I.FollowItem(s["task"], s["image"], s["lang"], s["messages"][:1], s.get("meta", {}),
                                r.refs_en + r.refs_zh, r.label, r.dataset, answer=answer)
            assert I.grade(item), (s["task"], s["messages"], s.get("meta"))
            graded += 1
    assert graded > 50


def test_grader_rejects_the_v1_failures(records, pools):
    rec = records[0]
    items = {it.intent: it for it in I.heldout_items(rec, 0, pools)}
    no_image = items["no_image"]
    assert no_image.image is None
    no_image.answer = "这是一张十字路口的遥感图像。"  # v1 invented a scene without an image
    assert not I.grade(no_image)
    no_image.answer = "请先上传一张遥感图像，我再来回答。"
    assert I.grade(no_image)
    una = items["unanswerable"]
    una.answer = "一。"
    assert not I.grade(una)
    una.answer = "No, I cannot see any churches."  # a presence answer, not an honest "cannot tell"
    assert not I.grade(una)
    una.answer = "仅凭这张图像无法判断。"  # honest, but says nothing of what it can tell
    assert not I.grade(una)
    una.answer = "仅凭这张图像无法判断。我能看出的是：这是一片农田。"
    assert I.grade(una)
    tr = items["translate"]
    assert tr.needs_first and tr.messages[1]["role"] == "assistant"
    tr.answer = "这是一张港口的遥感图像。" if tr.meta["answer_lang"] == "en" else "This is a harbor."
    assert not I.grade(tr)  # the wrong language
    tr.first_answer = "这是一片农田。" if tr.meta["answer_lang"] == "en" else "This is farmland."
    tr.answer = "This is a harbor." if tr.meta["answer_lang"] == "en" else "这是一张港口的遥感图像。"
    assert not I.grade(tr)  # the right language, another scene than the first answer
    tr.answer = "It is a piece of farmland." if tr.meta["answer_lang"] == "en" else "这是一片农田。"
    assert I.grade(tr)


def test_heldout_items_cover_every_eval_intent(records, pools):
    seen = {it.intent for r in records for it in I.heldout_items(r, 0, pools)}
    assert set(I.EVAL_INTENTS) - seen <= {"density", "colours", "layout"}  # not every fixture image supports them
    assert {"no_image", "translate", "refer_back", "language", "unanswerable", "count"} <= seen
    langs = {it.lang for r in records for it in I.heldout_items(r, 0, pools)}
    assert langs == {"zh", "en"}
    assert all(re.search(r"\S", it.messages[-1]["content"]) for r in records for it in I.heldout_items(r, 0, pools))


def test_no_image_training_questions_include_counting_and_presence_with_their_slots_filled(pools):
    """v3 answered a no-image 「图中有多少辆车？」 with a count hedge: such questions were never trained without an image.
    The held-out draw keeps its intents, so that the evaluation stays comparable across versions."""
    import random

    count_q = {q for lang in I.LANGS for q in pools["count"][f"train.{lang}"]}
    rng = random.Random(0)
    train = [I.no_image_turn(pools, lang, rng) for lang in I.LANGS * 400]
    asked = [q for q, _ in train]
    assert all("{" not in q for q in asked)
    filled = [re.sub(r"\{[a-z_]+\}", "(.+)", re.escape(t).replace(r"\{", "{").replace(r"\}", "}")) for t in count_q]
    assert sum(any(re.fullmatch(f, q) for f in filled) for q in asked) > 20
    assert all(a in pools["no_image"]["answer.zh"] + pools["no_image"]["answer.en"] for _, a in train)

    def v2_heldout_turn(lang: str, prng: random.Random) -> tuple[str, str]:  # the evaluation's draw since v2
        intent = prng.choice([i for i in I.IMAGE_INTENTS if i not in ("presence", "count", "unanswerable")])
        return prng.choice(pools[intent][f"heldout.{lang}"]), prng.choice(pools["no_image"][f"answer.{lang}"])

    new, old = random.Random(1), random.Random(1)
    assert all(I.no_image_turn(pools, lang, new, section="heldout") == v2_heldout_turn(lang, old)
               for lang in I.LANGS * 200)
