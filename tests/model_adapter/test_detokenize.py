"""Incremental detokenisation gives exactly `tokenizer.decode`'s text, without re-decoding the whole answer."""

import random
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from model_adapter.detokenize import Detokenizer

MINI = Path(__file__).resolve().parents[2] / "checkpoints" / "remoteglm-mini"
TEXTS = ["这张遥感图像展现了一个机场，停着 3 架飞机。", "Dense residential area 🏠 near a river — 河流。", "ü ß 😀 a"]


@pytest.fixture(scope="module", params=["glm4v", "qwen2_5_vl", "mini"])
def tokenizer(request):
    if request.param == "mini":
        if not (MINI / "tokenizer.json").exists():
            pytest.skip("shipped mini model absent")
        return AutoTokenizer.from_pretrained(MINI)
    return AutoTokenizer.from_pretrained(request.getfixturevalue(f"tiny_{request.param}_dir"))


def _sequences(tokenizer):
    rng = random.Random(0)
    ids = [tokenizer.encode(t, add_special_tokens=False) for t in TEXTS]
    special = list(tokenizer.all_special_ids)[:2]
    # Real texts, random ids (which split multi-byte characters anywhere), and special tokens in between.
    randoms = [[rng.randrange(min(len(tokenizer), 20000)) for _ in range(40)] for _ in range(3)]
    return ids + randoms + [ids[0][:5] + special + ids[1]]


@pytest.mark.parametrize("fast", [True, False], ids=["decode-stream", "window"])
def test_incremental_text_equals_a_full_decode(tokenizer, fast):
    for ids in _sequences(tokenizer):
        detok = Detokenizer(tokenizer)
        if not fast:
            detok._stream = None
        pieces = [detok.step(t) for t in ids] + [detok.flush()]
        assert "".join(pieces) == tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        assert all("\ufffd" not in p for p in pieces[:-1]) or "\ufffd" in tokenizer.decode(ids)


def test_window_path_decodes_a_bounded_number_of_tokens_per_step(tokenizer):
    """TextIteratorStreamer decodes the whole answer again at every token; the window path stays short."""
    ids = tokenizer.encode(TEXTS[0] * 20, add_special_tokens=False)
    detok = Detokenizer(tokenizer)
    detok._stream = None
    lengths = []
    decode = detok._decode
    detok._decode = lambda part: (lengths.append(len(part)), decode(part))[1]
    text = "".join(detok.step(t) for t in ids) + detok.flush()
    assert text == tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    assert len(ids) > 100 and max(lengths) <= 8
