"""The runtime layers point one way: nothing lower imports anything higher (issue 12).

Lowest first: settings.py and vocabulary/ < imagery/ < storage/ < model_adapter/ < bot/ < server/, ui/ < app.py, with
finetune/, translate/, bench/ and the test helpers beside the top. Every import of every .py file in vocabulary,
imagery, storage, model_adapter, bot, server and ui is read with `ast` (imports inside functions too, where lazy
imports hide) and checked against that order; server/ and ui/ sit side by side and import nothing of each other, and
ui/ calls bot/ only (the views, errors and accounts it shows come through bot/), never the layers under it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECKED = ["vocabulary", "imagery", "storage", "model_adapter", "bot", "server", "ui"]
RANK = {"settings": 0, "vocabulary": 0, "imagery": 1, "storage": 2, "model_adapter": 3, "bot": 4, "server": 5,
        "ui": 5, "app": 6, "finetune": 6, "translate": 6, "bench": 6, "testing": 6, "tests": 6}
# Packages that may reach only some of the layers below them.
ONLY = {"ui": {"bot", "settings", "vocabulary"}}
# Allowed exceptions, each with its reason. Deprecated alias modules re-export a moved module from its new home for
# one release and are not checked (model_adapter/images.py -> imagery.load imports only downwards anyway).
DEPRECATED_ALIASES = {"model_adapter/images.py"}



def imports(source: str, package: str = "") -> list[tuple[int, str]]:
    """(line, module) of every import in `source`, at any depth; relative ones resolved against `package`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            found.append((node.lineno, ".".join(base + ([node.module] if node.module else []))))
    return sorted(found)


def violations(package: str) -> list[str]:
    problems = []
    for path in sorted((ROOT / package).rglob("*.py")):
        name = path.relative_to(ROOT).as_posix()
        if name in DEPRECATED_ALIASES:
            continue
        package_name = ".".join(path.relative_to(ROOT).parts[:-1])
        for line, module in imports(path.read_text(encoding="utf-8"), package_name):
            top = module.split(".")[0]
            if top == package or top not in RANK:  # itself, the standard library, third-party packages
                continue
            if RANK[top] > RANK[package]:
                problems.append(f"{name}:{line} imports {module} ({package}/ sits below {top})")
            elif RANK[top] == RANK[package]:
                problems.append(f"{name}:{line} imports {module} ({package}/ and {top} sit side by side)")
            elif package in ONLY and top not in ONLY[package]:
                allowed = ", ".join(sorted(ONLY[package]))
                problems.append(f"{name}:{line} imports {module} ({package}/ calls only {allowed})")
    return problems


@pytest.mark.parametrize("package", CHECKED)
def test_nothing_lower_imports_anything_higher(package):
    problems = violations(package)
    assert not problems, "layer breaks:\n" + "\n".join(problems)


def test_the_check_sees_lazy_and_relative_imports():
    source = "import os\n\ndef f():\n    from storage.images import ImageStore\n    from . import scene\n"
    assert imports(source, "bot") == [(1, "os"), (4, "storage.images"), (5, "bot")]
    assert imports("from ..imagery import load\n", "bot.sub") == [(1, "bot.imagery")]


def test_nothing_outside_tests_imports_the_tests():
    """Helpers that the product or the benchmarks need live in testing/ (tiny models, synthetic images)."""
    problems = []
    for path in sorted(ROOT.glob("*.py")) + sorted(p for d in RANK if (ROOT / d).is_dir() and d != "tests"
                                                    for p in (ROOT / d).rglob("*.py")):
        for line, module in imports(path.read_text(encoding="utf-8")):
            if module.split(".")[0] == "tests":
                problems.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert not problems, "move what these need to testing/:\n" + "\n".join(problems)
