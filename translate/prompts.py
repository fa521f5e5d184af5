"""Prompt files (translate/prompts/<mode>.txt) and the numbered-lines protocol of a batched request.

A prompt file starts with `version: <id>` (part of the cache key: change it when the wording changes), then a
`--- system` and a `--- user` section with the placeholders {glossary}, {count} and {lines}.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from vocabulary.glossary import GLOSSARY

PROMPT_DIR = Path(__file__).resolve().parent / "prompts"
_NUMBERED = re.compile(r"^\s*(\d+)\s*[.、:：)）]\s*(.*)$")


@dataclass(frozen=True)
class Prompt:
    version: str
    system: str
    user: str

    def messages(self, lines: list[str], glossary: dict[str, str] = GLOSSARY, note: str = "") -> list[dict]:
        """Chat messages asking for `lines` (numbered 1..n); `note` is appended for a retry (what was wrong)."""
        table = "\n".join(f"- {en} -> {zh}" for en, zh in glossary.items())
        fields = {"glossary": table, "count": len(lines), "lines": number_lines(lines)}
        user = self.user.format(**fields) + (f"\n\n注意：{note}" if note else "")
        return [{"role": "system", "content": self.system.format(**fields)}, {"role": "user", "content": user}]


def load_prompt(mode: str, prompt_dir: Path = PROMPT_DIR) -> Prompt:
    text = (Path(prompt_dir) / f"{mode}.txt").read_text(encoding="utf-8")
    head, _, rest = text.partition("\n")
    if not head.startswith("version:"):
        raise ValueError(f"{mode}.txt must start with 'version: <id>'")
    system, _, user = rest.partition("--- user")
    return Prompt(version=head.split(":", 1)[1].strip(), system=system.replace("--- system", "", 1).strip(),
                  user=user.strip())


def number_lines(lines: list[str]) -> str:
    # Line breaks inside a unit would break the numbering; other spacing is left as the source has it.
    return "\n".join(f"{i}. {' '.join(line.splitlines()).strip()}" for i, line in enumerate(lines, 1))


def parse_numbered(answer: str, expected: int) -> list[str] | None:
    """The n answers of a numbered reply, or None when the numbering is not exactly 1..expected."""
    items: dict[int, str] = {}
    for line in answer.strip().splitlines():
        m = _NUMBERED.match(line)
        if m:
            items[int(m.group(1))] = m.group(2).strip()
        elif line.strip() and items:  # a wrapped continuation line
            last = max(items)
            items[last] += line.strip()
    plain = [ln.strip() for ln in answer.strip().splitlines() if ln.strip()]
    if not items and expected == 1 and len(plain) == 1:
        return plain
    if sorted(items) != list(range(1, expected + 1)):
        return None
    return [items[i] for i in range(1, expected + 1)]
