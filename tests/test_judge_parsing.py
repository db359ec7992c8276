"""Judge parsers, logprob expectation and the pure parts of the judges (no model)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from instructkit.judge import deita, instag, jury, pairwise, rubric

from instructkit.models import Completion, TokenLogprob
from instructkit.shared.scores import (
    NO_SCORE_TOKEN,
    OK,
    check_score_mode,
    expectation_from_logits,
    expectation_from_logprobs,
    parse_json_score,
    parse_ranking,
    parse_score,
    parse_verdict,
    score_completion,
    strip_echo,
)
from instructkit.templates import render

CORPUS = [json.loads(line) for line in (Path(__file__).parent / "data" / "judge_outputs.jsonl").open()]


def _id(row: dict) -> str:
    return f"{row['kind']}:{row['note']}"


@pytest.mark.parametrize("row", [r for r in CORPUS if r["kind"] == "score"], ids=_id)
def test_score_corpus(row: dict) -> None:
    got = parse_score(
        row["text"],
        row["lo"],
        row["hi"],
        prompt=row["prompt"],
        first_line=row["first_line"],
        prefer=row["prefer"],
    )
    assert (got.value, got.status) == (row["expect"], row["status"])
    assert (got.value is None) == (got.status != OK)


@pytest.mark.parametrize("row", [r for r in CORPUS if r["kind"] == "verdict"], ids=_id)
def test_verdict_corpus(row: dict) -> None:
    got = parse_verdict(row["text"], prompt=row["prompt"])
    label = {"A": "A", "B": "B", "TIE": "tie"}.get(got.raw) if got.ok else None
    assert (label, got.status) == (row["expect"], row["status"])


@pytest.mark.parametrize("row", [r for r in CORPUS if r["kind"] == "ranking"], ids=_id)
def test_ranking_corpus(row: dict) -> None:
    got = parse_ranking(row["text"], row["n"], 1, row["n"] + 1)
    assert got.status == row["status"]
    assert got.scores == (None if row["expect"] is None else [float(s) for s in row["expect"]])


@pytest.mark.parametrize("row", [r for r in CORPUS if r["kind"] == "tags"], ids=_id)
def test_tag_corpus(row: dict) -> None:
    items, status = instag.parse_tags(row["text"])
    assert status == row["status"]
    assert ([i["tag"] for i in items] if items else None) == row["expect"]


def test_corpus_covers_every_category() -> None:
    kinds = {r["kind"] for r in CORPUS}
    assert kinds == {"score", "verdict", "ranking", "tags"}
    statuses = {r["status"] for r in CORPUS}
    assert {"ok", "empty", "no_score", "out_of_range", "invalid", "missing", "duplicate"} <= statuses
    assert any(r.get("prompt") for r in CORPUS)  # prompt-echo cases


def test_half_points_are_kept_and_echo_is_never_read() -> None:
    assert parse_score("Score:4.5", 0, 5, first_line=True).value == 4.5  # not 4.0
    prompt = "Use a scale of 0 to 5 where 5 is best. Score: 5 means flawless."
    assert parse_score(prompt, 0, 5, prompt=prompt).status == "no_score"
    assert strip_echo("Score: 5 means flawless.\n2", prompt) == "2"


def _tok(token: str, top: list[tuple[str, float]]) -> TokenLogprob:
    return TokenLogprob(token, dict(top).get(token, top[0][1] if top else -1.0), top)


def test_expectation_hand_computed() -> None:
    # p(4)=0.5+0.1 (" 4" merged), p(5)=0.2, "The" ignored -> renormalised 0.75 / 0.25
    top = [("4", math.log(0.5)), (" 4", math.log(0.1)), ("5", math.log(0.2)), ("The", math.log(0.2))]
    exp = expectation_from_logprobs([_tok("4", top)], range(1, 6))
    assert exp.status == OK and exp.position == 0
    assert exp.value == pytest.approx(4.25)
    assert exp.argmax == 4.0 and exp.mass == pytest.approx(0.8)
    assert exp.entropy == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))


def test_expectation_finds_the_score_token_after_markup() -> None:
    lps = [
        _tok("**", [("**", -0.1)]),
        _tok("3", [("3", math.log(0.5)), ("2", math.log(0.5))]),
        _tok("**", [("**", -0.1)]),
    ]
    exp = expectation_from_logprobs(lps, range(1, 6))
    assert exp.position == 1 and exp.value == pytest.approx(2.5)


def test_expectation_failures_are_explicit_not_three() -> None:
    assert expectation_from_logprobs(None, range(1, 7)).status == NO_SCORE_TOKEN
    words = [_tok("The", [("The", -0.1), ("A", -2.0)])]
    assert expectation_from_logprobs(words, range(1, 7)).value is None
    # the first digit is not an allowed score (a "9" on 1-6): no position, no value
    assert expectation_from_logprobs([_tok("9", [("9", -0.1), ("3", -3.0)])], range(1, 7)).value is None


def test_expectation_matches_the_deita_scorer_formula() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        logits = rng.normal(size=6) * 3
        manual = float(np.sum(np.arange(1, 7) * np.exp(logits) / np.exp(logits).sum()))
        assert expectation_from_logits(list(logits), range(1, 7)) == pytest.approx(manual, abs=1e-9)
        # top_logprobs of a full vocabulary: log_softmax over more tokens than the six digits
        full = np.concatenate([logits, rng.normal(size=20)])
        logp = full - np.log(np.exp(full).sum())
        top = [(str(i + 1), float(logp[i])) for i in range(6)] + [
            (f"w{i}", float(v)) for i, v in enumerate(logp[6:])
        ]
        exp = expectation_from_logprobs([TokenLogprob(top[0][0], top[0][1], top)], range(1, 7))
        assert exp.value == pytest.approx(manual, abs=1e-9)


def test_score_modes_text_expected_auto() -> None:
    top = [("2", math.log(0.5)), ("3", math.log(0.5))]
    comp = Completion("2\nok", logprobs=[_tok("2", top)])
    s = score_completion(comp, 1, 5)  # auto: the text where it parses, the expectation beside it
    assert (s["value"], s["source"], s["expected"], s["parsed"]) == (2.0, "text", pytest.approx(2.5), 2.0)
    s = score_completion(comp, 1, 5, mode="expected")
    assert s["source"] == "expected" and s["value"] == pytest.approx(2.5)
    # No score in the text: auto falls back to the distribution at the first token, text gives none.
    unparsed = Completion("\n2 + 2 = 4", logprobs=[_tok("\n", []), _tok("2", top)])
    s = score_completion(unparsed, 1, 5)
    assert s["source"] == "expected" and s["value"] == pytest.approx(2.5)
    assert s["status"] == "ok" and s["text_status"] == "no_score"
    s = score_completion(unparsed, 1, 5, mode="text")
    assert s["value"] is None and s["status"] == "no_score" and s["expected"] == pytest.approx(2.5)
    s = score_completion(Completion("4"), 1, 5, mode="expected")  # no logprobs: the text
    assert s["source"] == "text" and s["value"] == 4.0
    assert score_completion(Completion("3.5"), 1, 5)["status"] == "invalid"  # integer scale
    assert score_completion(Completion("3.5"), 0, 5, integer=False)["value"] == 3.5
    with pytest.raises(ValueError, match="score must be one of"):
        check_score_mode("best", "alpagasus")


def test_constrained_json_scores_read_from_the_start() -> None:
    assert parse_json_score('{"score": 4, "explanation": "fine"}', 0, 5).value == 4.0
    assert parse_json_score('{"score": 4.5, "explanation": "cut at max_tok', 0, 5).value == 4.5
    assert parse_json_score('{"score": 7}', 0, 5).status == "out_of_range"
    assert parse_json_score('{"explanation": "x", "score": 4}', 0, 5).value == 4.0  # score last: whole object
    assert parse_json_score('{"explanation": "cut before the sc', 0, 5).status == "no_score"
    assert parse_json_score('{"explanation": "x", "score": true}', 0, 5).status == "no_score"
    top = [("4", math.log(0.75)), ("5", math.log(0.25))]
    toks = [_tok('{"', []), _tok("score", []), _tok('":', []), _tok(" ", []), _tok("4", top), _tok("}", [])]
    s = score_completion(Completion('{"score": 4}', logprobs=toks), 0, 5, json_key="score")
    assert s["value"] == 4.0 and s["expected"] == pytest.approx(4.25)


def test_deita_combined_over_turns() -> None:
    assert deita.combined([2.0, 3.0], [4.0, 5.0]) == 2 * 4 + 3 * 5
    assert deita.combined([2.0], [None]) is None
    assert deita.combined([2.0, 1.0], [3.0]) is None


def test_pairwise_combine() -> None:
    assert pairwise.combine("A", "A") == ("A", True)
    assert pairwise.combine("A", "B") == ("tie", False)
    assert pairwise.combine("A", "B", "first") == ("A", False)
    assert pairwise.combine("B", "tie", "null") == (None, False)
    with pytest.raises(ValueError):
        pairwise.combine("A", "B", "coin")


def test_jury_aggregates() -> None:
    values = [4.0, 5.0, None, 3.0]
    assert jury.aggregate(values, "mean")[0] == pytest.approx(4.0)
    assert jury.aggregate(values, "median")[0] == pytest.approx(4.0)
    assert jury.aggregate(values, "weighted", [1, 2, 1, 1])[0] == pytest.approx((4 + 10 + 3) / 4)
    assert jury.aggregate(values, "majority") == (pytest.approx(4.0), pytest.approx(1 / 3))
    assert jury.aggregate([0.0, 0.0, 1.0], "majority") == (0.0, pytest.approx(2 / 3))
    assert jury.aggregate([0.0, 1.0], "majority")[0] == 0.5  # a split A/B vote is a tie
    assert jury.aggregate([None, None], "mean") == (None, 0.0)


def test_rubric_loading_and_template(tmp_path: Path) -> None:
    crit, desc = rubric.load_rubric(rubric.RubricOptions())
    assert [s for s, _ in desc] == [1, 2, 3, 4, 5]
    path = tmp_path / "r.json"
    path.write_text(
        json.dumps({"criteria": "Is it polite?", "descriptions": {"0": "rude", "1": "neutral", "2": "kind"}})
    )
    crit, desc = rubric.load_rubric(rubric.RubricOptions(rubric_file=str(path), lo=0, hi=2))
    assert crit == "Is it polite?" and desc == [(0, "rude"), (1, "neutral"), (2, "kind")]
    with pytest.raises(ValueError):
        rubric.load_rubric(rubric.RubricOptions(descriptions=["a", "b"]))
    msgs = rubric.rubric_messages(
        {"instruction": "Greet me", "output": "Hi", "reference": "Hello there"},
        rubric.RubricOptions(),
        rubric.load_rubric(rubric.RubricOptions()),
    )
    assert "Reference answer" in msgs[-1]["content"] and "Score 5:" in msgs[-1]["content"]
    # The rubric's own lines and scale never parse as a score.
    assert parse_score(msgs[-1]["content"], 1, 5, prompt=msgs[-1]["content"]).status == "no_score"


def test_alpagasus_prompt_layout() -> None:
    text = render("alpagasus.jinja", instruction="Add 2 and 2.", input="", output="4", dimension="accuracy")
    assert text.startswith("###Instruction:\nAdd 2 and 2.\n\n### Input:\n\n\n### Response:\n4\n")
    assert "0 to 5" in text and "first line" in text


# ----- InsTag normalisation (steps 1-2 deterministic, 3-4 invariants) -----------------------------


def test_frequency_filter() -> None:
    rows, step = instag.frequency_filter([["a", "b"], ["a"], ["a", "c"], ["b"], None], 2)
    assert rows == [["a", "b"], ["a"], ["a"], ["b"], None]
    assert step["dropped"] == ["c"] and step["tags_before"] == 3 and step["tags_after"] == 2


def test_rule_aggregation() -> None:
    rows = [
        ["Creative Writing", "poetry"],
        ["creative-writing", "Poems"],
        ["math"],
        ["Mathematics!", "creative writing"],
    ]
    out, step = instag.rule_aggregate(rows)
    assert out == [
        ["creative writing", "poetry"],
        ["creative writing", "poems"],
        ["math"],
        ["mathematics", "creative writing"],
    ]
    assert ["Creative Writing", "creative writing"] in step["merges"]
    assert instag.stem_key("Programming Languages") == "program languag"


def test_scaled_threshold() -> None:
    assert instag.scaled(20, 2000, True) == 1
    assert instag.scaled(20, instag.PAPER_POOL // 2, True) == 10
    assert instag.scaled(20, 10**6, True) == 20 and instag.scaled(20, 10, False) == 20


def test_association_aggregation() -> None:
    rows = [["python", "coding"]] * 40 + [["coding"]] * 10 + [["history"]]
    out, step = instag.association_aggregate(rows, 40, 0.99)
    assert step["n_rules"] == 1 and step["rules"][0][:2] == ["python", "coding"]
    assert out[0] == ["coding"] and out[-1] == ["history"]
    _, step = instag.association_aggregate(rows, 41, 0.99)
    assert step["n_rules"] == 0


def test_semantic_aggregation_invariants() -> None:
    vecs = {
        "poetry": [1.0, 0.0, 0.0],
        "poems": [0.999, 0.01, 0.0],
        "math": [0.0, 1.0, 0.0],
        "history": [0.0, 0.0, 1.0],
    }
    rows = [["poetry", "math"], ["poems"], ["poetry"], ["history", "math"]]
    out, step = instag.semantic_aggregate(rows, lambda tags: np.array([vecs[t] for t in tags]), 0.05)
    assert out == [["poetry", "math"], ["poetry"], ["poetry"], ["history", "math"]]
    assert step["merges"] == [["poems", "poetry"]] and step["tags_after"] == 3


def test_normalise_reports_every_step() -> None:
    rows = [["Poetry", "Creative writing"], ["poetry"], None]
    opts = instag.InstagOptions(semantic=False)
    out, rep = instag.normalise(rows, opts)
    assert out == [["poetry", "creative writing"], ["poetry"], None]
    assert [s["step"] for s in rep["steps"]] == ["frequency", "rule", "association"]
    assert any("scaled" in w for w in rep["warnings"]) and rep["tagged_rows"] == 2


def test_verdict_preference_from_logprobs() -> None:
    from instructkit.shared.scores import verdict_preference

    top = [("A", math.log(0.2)), ("B", math.log(0.6)), ("tie", math.log(0.2)), ("The", math.log(0.1))]
    assert verdict_preference([_tok("B", top)]) == pytest.approx((0.6 + 0.1) / 1.0)
    bracket = [_tok("[[", [("[[", -0.01)]), _tok("A", [("A", math.log(0.5)), ("B", math.log(0.5))])]
    assert verdict_preference(bracket) == pytest.approx(0.5)
    assert verdict_preference([_tok("The", [("The", -0.1)])]) is None
    assert verdict_preference(None) is None
