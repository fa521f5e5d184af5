"""Karpathy-format caption files -> translation units, and the output writers of each mode.

A unit is what one numbered line of a request carries and what the cache is keyed by: one distinct English
sentence (`sentences` mode) or the 5 sentences of one image joined by " | " (`merge`, `rewrite`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

# Folder names of the original RemoteGLM `img` paths ("./UCM/1.tif"), by Karpathy `dataset` field.
ORIGINAL_FOLDERS = {"ucm": "UCM", "sydney": "Sydney", "rsicd": "RSICD"}
ORIGINAL_PROMPT = "这张遥感图像展现了什么场景？"


@dataclass
class Unit:
    source: str  # text sent and cache key
    sentences: list[str] = field(default_factory=list)  # merge / rewrite: the image's sentences
    image: dict = field(default_factory=dict)  # merge / rewrite: dataset, filename, imgid


def read_karpathy(path: Path) -> tuple[str, list[dict]]:
    """(dataset name, images) of a caption file; the name falls back to the parent folder's name."""
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    return str(doc.get("dataset") or Path(path).parent.name), doc["images"]


def sentence_units(paths: list[Path]) -> list[Unit]:
    """Distinct stripped sentences of all files, in order of first appearance (the shipped files' order)."""
    seen: dict[str, Unit] = {}
    for path in paths:
        for im in read_karpathy(path)[1]:
            for s in im["sentences"]:
                text = s["raw"].strip()
                if text and text not in seen:
                    seen[text] = Unit(source=text)
    return list(seen.values())


def image_units(paths: list[Path]) -> list[Unit]:
    """One unit per image (its sentences joined by " | "), in file order."""
    units = []
    for path in paths:
        name, images = read_karpathy(path)
        for im in images:
            sents = [s["raw"].strip() for s in im["sentences"]]
            units.append(Unit(source=" | ".join(sents), sentences=sents,
                              image={"dataset": name, "filename": im["filename"], "imgid": im.get("imgid")}))
    return units


def write_sentences(pairs: list[tuple[int, Unit, str]], out: Path, meta: dict) -> None:
    """JSONL `{"id","en","zh"}`, exactly the shipped structure."""
    with open(out, "w", encoding="utf-8") as f:
        for uid, unit, zh in pairs:
            f.write(json.dumps({"id": uid, "en": unit.source, "zh": zh}, ensure_ascii=False) + "\n")


def write_merge(pairs: list[tuple[int, Unit, str]], out: Path, meta: dict) -> None:
    """The original project's format: a JSON list of {"img", "prompt", "label"} paragraphs."""
    rows = [{"img": f"./{ORIGINAL_FOLDERS.get(u.image['dataset'].lower(), u.image['dataset'])}/{u.image['filename']}",
             "prompt": ORIGINAL_PROMPT, "label": zh} for _, u, zh in pairs]
    Path(out).write_text(json.dumps(rows, ensure_ascii=False, indent=4), encoding="utf-8")


def write_rewrite(pairs: list[tuple[int, Unit, str]], out: Path, meta: dict) -> None:
    """JSONL per image, flagged `"rewritten": true` so nobody mistakes it for a translation."""
    with open(out, "w", encoding="utf-8") as f:
        for _, u, zh in pairs:
            row = {"dataset": u.image["dataset"], "filename": u.image["filename"], "imgid": u.image["imgid"],
                   "en": u.sentences, "zh": zh, "rewritten": True, **meta}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def read_reuse(paths: list[Path]) -> dict[str, tuple[int, str]]:
    """English -> (id, Chinese) from existing sentence files (e.g. data/zh/*.jsonl) to extend instead of redo."""
    known: dict[str, tuple[int, str]] = {}
    for path in paths:
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                known[row["en"].strip()] = (int(row["id"]), row["zh"])
    return known
