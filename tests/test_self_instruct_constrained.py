"""Self-Instruct `-o constrained auto`: instance replies as schema-constrained JSON written back into the
official text format, then parsed and filtered by the official rules (nothing loosened), on the real
local model; a cut-off JSON reply keeps its complete examples."""

from __future__ import annotations

import json
from pathlib import Path

from instructkit.generators import self_instruct as si

from instructkit.models import LLM
from instructkit.run.runner import RunContext

from llamacpp_guard import require_llamacpp

TASKS = [
    {"instruction": "Decide whether the sentence is positive or negative.", "request_idx": 0},
    {"instruction": "Write a short greeting for a birthday card.", "request_idx": 0},
    {"instruction": "Give the capital city of the country.", "request_idx": 0},
]


def test_json_examples_become_the_official_text() -> None:
    reply = '{"examples": [{"input": "Sentence: I loved it.", "output": "positive"}, {"input": "", "output": "Hi"}]}'
    text = si.examples_as_text(reply, is_classification=False)
    assert si.parse_instances(text, False) == ([("Sentence: I loved it.", "positive"), ("", "Hi")], "ok")
    clf = si.examples_as_text('{"examples": [{"class_label": "Positive", "input": "Great film."}]}', True)
    assert si.parse_instances(clf, True) == ([("Great film.", "Positive")], "ok")
    cut = '{"examples": [{"input": "a b", "output": "b a"}, {"input": "c d", "output": "d'
    assert si.complete_examples(cut) == [{"input": "a b", "output": "b a"}]
    assert si.complete_examples("no json at all") == []
    # the validators are the official ones: input == output is still dropped
    same = si.examples_as_text('{"examples": [{"input": "x", "output": "x"}]}', False)
    assert si.parse_instances(same, False) == ([], "all_invalid")


def test_instance_schema_follows_the_official_field_order() -> None:
    gen, clf = si.instance_schema(False, 5), si.instance_schema(True, 3)
    assert list(gen["properties"]["examples"]["items"]["properties"]) == ["input", "output"]
    assert list(clf["properties"]["examples"]["items"]["properties"]) == ["class_label", "input"]
    assert clf["properties"]["examples"]["maxItems"] == 3


def test_constrained_instances_on_the_local_model(tmp_path: Path, tmp_cache) -> None:
    require_llamacpp()  # the figures below are llama.cpp's grammar-constrained answers
    llm = LLM("local", cache=tmp_cache)
    opts = si.SelfInstructOptions(constrained="auto", instance_max_tokens=96)
    ctx = RunContext(llm=llm, options=opts, method="self_instruct", work_dir=tmp_path, progress=False, random_state=0)
    counts: dict = {}
    rows = si.generate_instances([dict(t) for t in TASKS], ctx, opts, counts)
    tasks = [json.loads(line) for line in (tmp_path / "self_instruct.tasks.jsonl").read_text().splitlines()]
    assert len(tasks) == len(TASKS)
    assert "no_output_marker" not in counts["instance_parse"] and "no_class_label" not in counts["instance_parse"]
    assert all(isinstance(t["is_classification"], bool) for t in tasks)
    assert all(t["raw_instances"] is not None and "Output:" in t["raw_instances"] or t["is_classification"] for t in tasks)
    assert rows and len(rows) == sum(t["n_instances"] for t in tasks)
    assert all(r["output"] and r["output"] != r["input"] for r in rows)
    off = si.SelfInstructOptions(constrained="bogus")
    try:
        si.generate_instances([dict(TASKS[0])], RunContext(llm=llm, options=off, progress=False), off, {})
    except ValueError as exc:
        assert "constrained" in str(exc)
    else:
        raise AssertionError("an unknown constrained mode must be refused")
