"""Every judge end to end on real models: the local SmolLM2 (transformers) and llama.cpp's server.

SmolLM2-135M is a weak judge, so these tests check the contract, not the verdicts: every row has
every column, a score is present exactly when the parse status is "ok", raw text is kept, logprob
expectations come from real top_logprobs, and re-runs are served from the cache. Rows and
max_tokens are tiny to keep the file fast on 2 cores.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from instructkit.judge import instag

from instructkit.models import LLM
from instructkit.models.cache import ResponseCache
from instructkit.registry import get
from instructkit.run.runner import RunContext
from instructkit.shared.scores import FAILED_STATUSES, OK

DATA = Path(__file__).parent / "data"
STATUSES = {OK, "pending", *FAILED_STATUSES}
MATH = {"instruction": "Add 2 and 2.", "input": "", "output": "4"}
COLOR = {"instruction": "Name a color.", "input": "", "output": "Blue"}
DIGIT = {
    "template": str(DATA / "judge_rubric_digit.jinja"),
    "system_template": str(DATA / "judge_empty_system.jinja"),
}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> ResponseCache:
    c = ResponseCache(tmp_path_factory.mktemp("judge_cache"))
    yield c
    c.close()


@pytest.fixture(scope="module")
def local(cache: ResponseCache) -> LLM:
    return LLM("local", cache=cache)


@pytest.fixture(scope="module")
def server(llama_server: str, cache: ResponseCache) -> LLM:
    llm = LLM("smollm2", api_base=llama_server, cache=cache, max_retries=1, timeout=120)
    yield llm
    llm.close()


def run(
    name: str, records: list[dict], llm: LLM, work_dir: Path | None = None, **options
) -> tuple[list, RunContext]:
    info = get("judge", name)
    ctx = RunContext(
        llm=llm, options=info.make_options(options), method=name, work_dir=work_dir, progress=False
    )
    return info.func(records, ctx), ctx


def check_contract(rows: list[dict], prefix: str, score: str = "score") -> None:
    for row in rows:
        status = row[f"{prefix}_parse"]
        assert status in STATUSES, status
        assert (row[f"{prefix}_{score}"] is not None) == (status == OK), row
        assert f"{prefix}_raw" in row


# ----- local model --------------------------------------------------------------------------------


def test_alpagasus_local_and_cached_rerun(local: LLM, tmp_path: Path) -> None:
    rows, ctx = run("alpagasus", [MATH], local, tmp_path, max_tokens=8)
    check_contract(rows, "alpagasus")
    assert all(isinstance(r["alpagasus_raw"], str) and r["alpagasus_raw"] for r in rows)
    assert all(
        r["alpagasus_keep"] == (r["alpagasus_score"] is not None and r["alpagasus_score"] >= 4.5)
        for r in rows
    )
    summary = json.loads((tmp_path / "alpagasus.manifest.json").read_text())["counts"]
    assert summary["rows"] == 1 and sum(summary["parse"].values()) == 1
    assert rows[0]["instruction"] == MATH["instruction"]  # order and fields kept
    calls = local.stats.calls
    again, _ = run("alpagasus", [MATH], local, None, max_tokens=8)  # no journal: the cache answers
    assert local.stats.calls == calls and all(r["alpagasus_calls"] == 0 for r in again)
    strip = [{k: v for k, v in r.items() if k != "alpagasus_calls"} for r in rows]
    assert [{k: v for k, v in r.items() if k != "alpagasus_calls"} for r in again] == strip


def test_rubric_local_logprobs_and_self_consistency(local: LLM) -> None:
    rows, _ = run("rubric", [MATH], local, max_tokens=4, **DIGIT)
    check_contract(rows, "rubric")
    row = rows[0]
    if row["rubric_parse"] == OK:
        assert row["rubric_score_source"] in ("text", "expected") and 1 <= row["rubric_expected"] <= 5
        assert 0 < row["rubric_score_mass"] <= 1 and row["rubric_argmax"] in {1, 2, 3, 4, 5}
    rows, _ = run("rubric", [COLOR], local, max_tokens=2, n_samples=2, **DIGIT)
    check_contract(rows, "rubric")
    assert len(rows[0]["rubric_samples"]) == 2 and len(rows[0]["rubric_raw_all"]) == 2
    assert rows[0]["rubric_n_valid"] == sum(v is not None for v in rows[0]["rubric_samples"])


def test_pairwise_local_both_orders(local: LLM) -> None:
    rec = {"instruction": "Name a color.", "response_a": "Blue", "response_b": "A dog"}
    rows, ctx = run("pairwise", [rec], local, max_tokens=4)
    check_contract(rows, "pairwise", "winner")
    assert len(rows[0]["pairwise_raw"]) == 2 and rows[0]["pairwise_calls"] == 2
    assert "position_consistency" in ctx.extras["judge_summary"]["pairwise"]


def test_deita_direct_local_uses_the_score_distribution(local: LLM) -> None:
    rows, _ = run("deita", [MATH], local)
    row = rows[0]
    assert row["deita_quality_parse"] == OK, row["deita_quality_raw"]
    assert row["deita_quality_source"] == ["distribution"] and 1 <= row["deita_quality"] <= 6
    assert row["deita_quality"] != int(row["deita_quality"])  # an expectation, not the parsed digit
    # Independent check: softmax over the six score tokens' full-distribution log-probs, by hand.
    from instructkit.templates import render

    prompt = render("deita_quality.jinja", instruction=MATH["instruction"], response=MATH["output"])
    lps = local.backend.choice_logprobs([{"role": "user", "content": prompt}], [str(s) for s in range(1, 7)])
    weights = [math.exp(v) for v in lps]
    expected = sum(s * w for s, w in zip(range(1, 7), weights)) / sum(weights)
    assert row["deita_quality"] == pytest.approx(expected, abs=1e-6)
    assert row["deita_score"] == pytest.approx(row["deita_complexity"] * row["deita_quality"])


def test_deita_evol_local(local: LLM) -> None:
    rows, _ = run(
        "deita",
        [MATH],
        local,
        mode="evol",
        m=1,
        aspects=["complexity"],
        evol_max_tokens=8,
        rank_max_tokens=12,
    )
    row = rows[0]
    assert row["deita_complexity_parse"] in STATUSES
    assert (
        len(row["deita_complexity_variants"][0]) == 2
        and row["deita_complexity_variants"][0][0] == "Add 2 and 2."
    )
    assert (row["deita_complexity"] is None) == (row["deita_complexity_parse"] != OK)


def test_instag_local(local: LLM, tmp_path: Path) -> None:
    rows, ctx = run("instag", [MATH], local, tmp_path, max_tokens=24, repairs=0, semantic=False)
    check_contract(rows, "instag", "tags")
    assert (rows[0]["instag_complexity"] is None) == (rows[0]["instag_tags"] is None)
    assert (tmp_path / "instag.vocab.json").exists() and (tmp_path / "instag.normalisation.json").exists()


def test_instag_semantic_step_with_the_real_embedder() -> None:
    rows = [["poem writing", "math"], ["poem writing"], ["poetry writing", "history"], ["mathematics"]]
    out, rep = instag.normalise(rows, instag.InstagOptions(min_freq=0, rule=False, association=False))
    step = rep["steps"][0]
    assert step["step"] == "semantic" and step["tags_after"] <= step["tags_before"] == 5
    assert all(set(o) <= {t for r in rows for t in r} for o in out)
    for a, b in step["merges"]:  # every merge lands on a tag at least as frequent
        assert sum(b in r for r in rows) >= sum(a in r for r in rows)


def test_meta_eval_local(local: LLM, tmp_path: Path) -> None:
    labelled = [{**MATH, "label": 5}, {**COLOR, "label": 4}]
    rows, ctx = run(
        "eval", labelled, local, tmp_path, judge="rubric", judge_options={"max_tokens": 4, **DIGIT}
    )
    report = json.loads((tmp_path / "eval.report.json").read_text())
    assert report == ctx.extras["eval_report"]
    scored = sum(r["rubric_parse"] == OK for r in rows)
    assert report["scored"] == scored and report["parse_failure_rate"] == pytest.approx(1 - scored / 2)
    assert report["tokens"] > 0 and report["calls"] + report["cache_hits"] >= 2
    for key in ("accuracy", "cohen_kappa", "spearman", "kendall", "cost"):
        assert key in report


# ----- llama.cpp server ---------------------------------------------------------------------------


def test_judges_through_llama_server(server: LLM) -> None:
    rows, _ = run("alpagasus", [COLOR], server, max_tokens=12)
    check_contract(rows, "alpagasus")
    rows, _ = run("rubric", [COLOR], server, max_tokens=4, **DIGIT)
    check_contract(rows, "rubric")
    if rows[0]["rubric_parse"] == OK:
        assert rows[0]["rubric_score_source"] in ("text", "expected")
    rows, _ = run("deita", [MATH], server, aspects=["quality"])
    assert rows[0]["deita_quality_parse"] == OK, rows[0]["deita_quality_raw"]
    assert rows[0]["deita_quality_source"] == ["logprobs"] and 1 <= rows[0]["deita_quality"] <= 6
    rec = {"instruction": "Name a color.", "response_a": "Blue", "response_b": "A dog"}
    rows, _ = run("pairwise", [rec], server, max_tokens=6)
    check_contract(rows, "pairwise", "winner")
    pref = rows[0]["pairwise_pref"]
    assert pref is None or 0.0 <= pref <= 1.0
    rows, _ = run(
        "deita",
        [COLOR],
        server,
        mode="evol",
        m=1,
        aspects=["quality"],
        evol_max_tokens=12,
        rank_max_tokens=16,
    )
    assert len(rows[0]["deita_quality_variants"][0]) == 2
    assert (rows[0]["deita_quality"] is None) == (rows[0]["deita_quality_parse"] != OK)


def test_instag_through_llama_server_schema_constrained(server: LLM, tmp_path: Path) -> None:
    recs = [{"instruction": "Write a short poem about the sea.", "output": ""}, MATH]
    rows, ctx = run("instag", recs, server, tmp_path, max_tokens=80, semantic=False)
    check_contract(rows, "instag", "tags")
    assert any(r["instag_parse"] == OK for r in rows), [r["instag_raw"] for r in rows]
    for row in rows:
        if row["instag_parse"] == OK:
            assert row["instag_complexity"] == len(row["instag_tags"]) and row["instag_raw_tags"]
    vocab = json.loads((tmp_path / "instag.vocab.json").read_text())
    assert sum(vocab.values()) == sum(len(r["instag_tags"] or []) for r in rows)


def test_jury_local_and_server(server: LLM, local: LLM, llama_server: str) -> None:
    models = ["local", f"smollm2@{llama_server}"]
    rows, ctx = run(
        "jury",
        [COLOR],
        local,
        judge="rubric",
        models=models,
        aggregate="mean",
        judge_options={"max_tokens": 4, **DIGIT},
    )
    row = rows[0]
    assert set(row["jury_scores"]) == set(models) and set(row["jury_raws"]) == set(models)
    valid = [v for v in row["jury_scores"].values() if v is not None]
    assert row["jury_n_valid"] == len(valid)
    assert row["jury_score"] == (pytest.approx(sum(valid) / len(valid)) if valid else None)
