"""The evaluation's metrics agree with values computed by hand on tiny examples."""

from __future__ import annotations

import math
import shutil

import pytest

from finetune.evaluate.caption_metrics import (
    caption_scores, confusion, faithfulness, parse_count, parse_scene, parse_yes_no, stock_sentences,
    zh_char_tokens,
)


def test_chinese_is_scored_per_character_without_punctuation() -> None:
    assert zh_char_tokens("有两架飞机。A plane, 3!") == "有 两 架 飞 机 a plane 3"


def test_bleu_on_characters_matches_hand_computation() -> None:
    # hypothesis 有一片农田 (5 chars) vs references 有一片农田地 / 这是农田:
    # p1 = 5/5, p2 = 4/4, p3 = 3/3, p4 = 2/2 (all n-grams occur in the first reference); closest reference
    # length is 4 or 6 -> BLEU picks the shorter, 4 <= 5 so no brevity penalty: BLEU-4 = 1.
    s = caption_scores({"a": "有一片农田"}, {"a": ["有一片农田地", "这是农田"]}, "zh")
    assert s["BLEU-1"] == pytest.approx(1.0, abs=1e-6) and s["BLEU-4"] == pytest.approx(1.0, abs=1e-6)
    # 农田一片 vs 有一片农田: unigrams 4/4 match; bigrams 农田, 田一, 一片 -> 2 of 3 match (田一 does not);
    # hyp length 4 < ref length 5 -> BP = exp(1 - 5/4). BLEU-2 = BP * sqrt(1 * 2/3).
    s = caption_scores({"a": "农田一片"}, {"a": ["有一片农田"]}, "zh")
    bp = math.exp(1 - 5 / 4)
    assert s["BLEU-1"] == pytest.approx(bp, rel=1e-4)
    assert s["BLEU-2"] == pytest.approx(bp * math.sqrt(2 / 3), rel=1e-4)
    # ROUGE-L (beta 1.2): LCS(农田一片, 有一片农田) = 2 (一片 or 农田); P = 2/4, R = 2/5.
    p, r, beta = 0.5, 0.4, 1.2
    assert s["ROUGE-L"] == pytest.approx((1 + beta**2) * p * r / (r + beta**2 * p), rel=1e-4)


@pytest.mark.skipif(shutil.which("java") is None, reason="PTB tokenizer and METEOR need Java")
def test_english_uses_ptb_tokenisation() -> None:
    # Case and the trailing " ." are normalised away by the PTB tokenizer: an exact match scores 1.
    s = caption_scores({"a": "There is a piece of farmland."}, {"a": ["there is a piece of farmland ."]}, "en")
    assert s["BLEU-4"] == pytest.approx(1.0, abs=1e-6)
    assert 0.9 < s["METEOR"] <= 1.0


def test_answer_parsers() -> None:
    assert parse_scene("这是一张密集住宅区的遥感图像。", "ucm") == "denseresidential"
    assert parse_scene("The scene is a harbor.", "ucm") == "harbor"
    assert parse_scene("图中是港口。", "rsicd") == "port"
    assert parse_scene("不知道", "ucm") is None
    assert [parse_yes_no(a) for a in ("是的，图中有飞机。", "没有。", "图中看不到船。", "Yes.", "No, I cannot see any boats.")] == [
        "yes", "no", "no", "yes", "no"]
    assert [parse_count(a) for a in ("图中有三架飞机。", "There are four planes.", "12.", "一共有十二个储罐。")] == [3, 4, 12, 12]


def test_faithfulness_counts_answers_with_unmentioned_objects() -> None:
    f = faithfulness(["图中有两架飞机和一个储罐。", "有很多飞机。"], [["机场里有很多飞机。"], ["机场里有很多飞机。"]])
    assert f["unfaithful_answers"] == 1 and f["unfaithful_rate"] == 0.5
    assert f["unsupported_objects"] == {"storage_tank": 1}
    # Trees are ubiquitous: an answer adding only trees counts in the plain rate, not in the distinctive one.
    f = faithfulness(["机场里有很多飞机和树。"], [["机场里有很多飞机。"]])
    assert f["unfaithful_rate"] == 1.0 and f["unfaithful_rate_distinctive"] == 0.0


def test_stock_sentence_and_confusion() -> None:
    stock = stock_sentences({"a": ["x y .", "X Y", "z"], "b": ["w"]})
    assert stock == {"a": "x y .", "b": "w"}
    assert confusion(["a", "a", "b"], ["a", None, "a"], ["a", "b"]) == [[1, 0, 1], [1, 0, 0]]
