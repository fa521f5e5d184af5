"""Metrics of the evaluation: COCO caption scores, faithfulness, the stock-sentence baseline, confusion matrices.

The answer parsers (scene / yes-no / count) live in `vocabulary/answers.py` and are re-exported here.

Pure functions over strings (no model), unit-tested against hand-computed values.
- English captions: pycocoevalcap (BLEU-1..4, METEOR, ROUGE-L, CIDEr) after its PTB tokenizer (Java), the
  standard of every captioning paper.
- Chinese captions: character level: CJK characters, letters and digits become space-separated tokens,
  punctuation is dropped; then the same BLEU / ROUGE-L / CIDEr scorers (METEOR is English-only, not reported).
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

from vocabulary.answers import parse_count, parse_scene, parse_yes_no, scene_names
from vocabulary.objects import unsupported_objects



__all__ = [  # the answer parsers are re-exported for the evaluator's callers
    "CAPTION_METRICS", "zh_char_tokens", "ptb_tokenize", "caption_scores", "faithfulness", "normalise_sentence",
    "stock_sentences", "confusion", "parse_count", "parse_scene", "parse_yes_no", "scene_names"
]

CAPTION_METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")


def zh_char_tokens(text: str) -> str:
    """'有两架飞机。' -> '有 两 架 飞 机' (punctuation and spaces dropped, ASCII words kept whole, lower-cased)."""
    out = []
    for piece in re.findall(r"[A-Za-z]+|\d+|\S", text):
        if len(piece) == 1 and unicodedata.category(piece).startswith(("P", "S")):
            continue
        out.append(piece.lower())
    return " ".join(out)


def ptb_tokenize(texts: dict[str, list[str]]) -> dict[str, list[str]]:
    """pycocoevalcap's PTB tokenizer (Java): lower-cases and strips punctuation."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    return PTBTokenizer().tokenize({k: [{"caption": c} for c in v] for k, v in texts.items()})


def caption_scores(hyps: dict[str, str], refs: dict[str, list[str]], lang: str, meteor: bool = True
                   ) -> dict[str, float]:
    """Corpus-level caption metrics of hypotheses vs references (same keys)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    if lang == "en":
        tok = ptb_tokenize({**{f"h{k}": [v] for k, v in hyps.items()}, **{f"r{k}": v for k, v in refs.items()}})
        res = {k: tok[f"h{k}"] for k in hyps}
        gts = {k: tok[f"r{k}"] for k in hyps}
    else:
        res = {k: [zh_char_tokens(v)] for k, v in hyps.items()}
        gts = {k: [zh_char_tokens(r) for r in refs[k]] for k in hyps}
    # Empty hypotheses break the scorers' asserts; score them as a lone out-of-vocabulary token.
    res = {k: [v[0] if v[0].strip() else "<empty>"] for k, v in res.items()}
    out: dict[str, float] = {}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    out.update({f"BLEU-{i + 1}": float(b) for i, b in enumerate(bleu)})
    if lang == "en" and meteor:
        from pycocoevalcap.meteor.meteor import Meteor

        m = Meteor()
        out["METEOR"] = float(m.compute_score(gts, res)[0])
        m.close() if hasattr(m, "close") else None
    out["ROUGE-L"] = float(Rouge().compute_score(gts, res)[0])
    out["CIDEr"] = float(Cider().compute_score(gts, res)[0])
    return out


def faithfulness(answers: list[str], references: list[list[str]]) -> dict:
    """Share of answers naming at least one glossary object that none of their references mentions; also the same
    ignoring the ubiquitous objects (trees, roads, buildings, houses, cars) that captions often leave out."""
    bad = [unsupported_objects(a, r) for a, r in zip(answers, references)]
    distinctive = [unsupported_objects(a, r, distinctive_only=True) for a, r in zip(answers, references)]
    n_bad = sum(1 for b in bad if b)
    objects = Counter(o for b in bad for o in b)
    return {"unfaithful_rate": n_bad / max(len(answers), 1), "unfaithful_answers": n_bad, "answers": len(answers),
            "unfaithful_rate_distinctive": sum(1 for b in distinctive if b) / max(len(answers), 1),
            "unsupported_objects": dict(objects.most_common(10))}


def normalise_sentence(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def stock_sentences(train_refs: dict[str | None, list[str]]) -> dict[str | None, str]:
    """Most common training reference of each class (the 'class stock sentence' baseline)."""
    out = {}
    for key, sents in train_refs.items():
        counts = Counter(normalise_sentence(s) for s in sents)
        best = counts.most_common(1)[0][0]
        out[key] = next(s for s in sents if normalise_sentence(s) == best)
    return out


def confusion(true: list[str], pred: list[str | None], classes: list[str]) -> list[list[int]]:
    """Counts [true class][predicted class]; unparsable predictions go to an extra last column."""
    idx = {c: i for i, c in enumerate(classes)}
    mat = [[0] * (len(classes) + 1) for _ in classes]
    for t, p in zip(true, pred):
        if t in idx:
            mat[idx[t]][idx.get(p, len(classes))] += 1
    return mat
