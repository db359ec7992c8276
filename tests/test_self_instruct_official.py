"""Self-Instruct's official decoding on the real local model: presence penalty 2 on instruction requests and
1.5 on instance requests (yizhongw/self-instruct bootstrap_instructions.py / generate_instances.py), and the
`official` preset's raw completions (the official GPT-3 calls had no chat template)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from instructkit.generators import self_instruct as si

from instructkit.models import LLM
from instructkit.registry import get
from instructkit.run.runner import RunContext
from instructkit.templates import render

TASKS = [{"instruction": "Write a short greeting for a birthday card.", "request_idx": 0}]


def test_official_decoding_values() -> None:
    opts = si.SelfInstructOptions()
    stops = ["\n\n", "\n16", "16.", "16 ."]
    assert si.instruction_params(opts, stops) == {"temperature": 0.7, "top_p": 0.5, "max_tokens": 1024, "stop": stops,
                                                  "presence_penalty": 2.0, "frequency_penalty": 0.0}  # fmt: skip
    assert si.instance_params(opts, 350) == {"temperature": 0.0, "max_tokens": 350, "stop": ["Example 6", "Task:"],
                                             "presence_penalty": 1.5}  # fmt: skip
    official = get("generate", "self_instruct").make_options({"preset": "official"})
    assert official.raw and official.mode == "continuation" and official.presence_penalty == 2.0
    with pytest.raises(ValueError, match="mode=continuation"):
        si.self_instruct([], RunContext(llm=LLM("local", cache=False), options=si.SelfInstructOptions(mode="chat", raw=True)))


@pytest.mark.parametrize("raw", [False, True])
def test_instance_requests_carry_the_penalty(raw: bool, tmp_path: Path, tmp_cache) -> None:
    llm = LLM("local", cache=tmp_cache)
    opts = si.SelfInstructOptions(raw=raw, instance_max_tokens=16)
    ctx = RunContext(llm=llm, options=opts, method="self_instruct", work_dir=tmp_path, progress=False)
    si.generate_instances([dict(t) for t in TASKS], ctx, opts, {})
    task = json.loads((tmp_path / "self_instruct.tasks.jsonl").read_text().splitlines()[0])
    text = render(si.TEMPLATES["clf" if task["is_classification"] else "gen"], instruction=TASKS[0]["instruction"])
    calls = llm.stats.calls
    params = si.instance_params(opts, 16)
    assert params["presence_penalty"] == 1.5
    again = llm.complete(text, **params) if raw else llm.chat(text, **params)
    assert again.cached and llm.stats.calls == calls  # exactly this request, penalty included, was made
