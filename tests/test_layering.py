"""The core never imports a method package: what the CLI, report and card need from one reaches them
through the registry's extensions. Read from the source, so a new import anywhere in the core fails here."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

from instructkit import registry

ROOT = Path(__file__).resolve().parent.parent
FEATURES = ("instructkit.selection", "instructkit.judge", "instructkit.scorers", "instructkit.generators")
INSTALLED = ("instructkit", "judge", "scorers", "generators", "selection", "prompts")  # pyproject's package-dir


def imported_modules(path: Path, package: str) -> set[str]:
    """Every module `path` imports (relative imports resolved against `package`), at any depth."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            out.add(module)
            out.update(f"{module}.{alias.name}" for alias in node.names)
    return out


@pytest.mark.parametrize("path", sorted((ROOT / "instructkit").rglob("*.py")), ids=lambda p: p.name)
def test_the_core_imports_no_method_package(path: Path) -> None:
    package = ".".join(path.relative_to(ROOT).parent.parts)
    bad = sorted(m for m in imported_modules(path, package) if m.startswith(FEATURES))
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_selection_common_does_not_import_embed() -> None:
    # embed builds on common (row texts); common importing embed back made a cycle.
    mods = imported_modules(ROOT / "selection" / "common.py", "instructkit.selection")
    assert not any(m.startswith("instructkit.selection.embed") for m in mods)


def test_selection_lends_the_core_its_report_and_texts() -> None:
    from instructkit.selection import embed, report

    assert registry.extension_of("select.report") is report.selection_report
    assert registry.extension_of("select.report_table") is report.format_table
    assert registry.extension_of("embed.texts") is embed.texts_of
    with pytest.raises(KeyError, match="no package provides 'nothing.here'"):
        registry.extension_of("nothing.here")


def test_the_package_ships_no_test_code() -> None:
    # The fake servers are test code (tests/fakes.py, tests/fake_batch.py); benches add tests/ to sys.path.
    assert importlib.util.find_spec("instructkit.testing") is None
    assert importlib.util.find_spec("instructkit.testing_batch") is None
    shipped = [p for folder in INSTALLED for p in (ROOT / folder).rglob("*.py")]
    assert len(shipped) > 50  # the folders are where pyproject says
    test_code = [str(p.relative_to(ROOT)) for p in shipped if p.stem.startswith(("test", "fake"))]
    assert not test_code, f"test code in the installed package: {test_code}"
