"""Evaluate any adapter-loadable model on a caption test split, one command:

    python -m finetune.evaluate --model checkpoints/remoteglm-mini --dataset ucm --split test
    python -m finetune.evaluate --model checkpoints/remoteglm-mini --dataset rsicd --split test
    python -m finetune.evaluate --model /models/GLM-4.1V-9B-Thinking --adapter runs/lora --quant 4

Asks every test image the fixed prompts below (greedy, batched through `model_adapter`), then reports BLEU-1..4,
METEOR, ROUGE-L, CIDEr against the 5 references (English: COCO PTB tokenisation; Chinese: character level),
scene accuracy + confusion matrix PNG, yes/no accuracy, count accuracy (and the best constant answer's),
faithfulness (answers naming glossary objects that no reference mentions), the "class stock sentence" baseline (a
perfect scene classifier that answers its class's most common training caption), and the question-following
report (task "questions", `finetune.evaluate.questions`: held-out phrasings of ~20 intents graded against each image's
fact sheet, no-image / refusal / language / refer-back rates). Writes `<name>.json`, `<name>.md`, `<name>_confusion.png`,
`<name>_answers.jsonl` with <name> = `<model>[+<adapter>]_<dataset>_<split>` into --out (default: runs/eval/) and
prints where. Images are read from --data-root (env REMOTEGLM_DATA_ROOT); none found is an error.
"""

from __future__ import annotations

import json
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from finetune.evaluate.caption_metrics import (
    caption_scores, confusion, faithfulness, normalise_sentence, parse_count, parse_scene, parse_yes_no,
    stock_sentences,
)
from settings import config_from_argv
from vocabulary.datasets import data_root
from finetune.evaluate.questions import (
    answers_rows, best_constant, build_question_items, markdown_questions, score_questions,
)

REPO = Path(__file__).resolve().parents[2]
# The exact prompts (first line of each finetune/prompt_pools pool); part of the report.
PROMPTS = {
    "describe_en": "Describe this remote sensing image.",
    "describe_zh": "请描述这张遥感图像。",
    "scene_en": "What scene does this remote sensing image show?",
    "scene_zh": "这张遥感图像展现了什么场景？",
}
# Published UCM-captions results (BLEU-4, CIDEr), for the table.
ANCHORS = [("VLAD-LSTM", 0.503, None), ("SAT (LAM-TL)", 0.723, None), ("SkyEyeGPT", 0.784, 2.37),
           ("RS-LLaVA-13B", 0.728, 3.49)]
# Below this many images corpus-level scores (CIDEr's document frequencies, BLEU's brevity) say little, and the
# stock-sentence baseline least of all (with --limit 5 it printed BLEU 1.000 / CIDEr 0.000).
MIN_BASELINE_IMAGES = 50
MAX_NEW = {"describe_en": 48, "describe_zh": 64, "scene_en": 24, "scene_zh": 24, "presence_en": 24,
           "presence_zh": 24, "count_en": 24, "count_zh": 24}


@dataclass
class EvalConfig:
    """CLI flags of the evaluation."""

    model: str = str(REPO / "checkpoints" / "remoteglm-mini")
    """Model directory or hub name (anything `model_adapter.load_backend` loads)."""
    adapter: str | None = None
    """Optional LoRA adapter directory."""
    quant: Literal[4, 8] | None = None
    """4 or 8 to load the base model quantised (bitsandbytes)."""
    dataset: Literal["ucm", "rsicd", "sydney"] = "ucm"
    split: Literal["train", "val", "test"] = "test"
    data_root: Path = field(default_factory=data_root)
    """Folder with ucm/, sydney/, rsicd/ (env REMOTEGLM_DATA_ROOT)."""
    out: Path | None = None
    """Output folder of the report files (default: runs/eval/)."""
    tasks: tuple[str, ...] = ("describe_en", "describe_zh", "scene_zh", "scene_en", "presence_zh", "presence_en",
                              "count_zh", "count_en", "questions")
    """Comma-separated subset of the tasks above."""
    batch_size: int = 32
    limit: int = 0
    """Evaluate only the first N images (0 = all)."""
    every: int = 1
    """Evaluate every Nth image only (a subset spread over all classes; files named `_every<N>`)."""
    device: str = "auto"


