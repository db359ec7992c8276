"""A dry run walks every call a real run makes: per method family, its calls equal the real run's
on the same rows and its tokens are within 15%, on the real local model (SmolLM2 in process) and,
for the jury, two members on the real llama.cpp server.

Each family first runs for real on two other rows (a pilot: it calibrates the model's prompt-token
ratio and reply sizes per stage), then dry-runs and really runs the same two rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from instructkit import registry
from instructkit.models import LLM
from instructkit.run.runner import RunContext
from instructkit.run.steps import execute

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TOLERANCE = 0.15  # the bound on dry-run tokens against the real run's


def records() -> list[dict]:
    rows = [json.loads(line) for line in (EXAMPLES / "records.jsonl").read_text().splitlines()]
    for r in rows:  # pairwise reads two responses: the answer and a shorter one
        r["response_a"], r["response_b"] = r["output"], r["output"].split(".")[0] + "."
    return rows


CASES = {  # family: (kind, method, options), small max_tokens: the whole file runs in minutes on 2 cores
    "rating, n samples": ("judge", "rubric", {"n_samples": 2, "max_tokens": 12}),
    "pairwise, both orders": ("judge", "pairwise", {"max_tokens": 8}),
    "deita direct, reply and distribution": ("judge", "deita", {"mode": "direct"}),
    "deita evol, two stages per aspect": (
        "judge", "deita", {"mode": "evol", "m": 1, "evol_max_tokens": 24, "rank_max_tokens": 16},
    ),
    "generator, two stages": (
        "generate", "backtranslation", {"text_field": "output", "augment_max_tokens": 24, "rate_max_tokens": 16},
    ),
}  # fmt: skip


def run(kind: str, name: str, options: dict, rows: list[dict], llm: LLM, work: Path | None) -> dict:
    info = registry.get(kind, name)
    ctx = RunContext(llm=llm, options=info.make_options(options), method=info.name, work_dir=work,
                     concurrency=4, progress=False)  # fmt: skip
    try:
        execute(info, rows, ctx)
    finally:
        llm.close()
    return llm.stats.as_dict()


def check_parity(kind: str, name: str, options: dict, tmp_path: Path, model) -> None:
    rows = records()
    pilot, same = rows[:2], rows[2:4]
    run(kind, name, options, pilot, model(), tmp_path / "pilot")
    dry = run(kind, name, options, same, model(dry_run=True), None)
    real = run(kind, name, options, same, model(), tmp_path / "real")
    assert real["cache_hits"] == dry["cache_hits"] and real["failures"] == 0
    assert dry["calls"] == 0 and dry["estimated_calls"] == real["calls"] > 0, (dry, real)
    assert dry["estimated_calibrated"] <= dry["estimated_calls"]
    real_tokens = real["prompt_tokens"] + real["completion_tokens"]
    print(f"{name}: calls dry {dry['estimated_calls']} real {real['calls']}; tokens dry {dry['estimated_tokens']} "
          f"real {real_tokens} ({dry['estimated_tokens'] / real_tokens - 1:+.1%})")
    assert abs(dry["estimated_tokens"] - real_tokens) <= TOLERANCE * real_tokens, (dry, real)


@pytest.mark.parametrize("family", list(CASES))
def test_dry_run_calls_and_tokens_match_the_real_run(tmp_path: Path, family: str) -> None:
    kind, name, options = CASES[family]
    check_parity(kind, name, options, tmp_path, lambda **kw: LLM("local", cache_dir=str(tmp_path / "cache"), **kw))


def test_jury_dry_run_matches_the_real_run_across_members(llama_server, tmp_path: Path) -> None:
    options = {"models": [f"smollm2@{llama_server}", f"smollm2-b@{llama_server}"], "judge": "alpagasus",
               "judge_options": {"max_tokens": 8}}  # fmt: skip

    def model(**kw) -> LLM:
        return LLM(f"smollm2@{llama_server}", cache_dir=str(tmp_path / "cache"), max_retries=1, timeout=120, **kw)

    check_parity("judge", "jury", options, tmp_path, model)
