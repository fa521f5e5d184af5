"""Conversation-JSONL builder: caption files + Chinese translations -> train / val / test instruction data.

    python -m finetune.data build --data-root ../shared/data --out runs/data/
    python -m finetune.data build --datasets ucm --out runs/data-ucm/       # one dataset only
    python -m finetune.data export-original --src runs/data/train.jsonl --dst train-original.json

Inputs: `<data-root>/<dataset>/dataset.json` (Karpathy format; `data/en/` in this repo is the fallback for UCM and
Sydney) and the sentence translations `{"id","en","zh"}` (`<data-root>/zh/`, else the copies shipped in `data/zh/`).
Optionally the original RemoteGLM paragraphs (`{"img","prompt","label"}`, `--seed-paragraphs`), which this module
reads and writes (`read_original`, `write_original`).
Outputs in `--out`: `train.jsonl`, `val.jsonl`, `test.jsonl` (format in the team conventions) and `card.md` /
`card.json` (samples per task x split x language). Official splits are kept (UCM / Sydney `split`, RSICD
`split_karpathy_partial`) and the build fails if a val / test image appears in training.

Python API for the trainer and the evaluator: `load_captions` (-> `ImageRecord`s), `load_translations`,
`build_samples`, `build`, `read_jsonl`, `write_jsonl`, `image_path`. Task logic lives in finetune/data/tasks.py, scene
labels in vocabulary/scenes.py.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import finetune.data.intents as intents
from settings import add_flags, flag_values
from vocabulary.datasets import DEFAULT_DATA_ROOT, data_root
from vocabulary.scenes import scene_of
from finetune.data.tasks import ALL_TASKS, ImageRecord, Sample, load_pools, samples_for

REPO = Path(__file__).resolve().parents[2]
SHIPPED_ZH = REPO / "data" / "zh"
SHIPPED_EN = REPO / "data" / "en"
DATASETS = ("ucm", "sydney", "rsicd")
# Split field per dataset: RSICD's `split` is a retrieval split, `split_karpathy_partial` the one papers use.
SPLIT_FIELD = {"ucm": "split", "sydney": "split", "rsicd": "split_karpathy_partial"}
TRANSLATION_FILES = {"ucm": "captions_zh.jsonl", "sydney": "captions_zh.jsonl", "rsicd": "rsicd_captions_zh.jsonl"}
# Folder names of the original project's `img` paths ("./UCM/1.tif").
ORIGINAL_FOLDERS = {"ucm": "UCM", "sydney": "Sydney", "rsicd": "RSICD"}
SPLITS = ("train", "val", "test")


@dataclass
class BuildConfig:
    """Settings of one build (CLI flags of the same names)."""

    data_root: Path = field(default_factory=data_root)
    """Folder with ucm/, sydney/, rsicd/, zh/ (flag --data-root, env REMOTEGLM_DATA_ROOT)."""
    out: Path = REPO / "runs" / "data"
    """Output folder for train/val/test.jsonl and the dataset card (flag --out)."""
    datasets: tuple[str, ...] = DATASETS
    """Datasets to include (flag --datasets ucm,sydney,rsicd); missing caption files are skipped with a note."""
    tasks: tuple[str, ...] = ALL_TASKS
    """Tasks to generate (flag --tasks)."""
    seed: int = 0
    """Seed of every random choice (phrasing, negatives, multi-turn chains); same seed, same files."""
    describe_per_image: int = 5
    """Training describe samples per image and language: that many distinct references (val/test: always 1)."""
    presence_per_image: int = 1
    """Presence yes questions per image and language, and as many no questions."""
    seed_paragraphs: bool = False
    """Also add the original project's Chinese paragraphs as extra describe_zh training samples (flag)."""
    zh_dir: Path | None = None
    """Folder of the translation JSONL files; default <data-root>/zh, else the shipped data/zh."""
    intents_v2: bool = True
    """Add the v2 question intents (finetune/data/intents.py) to train / val: water, vegetation, urban or rural,
    colours, layout, refusals, upload requests, language requests, multi-turn... (flag --no-intents-v2)."""
    require_images: bool = True
    """Leave out images whose file is missing under the data root (Sydney has 9 of 613), noted in the card;
    flag --keep-missing-images keeps them (caption-only use, tests on fixtures)."""