class EvalError(RuntimeError):
    """Bad input the user fixes with a flag; printed as one line, exit code 2."""


def available_images(cfg: EvalConfig, records: list) -> list:
    """The records whose image is on disk; an error naming the data root when none is, a count when some are."""
    found = [r for r in records if (cfg.data_root / r.image).is_file()]
    where = f"{cfg.data_root}" + ("" if cfg.data_root.is_dir() else " (that folder does not exist)")
    if records and not found:
        raise EvalError(f"none of the {len(records)} {cfg.dataset} {cfg.split} images is under {where}, e.g. "
                        f"{records[0].image}; point --data-root (or REMOTEGLM_DATA_ROOT) at the folder holding "
                        f"{cfg.dataset}/images/")
    if not records:
        raise EvalError(f"{cfg.dataset} has no {cfg.split!r} images in its caption file (data root {cfg.data_root})")
    if len(found) < len(records):
        print(f"warning: only {len(found)} of {len(records)} {cfg.dataset} {cfg.split} images found under "
              f"{cfg.data_root}; evaluating those {len(found)}", flush=True)
    return found


def _label(path: str) -> str:
    """A short file-name-safe name for a model or adapter: its folder name (a checkpoint's: run-step)."""
    parts = [p for p in Path(path).parts if p not in ("adapter", "checkpoints", "/", ".", "..")] or ["model"]
    name = parts[-1] if not parts[-1].startswith("step-") or len(parts) < 2 else f"{parts[-2]}-{parts[-1]}"
    return "".join(c if c.isalnum() or c in "-_.+" else "-" for c in name)


def result_paths(cfg: EvalConfig) -> tuple[Path, str]:
    """(folder, stem) of the results: `<model>[+<adapter>]_<dataset>_<split>[_first<N>]` under --out or runs/eval."""
    stem = _label(cfg.model) + (f"+{_label(cfg.adapter)}" if cfg.adapter else "") + f"_{cfg.dataset}_{cfg.split}"
    if cfg.every > 1:
        stem += f"_every{cfg.every}"
    if cfg.limit:
        stem += f"_first{cfg.limit}"
    return Path(cfg.out) if cfg.out else REPO / "runs" / "eval", stem


@dataclass
class Item:
    task: str
    image: str
    label: str | None
    prompt: str
    references: list[str]
    expected: str | int | None = None
    answer: str = ""
    meta: dict = field(default_factory=dict)


def split_records(cfg: EvalConfig) -> list:
    """The split's caption records whose image is on disk (the first --limit)."""
    from finetune.data import load_captions

    try:
        records = [r for r in load_captions(cfg.data_root, cfg.dataset) if r.split == cfg.split]
    except FileNotFoundError as exc:
        raise EvalError(f"{exc}; point --data-root (or REMOTEGLM_DATA_ROOT) at the data folder") from None
    records = available_images(cfg, records)[:: max(cfg.every, 1)]
    return records[: cfg.limit] if cfg.limit else records


