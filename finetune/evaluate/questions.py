"""Question-following report of `finetune.evaluate` (task "questions"): held-out phrasings on test images.

Every test image is asked each intent its fact sheet supports (`finetune.data.intents.heldout_items`), in phrasings that
never appear in training, plus a no-image question, an out-of-scope request, a language request and two second
turns (translate the previous answer, refer back to it) whose first answer is the model's own. Each answer is graded
against the fact sheet (`intents.grade`). Reported: per-intent accuracy, their mean, asks-for-image rate (without an
image, and wrongly with one), honest-refusal rate, language-followed rate, refer-back correctness, unsupported
distinctive objects in the free answers, and counting against the best constant answer.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import asdict

from finetune.data import intents as I
from vocabulary.answers import parse_count
from vocabulary.objects import unsupported_objects

MAX_NEW = {"detailed": 96, "summary": 48, "what_else": 48, "refer_back": 48}
FREE_FORM = ("what_else", "summary", "detailed", "colours", "layout")


def build_question_items(records: list, seed: int = 0) -> list[I.FollowItem]:
    pools = I.load_pools()
    return [it for r in records for it in I.heldout_items(r, seed, pools)]


def _conversation(it: I.FollowItem, image, messages: list[dict]):
    from model_adapter import ChatMessage

    out = []
    for k, m in enumerate(messages):
        imgs = [image] if (k == 0 and image is not None) else []
        out.append(ChatMessage(m["role"], m["content"], imgs))
    return out


def generate_questions(backend, items: list[I.FollowItem], load, batch_size: int = 32,
                       log=print) -> float:
    """Fill `answer` (and `first_answer` for second-turn items) by greedy batched generation; `load(path)` gives
    an image. Returns the seconds spent."""
    from model_adapter import GenerationParams

    t0 = time.time()
    images: dict[str, object] = {}

    def image_of(it):
        if it.image is None:
            return None
        if it.image not in images:
            images[it.image] = load(it.image)
        return images[it.image]

    def run(group: list, build, store, tag: str) -> None:
        by_len = defaultdict(list)  # similar prompts batch together; image / no image never share a batch
        for it in group:
            by_len[(it.image is None, MAX_NEW.get(it.intent, 64))].append(it)
        done = 0
        for (_, max_new), chunk_all in sorted(by_len.items()):
            params = GenerationParams(do_sample=False, max_new_tokens=max_new, repetition_penalty=1.0)
            for i in range(0, len(chunk_all), batch_size):
                chunk = chunk_all[i : i + batch_size]
                outs = backend.generate_batch([build(it) for it in chunk], params)
                for it, c in zip(chunk, outs):
                    store(it, c.text.strip())
                done += len(chunk)
            log(f"  questions {tag}: {done}/{len(group)} ({time.time() - t0:.0f} s)")

    firsts = [it for it in items if it.needs_first]
    run(firsts, lambda it: _conversation(it, image_of(it), it.messages[:1]),
        lambda it, a: setattr(it, "first_answer", a), "first turns")
    for it in firsts:
        it.messages = [it.messages[0], {"role": "assistant", "content": it.first_answer}, *it.messages[2:]]
    run(items, lambda it: _conversation(it, image_of(it), it.messages), lambda it, a: setattr(it, "answer", a),
        "answers")
    return time.time() - t0


def best_constant(expected: list) -> tuple[object, float]:
    """The single answer (a number 0-30 or "many") that would score best on these count items, graded as
    `intents.grade` grades a count (exact number, within a hedged range, or "many"), and its accuracy."""
    if not expected:
        return None, 0.0

    def hit(answer, e) -> bool:
        if e == "many" or answer == "many":
            return answer == e
        return answer == e if isinstance(e, int) else e[0] <= answer <= e[1]

    scores = Counter({a: sum(hit(a, e) for e in expected) for a in [*range(31), "many"]})
    value, hits = scores.most_common(1)[0]
    return value, hits / len(expected)


def score_questions(items: list[I.FollowItem]) -> dict:
    by_intent = defaultdict(list)
    for it in items:
        it.meta = {**it.meta, "correct": I.grade(it)}
        by_intent[it.intent].append(it)
    per = {k: sum(it.meta["correct"] for it in v) / len(v) for k, v in sorted(by_intent.items())}
    with_image = [it for it in items if it.image is not None and it.intent not in ("out_of_scope",)]
    free = [it for it in items if it.intent in FREE_FORM]
    counts = by_intent.get("count", [])
    const, const_acc = best_constant([it.meta["count"] for it in counts])
    numeric = [it for it in counts if isinstance(it.meta["count"], int)]  # the references agree on a number
    n_const, n_const_acc = best_constant([it.meta["count"] for it in numeric])
    lang_items = by_intent.get("language", []) + by_intent.get("translate", [])
    report = {
        "n": len(items), "images": len({it.image for it in items if it.image}),
        "per_intent": per, "n_per_intent": {k: len(v) for k, v in sorted(by_intent.items())},
        "mean_over_intents": sum(per.values()) / max(len(per), 1),
        "overall": sum(it.meta["correct"] for it in items) / max(len(items), 1),
        "asks_for_image_without_one": per.get("no_image"),
        "asks_for_image_with_one": sum(bool(I.UPLOAD.search(it.answer)) for it in with_image) / max(len(with_image), 1),
        "honest_refusal": per.get("unanswerable"),
        "language_followed": sum(it.meta["correct"] for it in lang_items) / max(len(lang_items), 1),
        "refer_back": per.get("refer_back"),
        "unsupported_distinctive_free_answers": sum(
            bool(unsupported_objects(it.answer, it.references, distinctive_only=True)) for it in free
        ) / max(len(free), 1),
        "count": {"n": len(counts), "accuracy": per.get("count", 0.0), "best_constant": const,
                  "best_constant_accuracy": const_acc,
                  "numeric": {"n": len(numeric), "accuracy": sum(it.meta["correct"] for it in numeric)
                              / max(len(numeric), 1), "best_constant": n_const,
                              "best_constant_accuracy": n_const_acc},
                  "unparsed": sum(parse_count(it.answer) is None for it in counts)},
        "by_language": {lang: sum(it.meta["correct"] for it in items if it.lang == lang)
                        / max(sum(it.lang == lang for it in items), 1) for lang in I.LANGS},
        "examples": {k: [{"q": it.messages[-1]["content"], "a": it.answer, "first": it.first_answer or None,
                          "image": it.image, "correct": it.meta["correct"]} for it in v[:4]]
                     for k, v in sorted(by_intent.items())},
    }
    return report


def markdown_questions(rep: dict) -> str:
    lines = [f"#### Question following (held-out phrasings, {rep['images']} images, {rep['n']} questions)", "",
             "| intent | n | accuracy |", "|---|---|---|"]
    for k, v in rep["per_intent"].items():
        lines.append(f"| {k} | {rep['n_per_intent'][k]} | {v:.3f} |")
    c = rep["count"]
    lines += ["", f"- mean over intents **{rep['mean_over_intents']:.3f}** (all questions {rep['overall']:.3f}); "
              f"zh {rep['by_language']['zh']:.3f}, en {rep['by_language']['en']:.3f}",
              f"- no image -> asks for one: {rep['asks_for_image_without_one']:.3f}; asks for an image although "
              f"one is there: {rep['asks_for_image_with_one']:.3f}",
              f"- unanswerable -> honest: {rep['honest_refusal']:.3f}; language requests followed: "
              f"{rep['language_followed']:.3f}; refer-back correct: {rep['refer_back'] or 0:.3f}",
              f"- counting: {c['accuracy']:.3f} over {c['n']} questions vs {c['best_constant_accuracy']:.3f} for "
              f"the best constant answer ({c['best_constant']}); {c['unparsed']} answers without a number; where the "
              f"references agree on a number: {c['numeric']['accuracy']:.3f} over {c['numeric']['n']} vs "
              f"{c['numeric']['best_constant_accuracy']:.3f} for the best constant ({c['numeric']['best_constant']})",
              f"- free answers (what else, summary, detailed, colours, layout) naming a distinctive object no "
              f"reference names: {rep['unsupported_distinctive_free_answers']:.1%}"]
    return "\n".join(lines) + "\n"


def answers_rows(items: list[I.FollowItem]) -> list[dict]:
    return [asdict(it) for it in items]
