"""The architecture's shape, read from the source (ast): what a newcomer can count on."""

from __future__ import annotations

import ast
from pathlib import Path

MODELS = Path(__file__).resolve().parents[1] / "instructkit" / "models"
MAX_CLASS_LINES = 300


def class_sizes(root: Path) -> dict[str, int]:
    """Lines of every class (its `class` line to its last line, decorators left out) under `root`."""
    sizes = {}
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                sizes[f"{path.relative_to(root.parent)}:{node.name}"] = node.end_lineno - node.lineno + 1
    return sizes


def test_class_sizes_count_the_whole_body() -> None:
    sizes = class_sizes(MODELS)
    assert sizes["models/llm.py:LLM"] > 100  # the facade is found and measured, nested code included
    assert all(size >= 2 for size in sizes.values())


def test_no_model_class_over_300_lines() -> None:
    big = {name: size for name, size in class_sizes(MODELS).items() if size > MAX_CLASS_LINES}
    assert not big, f"classes in instructkit/models/ over {MAX_CLASS_LINES} lines: {big}"