def build_items(cfg: EvalConfig, records: list) -> tuple[list[Item], dict]:
    """Questions for the split: fixed describe / scene prompts per image; presence and count questions from the
    data builder's test samples (they carry the expected answer)."""
    from finetune.data import BuildConfig, build, load_captions

    keep = {r.image for r in records}
    items = []
    for r in records:
        for task in ("describe_en", "describe_zh", "scene_en", "scene_zh"):
            if task not in cfg.tasks or (task.startswith("scene") and r.label is None):
                continue
            refs = r.refs_en if task.endswith("en") else r.refs_zh
            items.append(Item(task, r.image, r.label, PROMPTS[task], refs, r.label))
    if any(t.startswith(("presence", "count")) for t in cfg.tasks):
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            res = build(BuildConfig(data_root=cfg.data_root, out=Path(tmp), datasets=(cfg.dataset,),
                                    tasks=tuple(t for t in cfg.tasks if t.startswith(("presence", "count")))))
        for s in res.splits.get(cfg.split, []):
            if s["task"] in cfg.tasks and s["image"] in keep and len(s["messages"]) == 2:
                meta = s.get("meta", {})
                expected = meta.get("answer") if s["task"].startswith("presence") else meta.get("count")
                items.append(Item(s["task"], s["image"], s.get("label"), s["messages"][0]["content"],
                                  s.get("references", []), expected, meta=meta))
    train_refs: dict = defaultdict(list)
    for r in load_captions(cfg.data_root, cfg.dataset):
        if r.split == "train":
            train_refs[r.label].extend(r.refs_en)
            train_refs[("zh", r.label)].extend(r.refs_zh)
    return items, train_refs


def generate_all(cfg: EvalConfig, items: list[Item], questions: list | None = None) -> float:
    """Fill `item.answer` (and the question-following items' answers) by greedy batched generation through the
    adapter; returns seconds spent."""
    from finetune.evaluate.questions import generate_questions
    from model_adapter import ChatMessage, GenerationParams, load_backend, load_image

    backend = load_backend(model=cfg.model, adapter=cfg.adapter, quant=cfg.quant, device=cfg.device)
    images: dict[str, object] = {}
    t0 = time.time()
    by_task = defaultdict(list)
    for it in items:
        by_task[it.task].append(it)
    for task, group in by_task.items():
        params = GenerationParams(do_sample=False, max_new_tokens=MAX_NEW.get(task, 48), repetition_penalty=1.0)
        for i in range(0, len(group), cfg.batch_size):
            chunk = group[i : i + cfg.batch_size]
            convs = []
            for it in chunk:
                if it.image not in images:
                    images[it.image] = load_image(str(cfg.data_root / it.image))
                convs.append([ChatMessage("user", it.prompt, [images[it.image]])])
            for it, c in zip(chunk, backend.generate_batch(convs, params)):
                it.answer = c.text.strip()
            print(f"  {task}: {min(i + cfg.batch_size, len(group))}/{len(group)} ({time.time() - t0:.0f} s)",
                  flush=True)
    if questions:
        generate_questions(backend, questions, lambda path: load_image(str(cfg.data_root / path)), cfg.batch_size,
                           log=lambda msg: print(msg, flush=True))
    backend.close()
    return time.time() - t0


