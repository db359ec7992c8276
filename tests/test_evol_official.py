"""Evol-Instruct's operation draw (in-breadth 0.2, as the official driver's 1 of 5 prompts) and its official
preset (nlpxucan/WizardLM Evol_Instruct: four in-depth prompts plus in-breadth, system prompt "You are a
helpful assistant." on every call), on the real local model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from instructkit.generators import evol_instruct as ev
from instructkit.generators.common import call_seed, seeded

from instructkit.models import LLM
from instructkit.registry import get
from instructkit.run.runner import RunContext


def test_default_and_official_weights() -> None:
    weights = ev.operation_weights(ev.EvolInstructOptions())
    assert weights["breadth"] == pytest.approx(0.2, abs=1e-12)
    assert all(weights[op] == pytest.approx(0.8 / 5, abs=1e-12) for op in ev.DEPTH_OPS)
    official = get("generate", "evol_instruct").make_options({"preset": "official"})
    assert official.system == "You are a helpful assistant."
    assert ev.operation_weights(official) == {op: pytest.approx(0.2, abs=1e-12) for op in official.operations}
    assert "complicate_input" not in official.operations
    custom = get("generate", "evol_instruct").make_options(
        {"operations": "deepen,breadth", "operation_weights": '{"deepen": 3, "breadth": 1}'}
    )
    assert ev.operation_weights(custom) == {"deepen": 0.75, "breadth": 0.25}
    with pytest.raises(ValueError, match="missing"):
        ev.operation_weights(ev.EvolInstructOptions(operations=["deepen", "breadth"], operation_weights={"deepen": 1}))
    assert ev.operation_weights(ev.EvolInstructOptions(operations=["deepen", "reasoning"])) == {
        "deepen": 0.5, "reasoning": 0.5}  # fmt: skip


def test_breadth_is_drawn_a_fifth_of_the_time() -> None:
    ctx = RunContext(llm=None, random_state=11)
    weights = ev.operation_weights(ev.EvolInstructOptions())
    n = 4000
    draws = [ev.draw_operation(seeded(ctx, "evol-op", 1, str(i)), weights) for i in range(n)]
    share = draws.count("breadth") / n
    # Binomial(n, 0.2): 4 standard deviations is about 0.025, below the 1/6 of a uniform draw over six.
    assert abs(share - 0.2) < 4 * math.sqrt(0.2 * 0.8 / n)
    assert set(draws) == set(ev.OPERATIONS)


def test_official_preset_sends_the_system_prompt(tmp_path: Path, tmp_cache) -> None:
    llm = LLM("local", cache=tmp_cache)
    info = get("generate", "evol_instruct")
    opts = info.make_options({"preset": "official", "rounds": "1", "equality_check": "false",
                              "max_tokens": "8", "answer_max_tokens": "8"})  # fmt: skip
    ctx = RunContext(llm=llm, options=opts, method="evol_instruct", work_dir=tmp_path, random_state=5, progress=False)
    rec = {"id": "r0", "instruction": "Name three fruits.", "input": ""}
    out = ev.evol_instruct([rec], ctx)
    evolved = [r for r in out if r["round"] == 1]
    eliminated = [json.loads(line) for line in (tmp_path / "evol_instruct.eliminated.jsonl").read_text().splitlines()]
    operation = (evolved[0] if evolved else eliminated[0])["operation"]
    calls = llm.stats.calls
    again = llm.chat(ev.evolution_prompt(ev.text_of(rec, opts.input_join), operation), system="You are a helpful assistant.",
                     temperature=1.0, top_p=0.95, max_tokens=8, seed=call_seed(ctx, "evolve", 1, "r0"))  # fmt: skip
    assert again.cached and llm.stats.calls == calls  # the evolution call carried the official system prompt
    if evolved:
        answer = llm.chat(evolved[0]["instruction"], system="You are a helpful assistant.", temperature=1.0,
                          top_p=0.95, max_tokens=8, seed=call_seed(ctx, "answer", 1, "r0"))  # fmt: skip
        assert answer.cached and answer.text == evolved[0]["output"]  # the official driver keeps it verbatim
