"""Checks of one translation against its English source; a non-empty problem list means "reject and retry".

    from translate.validate import check_sentence
    check_sentence("Four storage tanks .", "四个储罐。")   # -> []

Rules (issue 3): Chinese, non-empty, no leftover English words (single letters such as "R" or "T" are allowed, they
name shapes), sane length ratio, glossary terms used, numbers and colours preserved. The glossary and the colour and
number tables come from vocabulary/glossary.py, derived from the shipped translations; `python -m translate check`
runs these rules over a translation file (the shipped ones pass at > 99 %).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vocabulary.glossary import COLOURS, GLOSSARY, NUMBERS, ZH_DIGITS, glossary_variants

from vocabulary.objects import unsupported_objects

_CJK = re.compile(r"[\u4e00-\u9fff]")
_LATIN_WORD = re.compile(r"[A-Za-z]{2,}")
_GLOSSARY_RE = {t: re.compile(r"\b" + re.escape(t) + r"(?:s|es)?\b") for t in GLOSSARY}
# Hyphenated numbers ("four-way road" = 十字路口) and "one" (idiomatic: "one side", "one another") are not checked.
_NUMBER_RE = re.compile(r"\b(" + "|".join(k for k in NUMBERS if k != "one") + r"|\d+)\b(?![-\w])")
_COLOUR_RE = {c: re.compile(r"\b" + c + r"\b(?!-)") for c in COLOURS}


@dataclass(frozen=True)
class Rules:
    """Thresholds of the checks (sentence mode); the defaults fit the shipped translations."""

    allowed_latin: frozenset[str] = frozenset()
    """Latin-letter tokens of 2+ letters allowed in Chinese output (single letters always are)."""
    min_ratio: float = 0.12
    """Minimum Chinese characters per English character."""
    max_ratio: float = 1.0
    """Maximum Chinese characters per English character."""
    check_numbers: bool = True
    check_colours: bool = True


DEFAULT_RULES = Rules()


def glossary_terms(en: str) -> list[str]:
    """Glossary terms present in an English text (longest match wins: "dense residential" hides "residential")."""
    low = en.lower()
    found = [t for t in sorted(GLOSSARY, key=len, reverse=True) if _GLOSSARY_RE[t].search(low)]
    return [t for t in found if not any(t != o and t in o for o in found)]


def _number_ok(token: str, zh: str) -> bool:
    n = int(token) if token.isdigit() else NUMBERS[token]
    return str(n) in zh or any(z in zh for z in ZH_DIGITS.get(n, ()))


def check_basic(zh: str) -> list[str]:
    """Problems every mode shares: empty, no Chinese."""
    if not zh.strip():
        return ["empty"]
    if not _CJK.search(zh):
        return ["no Chinese characters"]
    return []


def check_english_leftovers(zh: str, rules: Rules = DEFAULT_RULES, en: str = "") -> list[str]:
    """Latin words of 2+ letters in the Chinese, except allowed ones and words quoted in the source ('gonzaga')."""
    quoted = {w.lower() for q in re.findall(r"'([^']+)'|\"([^\"]+)\"", en) for w in _LATIN_WORD.findall(" ".join(q))}
    left = [w for w in _LATIN_WORD.findall(zh) if w not in rules.allowed_latin and w.lower() not in quoted]
    return [f"English left: {' '.join(left[:5])}"] if left else []


def check_glossary(en: str, zh: str) -> list[str]:
    return [f"glossary: {t} -> {GLOSSARY[t]}" for t in glossary_terms(en)
            if not any(v in zh for v in glossary_variants(t))]


def check_sentence(en: str, zh: str, rules: Rules = DEFAULT_RULES) -> list[str]:
    """All problems of a sentence translation (empty list = accepted)."""
    problems = check_basic(zh)
    if problems:
        return problems
    problems += check_english_leftovers(zh, rules, en)
    ratio = len(re.sub(r"\s", "", zh)) / max(1, len(en.strip()))
    if not rules.min_ratio <= ratio <= rules.max_ratio:
        problems.append(f"length ratio {ratio:.2f} outside [{rules.min_ratio}, {rules.max_ratio}]")
    problems += check_glossary(en, zh)
    low = en.lower()
    if rules.check_numbers:
        problems += [f"number: {m} missing" for m in dict.fromkeys(_NUMBER_RE.findall(low)) if not _number_ok(m, zh)]
    if rules.check_colours:
        problems += [f"colour: {c} -> {COLOURS[c][0]} missing" for c, p in _COLOUR_RE.items()
                     if p.search(low) and not any(z in zh for z in COLOURS[c])]
    return problems


def check_paragraph(sources: list[str], zh: str, rules: Rules = DEFAULT_RULES) -> list[str]:
    """Problems of a merged / rewritten paragraph made from several sentences of one image.

    Glossary terms named by most of the sentences must appear; single-sentence details may be merged away. Distinctive
    objects (airplanes, storage tanks, courts, boats, ...) that no sentence mentions are embellishments: rejected.
    """
    problems = check_basic(zh)
    if problems:
        return problems
    problems += check_english_leftovers(zh, rules)
    if len(zh) < 8:
        problems.append("paragraph too short")
    terms = [t for t in GLOSSARY if sum(t in glossary_terms(s) for s in sources) * 2 > len(sources)]
    problems += [f"glossary: {t} -> {GLOSSARY[t]}" for t in terms if not any(v in zh for v in glossary_variants(t))]
    problems += [f"not in the sources: {k}" for k in unsupported_objects(zh, sources, distinctive_only=True)]
    return problems