def score(cfg: EvalConfig, items: list[Item], train_refs: dict) -> dict:
    report: dict = {"model": cfg.model, "adapter": cfg.adapter, "dataset": cfg.dataset, "split": cfg.split,
                    "prompts": PROMPTS, "tasks": {}}
    by_task = defaultdict(list)
    for it in items:
        by_task[it.task].append(it)
    stock = stock_sentences({k: v for k, v in train_refs.items() if not isinstance(k, tuple)})
    stock_zh = stock_sentences({k[1]: v for k, v in train_refs.items() if isinstance(k, tuple)})
    for task, group in by_task.items():
        res: dict = {"n": len(group)}
        if task.startswith("describe"):
            lang = task[-2:]
            hyps = {str(i): it.answer for i, it in enumerate(group)}
            refs = {str(i): it.references for i, it in enumerate(group)}
            res["metrics"] = caption_scores(hyps, refs, lang)
            table = stock if lang == "en" else stock_zh
            oracle = {str(i): table.get(it.label, table.get(None, "")) for i, it in enumerate(group)}
            res["class_stock_baseline"] = caption_scores(oracle, refs, lang, meteor=False)
            if len(group) < MIN_BASELINE_IMAGES:
                res["class_stock_baseline_note"] = (f"over only {len(group)} images: not meaningful below "
                                                    f"{MIN_BASELINE_IMAGES}")
            res["class_stock_baseline_faithfulness"] = faithfulness(list(oracle.values()),
                                                                    [it.references for it in group])
            stock_set = {normalise_sentence(s) for s in table.values()}
            same = sum(normalise_sentence(it.answer) in stock_set for it in group)
            res["answers_equal_to_a_class_stock_sentence"] = same / len(group)
            res["distinct_answers"] = len({it.answer for it in group})
            res["faithfulness"] = faithfulness([it.answer for it in group], [it.references for it in group])
        elif task.startswith("scene"):
            pred = [parse_scene(it.answer, cfg.dataset) for it in group]
            res["accuracy"] = sum(p == it.label for p, it in zip(pred, group)) / len(group)
            res["unparsed"] = sum(p is None for p in pred)
            classes = sorted({it.label for it in group})
            res["classes"] = classes
            res["confusion"] = confusion([it.label for it in group], pred, classes)
        elif task.startswith("presence"):
            pred = [parse_yes_no(it.answer) for it in group]
            res["accuracy"] = sum(p == it.expected for p, it in zip(pred, group)) / len(group)
            res["yes_share_expected"] = sum(it.expected == "yes" for it in group) / len(group)
            res["unparsed"] = sum(p is None for p in pred)
        elif task.startswith("count"):
            pred = [parse_count(it.answer) for it in group]
            res["accuracy"] = sum(p == it.expected for p, it in zip(pred, group)) / len(group)
            res["best_constant"], res["best_constant_accuracy"] = best_constant([it.expected for it in group])
        res["examples"] = [{"image": it.image, "prompt": it.prompt, "answer": it.answer,
                            "references": it.references[:2], "expected": it.expected} for it in group[:5]]
        report["tasks"][task] = res
    return report


