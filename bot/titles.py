"""Conversation titles a history can be scanned by: the recognised scene plus the question.

    conversation_title("这张遥感图像展现了什么场景？", "这是一个机场，停着几架飞机。")
    # '机场 · 这张遥感图像展现了什么场景？'

The scene is the first scene-class name (the datasets' 50 classes, Chinese and English) the first answer names;
longer names win ("中等密度住宅区" before "住宅区"). Without one the title is the question alone.
"""

from __future__ import annotations

import re
from functools import cache

TITLE_CHARS = 40
QUESTION_CHARS = 30


@cache
def _scene_names() -> list[str]:
    # the class vocabulary: vocabulary/scenes.py (pure data, no I/O, below bot/ and finetune/)
    from vocabulary.scenes import SCENES

    names = {name for table in SCENES.values() for s in table.values() for name in (s.zh, s.en)}
    return sorted(names, key=len, reverse=True)


def recognised_scene(answer: str) -> str | None:
    """The scene the answer names first, or None."""
    lowered = answer.lower()
    best: tuple[int, str] | None = None
    for name in _scene_names():
        match = re.search(re.escape(name.lower()) if not name.isascii() else rf"\b{re.escape(name.lower())}s?\b",
                          lowered)
        if match and (best is None or match.start() < best[0]):
            best = (match.start(), name)
    return best[1] if best else None


def conversation_title(question: str, answer: str) -> str:
    question = " ".join(question.split())[:QUESTION_CHARS] or "图像对话"
    scene = recognised_scene(answer or "")
    return f"{scene} · {question}"[:TITLE_CHARS] if scene else question
