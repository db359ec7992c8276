"""Evol-Instruct under `-o preset official` against the official driver `Evol_Instruct/main.py`, recorded with
canned replies (tests/golden/evol_instruct/README.md): the text that evolves, two calls per row, the answer
asked on the evolution as returned, and every pair written, adversarial ones included."""

from __future__ import annotations

import json
from pathlib import Path

from instructkit.generators import evol_instruct as ev

from instructkit.models import LLM
from instructkit.registry import get
from instructkit.run.runner import RunContext

GOLDEN = json.loads((Path(__file__).parent / "evol_instruct" / "main.json").read_text())


def official():
    return get("generate", "evol_instruct").make_options({"preset": "official"})


def test_official_preset_evolves_the_text_the_driver_builds():
    opts = official()
    assert [ev.text_of(row, opts.input_join) for row in GOLDEN["rows"]] == GOLDEN["evolved_text"]


def test_official_preset_keeps_every_pair_the_driver_writes():
    opts = official()
    # one evolution and one answer per row: no equality call, one round, the inputs not written
    assert GOLDEN["calls_per_row"] == 2 and not (opts.equality_check and opts.eliminate)
    assert opts.rounds == 1 and not opts.include_original
    assert GOLDEN["answer_asked"] == [evolution for evolution, _ in GOLDEN["replies"]]
    kept = [{"instruction": ev._reply(e, opts.strip_replies), "output": ev._reply(a, opts.strip_replies)}
            for e, a in GOLDEN["replies"]
            if ev.elimination_reason(e, a, None, opts.sorry_max_words, opts.eliminate) is None]
    assert kept == GOLDEN["written"]
    # the paper's eliminator (our default) drops some of them: the corpus can tell the two apart
    assert sum(ev.elimination_reason(e, a, None) is not None for e, a in GOLDEN["replies"]) >= 3


def test_official_preset_end_to_end_writes_one_evolved_pair_per_row(tmp_path, tmp_cache):
    llm = LLM("local", cache=tmp_cache)
    opts = get("generate", "evol_instruct").make_options(
        {"preset": "official", "max_tokens": "8", "answer_max_tokens": "8"})
    ctx = RunContext(llm=llm, options=opts, method="evol_instruct", work_dir=tmp_path, random_state=3, progress=False)
    rows = [{"id": f"r{i}", **row} for i, row in enumerate(GOLDEN["rows"][:3])]
    out = ev.evol_instruct(rows, ctx)
    assert [(r["parent_id"], r["round"]) for r in out] == [(r["id"], 1) for r in rows]
    assert llm.stats.calls == 2 * len(rows)
