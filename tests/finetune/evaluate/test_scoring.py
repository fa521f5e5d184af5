"""The evaluator's pure scoring: a count answer graded against its fact, the best constant answer, and the
question-following summary table (per-intent rows, rates) built from graded items; no model is loaded."""

from __future__ import annotations

from pathlib import Path

import pytest

from finetune import data as D
from finetune.data import intents as I
from finetune.evaluate.questions import best_constant, build_question_items, markdown_questions, score_questions

MINI = Path(__file__).resolve().parents[2] / "fixtures" / "mini_data"


def _count(expected, answer: str) -> I.FollowItem:
    return I.FollowItem("count", "ucm/images/1.tif", "en", [], {"count": expected}, ["two planes on the apron"],
                        answer=answer)


@pytest.mark.parametrize("expected, answer, correct", [
    (2, "There are 2 airplanes.", True), (2, "three airplanes", False), ((2, 4), "I count 3.", True),
    ((2, 4), "5", False), ("many", "Lots of cars.", True), (2, "", False),
])
def test_a_count_answer_is_graded_against_its_fact(expected, answer, correct):
    assert I.grade(_count(expected, answer)) is correct


def test_best_constant_answer_counts_ranges_and_many():
    assert best_constant([2, 2, (1, 3), "many"]) == (2, 0.75)
    assert best_constant(["many", "many", 4]) == ("many", 2 / 3)
    assert best_constant([]) == (None, 0.0)


def test_summary_table_has_a_row_per_intent_and_the_rates():
    records = [r for r in D.load_captions(MINI, "ucm") if r.split == "test"]
    items = build_question_items(records)
    assert items, "the fixture test images support at least one held-out intent"
    for it in items:  # a model that always asks for an image: right only where no image was given
        it.answer = "Please upload an image." if it.intent != "language" else "请上传一张图片。"
        it.first_answer = it.answer
    rep = score_questions(items)
    assert set(rep["per_intent"]) == {it.intent for it in items}
    assert rep["n"] == len(items) == sum(rep["n_per_intent"].values())
    assert rep["per_intent"].get("no_image", 1.0) == 1.0 and rep["asks_for_image_with_one"] == 1.0
    table = markdown_questions(rep)
    assert table.startswith(f"#### Question following (held-out phrasings, {rep['images']} images, {rep['n']} ")
    for intent, n in rep["n_per_intent"].items():
        assert f"| {intent} | {n} | {rep['per_intent'][intent]:.3f} |" in table
