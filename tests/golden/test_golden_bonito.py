"""Bonito native mode under `-o preset official` against `Bonito.generate_tasks` recorded from the official
code (tests/golden/bonito/README.md): the model input it builds and the tasks it keeps from each reply."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from instructkit.generators.bonito import native_input, native_task, task_code

from instructkit.registry import get

CASES = json.loads((Path(__file__).parent / "bonito" / "generate_tasks.json").read_text())


@pytest.mark.parametrize("case", CASES, ids=[f"{i}-{c['task_type'][:12]}" for i, c in enumerate(CASES)])
def test_bonito_official_preset_keeps_what_upstream_keeps(case):
    opts = get("generate", "bonito").make_options({"preset": "official"})
    assert native_input(case["task_type"], case["context"]) == case["model_input"]
    # generate_tasks strips the reply before the postprocessing (model.py), as `parse_native` does
    pair, status = native_task(task_code(case["task_type"]), case["reply"].strip(), case["context"],
                               opts.native_checks, opts.require_context)
    kept = [{"input": pair[0], "output": pair[1]}] if status == "ok" else []
    assert kept == case["kept"]


def test_golden_cases_cover_what_our_default_checks_drop():
    """The corpus holds replies upstream keeps and our default validators drop (else it could not fail)."""
    dropped = {native_task(task_code(c["task_type"]), c["reply"], c["context"])[1] for c in CASES if c["kept"]}
    assert {"answer_not_in_passage", "answer_not_yes_no", "answer_not_an_option", "no_context_placeholder",
            "empty_input_or_output"} <= dropped
