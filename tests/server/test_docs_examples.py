"""The Python client examples of README.md, run as written against a live server (only the URL and the
token budget are changed)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "README.md").read_text(encoding="utf-8")


def example(name: str) -> str:
    match = re.search(rf"```python\n# example: {name}\n(.*?)```", DOC, re.S)
    assert match, f"README.md has no '# example: {name}' block"
    return match.group(1)


@pytest.mark.parametrize("name", ["openai-client", "chat-openai"])
def test_docs_example_runs_against_the_server(name, server, monkeypatch, capsys):
    code = example(name).replace("http://127.0.0.1:8000/v1", server.url).replace("max_tokens=256", "max_tokens=4")
    monkeypatch.chdir(ROOT)
    exec(compile(code, f"README.md:{name}", "exec"), {"__name__": "docs_example"})
    assert capsys.readouterr().out  # it printed an answer
