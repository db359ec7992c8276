"""Tree-Instruct under `-o preset official` against the official `worker` of generate_tree_instructions.py
(tests/golden/tree_instruct/README.md): the old instruction as its prompt embeds it, and the reply as it
passes it on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from instructkit.generators.tree_instruct import official_rewrite_failure, prepare_instruction

from instructkit.registry import get

CASES = json.loads((Path(__file__).parent / "tree_instruct" / "worker.json").read_text())


@pytest.mark.parametrize("case", CASES, ids=[str(i) for i in range(len(CASES))])
def test_official_preset_prepares_and_keeps_as_the_worker(case):
    rules = get("generate", "tree_instruct").make_options({"preset": "official"}).rules
    if "error" in case:  # upstream raises on a lone quote; we send it empty and count the failed rewrite
        assert prepare_instruction(case["instruction"], rules) == ""
        return
    assert prepare_instruction(case["instruction"], rules) == case["embedded"]
    # the worker hands the reply on unchanged; the script's loop then writes all but "NONE" and the API's
    # error text (read from its main loop, which needs the API to run)
    written = case["returned"] not in ("NONE", "") and "undefinedsome thing error" not in case["returned"]
    assert (official_rewrite_failure(case["reply"]) is None) == written


def test_the_default_strips_every_quote_where_upstream_cuts_one():
    doubled = next(c for c in CASES if c["instruction"] == '""Double quoted""')
    assert doubled["embedded"] == '"Double quoted"' != prepare_instruction(doubled["instruction"])