def plot_confusion(report: dict, path: Path) -> bool:
    task = next((t for t in ("scene_en", "scene_zh") if t in report["tasks"]), None)
    if task is None:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = report["tasks"][task]
    mat, classes = res["confusion"], res["classes"]
    fig, ax = plt.subplots(figsize=(0.38 * len(classes) + 3, 0.38 * len(classes) + 2))
    ax.imshow(mat, cmap="Blues")
    ax.set_xticks(range(len(classes) + 1), classes + ["(none)"], rotation=90, fontsize=7)
    ax.set_yticks(range(len(classes)), classes, fontsize=7)
    for i, row in enumerate(mat):
        for j, v in enumerate(row):
            if v:
                ax.text(j, i, str(v), ha="center", va="center", fontsize=6, color="black")
    ax.set_xlabel("predicted (parsed from the answer)")
    ax.set_ylabel("true class")
    ax.set_title(f"{report['dataset']} {report['split']} {task}: accuracy {res['accuracy']:.3f}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def markdown(report: dict) -> str:
    t = report["tasks"]
    name = f"{report['dataset'].upper()} {report['split']}"
    lines = [f"### {name} ({Path(report['model']).name}{', adapter ' + report['adapter'] if report['adapter'] else ''})", ""]
    cols = ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr"]
    lines += ["| captions | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    fmt = lambda m, c: f"{m[c]:.3f}" if c in m else "-"  # noqa: E731
    for task, label in (("describe_en", "ours, English"), ("describe_zh", "ours, Chinese (characters)")):
        if task in t:
            lines.append(f"| {label} | " + " | ".join(fmt(t[task]["metrics"], c) for c in cols) + " |")
            note = t[task].get("class_stock_baseline_note")
            lines.append(f"| class stock sentence, perfect classifier ({task[-2:]}){' - ' + note if note else ''} | "
                         + " | ".join(fmt(t[task]["class_stock_baseline"], c) for c in cols) + " |")
    if report["dataset"] == "ucm":
        for n, b4, cider in ANCHORS:
            lines.append(f"| {n} (published) | - | - | - | {b4:.3f} | - | - | {cider if cider else '-'} |")
    lines.append("")
    lines += ["| question task | n | accuracy |", "|---|---|---|"]
    for task in ("scene_en", "scene_zh", "presence_en", "presence_zh", "count_en", "count_zh"):
        if task in t:
            extra = (f" (best constant answer {t[task]['best_constant']}: {t[task]['best_constant_accuracy']:.3f})"
                     if "best_constant" in t[task] else "")
            lines.append(f"| {task} | {t[task]['n']} | {t[task]['accuracy']:.3f}{extra} |")
    lines.append("")
    if "questions" in report:
        lines += [markdown_questions(report["questions"]), ""]
    for task in ("describe_en", "describe_zh"):
        if task in t:
            f = t[task]["faithfulness"]
            lines.append(f"- {task}: {f['unfaithful_rate']:.1%} of answers name a glossary object no reference "
                         f"mentions ({f['unsupported_objects']}); {f.get('unfaithful_rate_distinctive', 0):.1%} "
                         f"counting only distinctive objects (not trees, roads, buildings, houses, cars); "
                         f"{t[task]['distinct_answers']} distinct answers; "
                         f"{t[task]['answers_equal_to_a_class_stock_sentence']:.1%} are exactly some class's most "
                         f"common training caption (the rest say more or other than the stock sentence).")
            fb = t[task].get("class_stock_baseline_faithfulness")
            if fb:
                lines.append(f"  The class stock sentence of the right class scores {fb['unfaithful_rate']:.1%} / "
                             f"{fb['unfaithful_rate_distinctive']:.1%} on the same two measures: a sentence "
                             f"true of the class can still name a road or building this image's five captions "
                             f"leave out.")
    lines.append("- Prompts: " + "; ".join(f"{k}: `{v}`" for k, v in report["prompts"].items())
                 + "; presence / count: the data builder's questions (finetune/data/prompt_pools). Greedy decoding.")
    lines.append("- English: pycocoevalcap with its PTB tokenizer; Chinese: character level (punctuation dropped), "
                 "no METEOR.")
    if "seconds" in report:
        n = sum(v['n'] for v in t.values()) + report.get('questions', {}).get('n', 0)
        lines.append(f"- {n} answers generated in {report['seconds']:.0f} s.")
    return "\n".join(lines) + "\n"


def run(cfg: EvalConfig) -> dict:
    records = split_records(cfg)
    items, train_refs = build_items(cfg, records)
    questions = build_question_items(records) if "questions" in cfg.tasks else []
    print(f"{len(items) + len(questions)} questions on {cfg.dataset} {cfg.split}", flush=True)
    seconds = generate_all(cfg, items, questions)
    report = score(cfg, items, train_refs)
    if questions:
        report["questions"] = score_questions(questions)
    report["seconds"] = seconds
    out, stem = result_paths(cfg)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(report, ensure_ascii=False, indent=1))
    (out / f"{stem}_answers.jsonl").write_text("".join(json.dumps(asdict(it), ensure_ascii=False) + "\n"
                                                       for it in items))
    if questions:
        (out / f"{stem}_questions.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n"
                                                             for r in answers_rows(questions)))
    plot_confusion(report, out / f"{stem}_confusion.png")
    (out / f"{stem}.md").write_text(markdown(report))
    print(markdown(report))
    print(f"results: {out / stem}.md (.json, _answers.jsonl, _confusion.png)", flush=True)
    return report


ENV_PREFIX = "REMOTEGLM_EVAL_"


def parse_args(argv: list[str] | None = None) -> EvalConfig:
    """The config from the command line, then `REMOTEGLM_EVAL_*`, then the defaults."""
    return config_from_argv(EvalConfig, argv, prog="python -m finetune.evaluate", description=__doc__,
                            env_prefix=ENV_PREFIX)


def main(argv: list[str] | None = None) -> int:
    from model_adapter.hf import ModelLoadError

    try:
        run(parse_args(argv))
    except (EvalError, ModelLoadError) as exc:
        print(f"python -m finetune.evaluate: error: {' '.join(str(exc).split())}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
