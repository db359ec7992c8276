"""Prometheus 2 absolute (`judge rubric`) and relative (`judge pairwise`) grading under their presets
against golden outputs of prometheus-eval's own code (tests/golden/prometheus/README.md): its parser on
real-looking and adversarial replies, and the prompts and decoding parameters `PrometheusEval` sent."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import pytest
from instructkit.judge import formats
from instructkit.judge.pairwise import PROMETHEUS_CRITERIA, read_verdict
from instructkit.judge.rubric import rubric_messages

from instructkit.models import Completion
from instructkit.registry import get
from instructkit.shared.scores import OK, score_result_completion

GOLDEN = Path(__file__).parent / "prometheus"


def _rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (GOLDEN / name).read_text(encoding="utf-8").splitlines()]


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_golden_absolute_scores_are_prometheus_evals() -> None:
    opts = get("judge", "rubric").make_options({"preset": "official"})
    assert opts.parse == "official"
    rows = _rows("absolute_parse.jsonl")
    assert len(rows) >= 20
    for row in rows:
        s = score_result_completion(Completion(text=row["output"]), 1, 5, mode="text", official=True)
        assert s["value"] == row["score"], row["output"]
        assert (s["status"] == OK) == (row["score"] is not None)
    strict = [score_result_completion(Completion(text=r["output"]), 1, 5, mode="text")["value"] for r in rows]
    assert sum(v != r["score"] for v, r in zip(strict, rows)) >= 4  # the default reading is another one


def test_golden_relative_verdicts_are_prometheus_evals() -> None:
    opts = get("judge", "pairwise").make_options({"preset": "prometheus"})
    assert (opts.format, opts.parse) == ("prometheus", "official")
    rows = _rows("relative_parse.jsonl")
    assert len(rows) >= 20
    for row in rows:
        parsed = read_verdict(row["output"], opts.format, opts.parse)
        assert (parsed.raw if parsed.ok else None) == row["result"], row["output"]
    strict = [read_verdict(r["output"], "prometheus", "strict") for r in rows]
    assert sum((p.raw if p.ok else None) != r["result"] for p, r in zip(strict, rows)) >= 2


def test_presets_decode_as_prometheus_eval() -> None:
    """T 1.0, top_p 0.9, 1024 tokens in both presets; repetition_penalty 1.03 and best_of 1 are not sent
    (no OpenAI-compatible parameter: docs/fidelity.md)."""
    params = {tuple(sorted(r["params"].items())) for r in _rows("prompts.jsonl")}
    (golden,) = params
    golden = dict(golden)
    assert set(golden) - {"temperature", "top_p", "max_tokens"} == {"repetition_penalty", "best_of"}
    for opts in (get("judge", "rubric").make_options({"preset": "official"}),
                 get("judge", "pairwise").make_options({"preset": "prometheus"})):  # fmt: skip
        assert (opts.temperature, opts.top_p, opts.max_tokens) == (
            golden["temperature"], golden["top_p"], golden["max_tokens"])


def _golden_prompts() -> list[dict]:
    """The golden prompts of the prometheus-eval release installed here (PyPI 0.1.20 or the pinned commit)."""
    strings = formats.prometheus_strings()
    for name in ("prompts.jsonl", "prompts-pypi-0.1.20.jsonl"):
        digests = json.loads((GOLDEN / name.replace(".jsonl", ".sha256.json")).read_text())
        if all(_sha(strings[k]) == v for k, v in digests.items()):
            return _rows(name)
    raise AssertionError("the installed prometheus-eval's prompts match no golden file")


def test_golden_prompts_are_prometheus_evals() -> None:
    if importlib.util.find_spec("prometheus_eval") is None:  # scripts/test.sh installs the extra
        pytest.skip("the prometheus extra is not installed")
    rows = _golden_prompts()
    opts = get("judge", "rubric").make_options({"preset": "official"})
    for row in rows:
        if row["mode"] == "absolute":
            rec = {"instruction": row["instruction"], "output": row["response_a"]}
            if row["reference"] is not None:
                rec["reference"] = row["reference"]
            rubric = (row["criteria"], list(zip(range(1, 6), row["descriptions"])))
            msgs = rubric_messages(rec, opts, rubric)
        else:
            user = formats.prometheus_relative_prompt(row["instruction"], row["response_a"], row["response_b"],
                                                      row["criteria"], row["reference"] or "")  # fmt: skip
            msgs = [{"role": "system", "content": formats.prometheus_system(relative=True)},
                    {"role": "user", "content": user}]  # fmt: skip
        assert [m["role"] for m in msgs] == row["roles"]
        assert [_sha(m["content"]) for m in msgs] == [row["system_sha256"], row["user_sha256"]], row
    assert PROMETHEUS_CRITERIA  # the pairwise preset's rubric when -o criteria is not given


def test_without_prometheus_eval_the_format_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(formats.importlib.util, "find_spec", lambda name: None)
    formats.prometheus_strings.cache_clear()
    try:
        with pytest.raises(formats.OfficialTextMissing) as err:
            formats.prometheus_system()
        assert "\n" not in str(err.value) and "instructkit[prometheus]" in str(err.value)
    finally:
        formats.prometheus_strings.cache_clear()