@dataclass
class BuildResult:
    splits: dict[str, list[Sample]]
    card: dict = field(default_factory=dict)
    seconds: float = 0.0


# --- reading ------------------------------------------------------------------------------------------------------
def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_jsonl(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def image_path(data_root: Path | str, image: str) -> Path:
    """Absolute path of a sample's `image` (relative to the data root unless already absolute)."""
    p = Path(image)
    return p if p.is_absolute() else Path(data_root) / p


def caption_file(data_root: Path, dataset: str) -> Path | None:
    """`<data_root>/<dataset>/dataset.json`, else the copy shipped in data/en/, else None."""
    for path in (Path(data_root) / dataset / "dataset.json", SHIPPED_EN / dataset / "dataset.json"):
        if path.is_file():
            return path
    return None


def load_translations(data_root: Path, dataset: str, zh_dir: Path | None = None) -> dict[str, str]:
    """English sentence (stripped) -> Chinese, from the dataset's translation file."""
    name = TRANSLATION_FILES[dataset]
    dirs = [zh_dir] if zh_dir else [Path(data_root) / "zh", SHIPPED_ZH]
    for d in dirs:
        if (Path(d) / name).is_file():
            return {r["en"].strip(): r["zh"] for r in read_jsonl(Path(d) / name)}
    return {}


def load_captions(data_root: Path | str = DEFAULT_DATA_ROOT, dataset: str = "ucm",
                  zh_dir: Path | None = None) -> list[ImageRecord]:
    """Every image of a dataset with its split, 5 English and 5 Chinese references and its scene label.

    A sentence without a translation keeps its English reference; its Chinese one is left out (the shipped files
    cover every sentence, so this only happens with a new dataset).
    """
    path = caption_file(Path(data_root), dataset)
    if path is None:
        raise FileNotFoundError(f"no caption file for {dataset!r} under {data_root} (flag --data-root)")
    zh = load_translations(Path(data_root), dataset, zh_dir)
    records = []
    for im in json.loads(path.read_text(encoding="utf-8"))["images"]:
        refs_en = [s["raw"].strip() for s in im["sentences"]]
        stem = im["filename"].rsplit(".", 1)[0]
        records.append(ImageRecord(
            dataset=dataset, filename=im["filename"], image=f"{dataset}/images/{stem}.jpg",
            split=im.get(SPLIT_FIELD[dataset]) or im["split"], refs_en=refs_en,
            refs_zh=[zh[s] for s in refs_en if s in zh], label=scene_of(dataset, im["filename"]),
            imgid=im.get("imgid", 0)))
    return records


# --- the original RemoteGLM format {"img", "prompt", "label"} -----------------------------------------------------
def read_original(path: Path) -> list[dict]:
    """Rows of an original-format file (a JSON list, or JSONL)."""
    text = Path(path).read_text(encoding="utf-8")
    return json.loads(text) if text.lstrip().startswith("[") else [json.loads(x) for x in text.splitlines() if x]


def write_original(rows: list[dict], path: Path) -> None:
    """Write rows as the original project did: a JSON list, 4-space indent, UTF-8 text."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(rows, ensure_ascii=False, indent=4), encoding="utf-8")


def original_to_samples(rows: list[dict], records: list[ImageRecord]) -> list[Sample]:
    """Original rows -> describe_zh samples (meta.source = "remoteglm-seed"), matched to records by dataset/file."""
    index = {(ORIGINAL_FOLDERS[r.dataset], r.filename): r for r in records}
    out = []
    for row in rows:
        folder, filename = row["img"].split("/")[-2:]
        rec = index.get((folder, filename))
        if rec is None:
            continue
        out.append({"id": f"{rec.dataset}-{rec.stem}-describe_zh-seed", "dataset": rec.dataset, "split": rec.split,
                    "image": rec.image, "task": "describe_zh", "lang": "zh",
                    **({"label": rec.label} if rec.label else {}),
                    "messages": [{"role": "user", "content": row["prompt"]},
                                 {"role": "assistant", "content": row["label"]}],
                    "meta": {"source": "remoteglm-seed", "img": row["img"]}})
    return out


def samples_to_original(samples: list[Sample]) -> list[dict]:
    """Single-turn samples -> original rows (`img` = "./<Folder>/<file>"); multi-turn samples and samples without an
    image (the original format has none) are skipped."""
    rows = []
    for s in samples:
        if len(s["messages"]) != 2 or not s.get("image"):
            continue
        img = (s.get("meta") or {}).get("img")
        if img is None:
            stem = Path(s["image"]).stem
            ext = ".jpg" if s["dataset"] == "rsicd" else ".tif"
            img = f"./{ORIGINAL_FOLDERS[s['dataset']]}/{stem}{ext}"
        rows.append({"img": img, "prompt": s["messages"][0]["content"], "label": s["messages"][1]["content"]})
    return rows


# --- building -----------------------------------------------------------------------------------------------------
def build_samples(records: list[ImageRecord], cfg: BuildConfig) -> dict[str, list[Sample]]:
    """Samples per split for these records."""
    pools = load_pools()
    v2_pools = intents.load_pools() if cfg.intents_v2 else None
    splits: dict[str, list[Sample]] = {s: [] for s in SPLITS}
    for rec in records:
        splits[rec.split].extend(samples_for(rec, cfg.seed, pools, cfg.tasks, cfg.describe_per_image,
                                             cfg.presence_per_image))
        if v2_pools is not None and rec.split != "test":  # test images are asked held-out phrasings instead
            splits[rec.split].extend(intents.samples_v2(rec, cfg.seed, v2_pools))
    return splits


def check_no_leak(splits: dict[str, list[Sample]]) -> None:
    """Raise if an image of val or test is also in train (compared by dataset and image path)."""
    train = {(s["dataset"], s["image"]) for s in splits.get("train", []) if s["image"]}
    for name in ("val", "test"):
        leaked = train & {(s["dataset"], s["image"]) for s in splits.get(name, []) if s["image"]}
        if leaked:
            raise ValueError(f"{len(leaked)} {name} images also in train, e.g. {sorted(leaked)[:3]}")


def dataset_card(splits: dict[str, list[Sample]]) -> dict:
    """`{"counts": {task: {split: {lang: n}}}, "images": {dataset: {split: n}}, "totals": {split: n}}`."""
    counts: dict = collections.defaultdict(lambda: collections.defaultdict(collections.Counter))
    images: dict = collections.defaultdict(lambda: collections.defaultdict(set))
    for split, samples in splits.items():
        for s in samples:
            counts[s["task"]][split][s["lang"]] += 1
            if s["image"]:  # no-image conversations (v2 upload requests) have none
                images[s["dataset"]][split].add(s["image"])
    return {"counts": {t: {sp: dict(c) for sp, c in v.items()} for t, v in sorted(counts.items())},
            "images": {d: {sp: len(v) for sp, v in sorted(x.items())} for d, x in sorted(images.items())},
            "totals": {sp: len(v) for sp, v in splits.items()}}


def card_markdown(card: dict) -> str:
    lines = ["# RemoteGLM instruction data: samples per task, split and language", "",
             "| task | " + " | ".join(f"{sp} {lang}" for sp in SPLITS for lang in ("zh", "en")) + " |",
             "|---|" + "---|" * (2 * len(SPLITS))]
    for task, per_split in card["counts"].items():
        cells = [str(per_split.get(sp, {}).get(lang, 0)) for sp in SPLITS for lang in ("zh", "en")]
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    lines += ["", "Images per dataset and split: " + json.dumps(card["images"]),
              "Samples per split: " + json.dumps(card["totals"])]
    lines += [f"Note: {n}" for n in card.get("notes", [])] + [""]
    return "\n".join(lines)


def build(cfg: BuildConfig) -> BuildResult:
    """Load, generate, check for leaks, write train/val/test.jsonl and the card; return everything."""
    t0 = time.perf_counter()
    records: list[ImageRecord] = []
    notes = []
    for ds in cfg.datasets:
        if caption_file(cfg.data_root, ds) is None:
            notes.append(f"skipped {ds}: no caption file")
            continue
        recs = load_captions(cfg.data_root, ds, cfg.zh_dir)
        if cfg.require_images:
            kept = [r for r in recs if image_path(cfg.data_root, r.image).is_file()]
            if len(kept) < len(recs):
                notes.append(f"{ds}: left out {len(recs) - len(kept)} of {len(recs)} images (file missing)")
            recs = kept
        records += recs
    splits = build_samples(records, cfg)
    if cfg.seed_paragraphs:
        seed_dir = Path(cfg.data_root) / "zh" / "seed-remoteglm"
        for path in sorted(seed_dir.glob("*-zh-prompt.json")):
            extra = original_to_samples(read_original(path), records)
            splits["train"] += [s for s in extra if s["split"] == "train"]
    check_no_leak(splits)
    for split, samples in splits.items():
        write_jsonl(samples, Path(cfg.out) / f"{split}.jsonl")
    card = dataset_card(splits)
    card["notes"] = notes
    card["config"] = {"datasets": list(cfg.datasets), "seed": cfg.seed, "describe_per_image": cfg.describe_per_image,
                      "presence_per_image": cfg.presence_per_image, "seed_paragraphs": cfg.seed_paragraphs,
                      "require_images": cfg.require_images, "intents_v2": cfg.intents_v2}
    if cfg.intents_v2:
        card["pools_v2_sha256"] = intents.pools_digest()
    Path(cfg.out, "card.json").write_text(json.dumps(card, ensure_ascii=False, indent=1), encoding="utf-8")
    Path(cfg.out, "card.md").write_text(card_markdown(card), encoding="utf-8")
    return BuildResult(splits=splits, card=card, seconds=time.perf_counter() - t0)


# --- CLI ----------------------------------------------------------------------------------------------------------
ENV_PREFIX = "REMOTEGLM_BUILD_"
# Every BuildConfig field is a flag of the same name but this one: its flag says the opposite.
INVERTED = "require_images"


def _cmd_build(args: argparse.Namespace) -> int:
    values = flag_values(args, BuildConfig, env_prefix=ENV_PREFIX)
    values.pop(INVERTED, None)
    cfg = BuildConfig(**values, require_images=not args.keep_missing_images)
    result = build(cfg)
    print(card_markdown(result.card))
    print(f"wrote {sum(result.card['totals'].values())} samples to {cfg.out} in {result.seconds:.1f}s")
    return 0


def _cmd_export_original(args: argparse.Namespace) -> int:
    rows = samples_to_original(read_jsonl(Path(args.src)))
    write_original(rows, Path(args.dst))
    print(f"wrote {len(rows)} rows to {args.dst}")
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m finetune.data", description="Build RemoteGLM conversation data.")
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="caption files + translations -> train/val/test.jsonl + card")
    add_flags(b, BuildConfig, names=[f.name for f in fields(BuildConfig) if f.name != INVERTED], env_prefix=ENV_PREFIX)
    b.add_argument("--keep-missing-images", action="store_true", help="keep samples whose image file is missing")
    e = sub.add_parser("export-original", help="conversation JSONL -> original {img,prompt,label} JSON")
    e.add_argument("--src", required=True)
    e.add_argument("--dst", required=True)
    return p


COMMANDS = {"build": _cmd_build, "export-original": _cmd_export_original}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return COMMANDS[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
