"""Judge formats of released judges: Prometheus 2 (feedback, then "[RESULT] n") for the rubric judge and
MT-Bench (explanation, then [[A]]/[[B]]/[[C]]) for the pairwise judge. Parsers on real-looking replies,
the trained Prometheus strings against the official file's digests, and both formats end to end on the
real local model."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from instructkit.judge import formats
from instructkit.judge.rubric import DEFAULT_CRITERIA, DEFAULT_DESCRIPTIONS_1_5

from instructkit.models import LLM
from instructkit.models.cache import ResponseCache
from instructkit.registry import get
from instructkit.run.runner import RunContext
from instructkit.shared.scores import OK, parse_prometheus_score, parse_result_score, parse_verdict_tail

PROMETHEUS_REPLIES = [
    ("The response names the capital correctly and explains the river's role in one clear sentence. It misses "
     "the population figure the rubric asks for, so it is not complete. [RESULT] 4", 4.0, OK),
    ("Feedback: Accurate but terse; Score 5 in the rubric needs an example, which is absent.\n[RESULT] (3)", 3.0, OK),
    ("The answer is off-topic and does not address the instruction at all.\n\n[RESULT] 1\n", 1.0, OK),
    ("Mostly right, minor slips in units. So the overall score is: [RESULT] 4/5", 4.0, OK),
    ("Clear and correct, with a worked example.  Score: 5", 5.0, OK),
    ("Feedback: the response fits Score 2 of the rubric in places. [RESULT] 3 **", 3.0, OK),
    # The result must end the reply: a quoted "[RESULT] 2" followed by more feedback is not a score.
    ("[RESULT] 2 would be too harsh here; the response is helpful but incomplete.", None, "no_score"),
    ("A thorough answer. [RESULT] 6", None, "out_of_range"),
    ("A thorough answer. [RESULT] 8/10", None, "out_of_range"),
    ("Good, though one step is skipped. [RESULT] 3.5", None, "invalid"),
    ("The response is fine.", None, "no_score"),
    ("", None, "empty"),
]

MTBENCH_REPLIES = [
    ("Assistant A gives the correct derivative and shows each step, while Assistant B makes a sign error in the "
     "second term. A is more accurate and more helpful.\n\n[[A]]", 0.0, OK),
    ("Both answers are correct and equally detailed; neither is clearly better.\n\nFinal verdict: [[C]]", 0.5, OK),
    ("Assistant A is longer, but length should not decide. Assistant B answers the actual question.\n"
     "My final verdict is: **[[B]]**.", 1.0, OK),
    # The explanation mentions the format on its way; only the verdict that ends the reply counts.
    ('I will answer with "[[A]]" if A is better. Having compared them, B is more precise. [[B]]', 1.0, OK),
    ("[[A]] Assistant A is better because it is concise and correct.", None, "no_score"),
    ("Both have merits; it is hard to choose.", None, "no_score"),
]
PROMETHEUS_RELATIVE_REPLIES = [
    ("Feedback: Both responses name a color, but Response B adds an unrelated animal, which the criteria penalise. "
     "Response A is direct and correct. [RESULT] A", 0.0, OK),
    ("Feedback: Response A misreads the question while Response B answers it with an example.\n[RESULT] B", 1.0, OK),
    ("Response B is clearer.\n[RESULT]: B.", 1.0, OK),
    ("[RESULT] A is what a careless grader would say, but B is more accurate overall.", None, "no_score"),
    ("Both responses are equally good.", None, "no_score"),
]


def test_prometheus_strings_are_read_from_the_package_and_checked() -> None:
    """No Prometheus text in the project: every string comes from the installed prometheus-eval and its
    sha256 is one of a known release's (tests/golden/prometheus holds the prompts built from them)."""
    for name, text in formats.prometheus_strings().items():
        assert hashlib.sha256(text.encode()).hexdigest() in formats.PROMETHEUS_DIGESTS[name], name
    source = "".join(Path(formats.__file__).read_text(encoding="utf-8").split())
    assert all("".join(t.split())[:200] not in source for t in formats.prometheus_strings().values())
    user = formats.prometheus_prompt("Add 2 and 2.", "4", "Correct?", [f"d{i}" for i in range(1, 6)], "4")
    assert user.endswith("###Reference Answer (Score 5):\n4\n\n###Score Rubrics:\n[Correct?]\nScore 1: d1\n"
                         "Score 2: d2\nScore 3: d3\nScore 4: d4\nScore 5: d5\n\n###Feedback: ")  # fmt: skip
    # MT-Bench layout (pair-v2 / pair-math-v1 of FastChat's judge_prompts.jsonl), reference before the answers.
    assert formats.mtbench_prompt("Q?", "a", "b", reference="r") == (
        "[User Question]\nQ?\n\n[The Start of Reference Answer]\nr\n[The End of Reference Answer]\n\n"
        "[The Start of Assistant A's Answer]\na\n[The End of Assistant A's Answer]\n\n"
        "[The Start of Assistant B's Answer]\nb\n[The End of Assistant B's Answer]"
    )
    with pytest.raises(ValueError, match="5 score descriptions"):
        formats.prometheus_prompt("q", "a", "c", ["only one"])


@pytest.mark.parametrize(("text", "value", "status"), PROMETHEUS_REPLIES)
def test_prometheus_result_is_read_at_the_end(text: str, value: float | None, status: str) -> None:
    parsed, feedback = parse_result_score(text, 1, 5)
    assert (parsed.value, parsed.status) == (value, status)
    if status == OK:
        assert text.startswith(feedback) and "[RESULT]" not in feedback and "Score:" not in feedback[-8:]


@pytest.mark.parametrize(("text", "value", "status"), MTBENCH_REPLIES)
def test_mtbench_verdict_is_read_at_the_end(text: str, value: float | None, status: str) -> None:
    parsed = parse_verdict_tail(text)
    assert (parsed.value, parsed.status) == (value, status)


@pytest.mark.parametrize(("text", "value", "status"), PROMETHEUS_RELATIVE_REPLIES)
def test_prometheus_relative_verdict_is_read_at_the_end(text: str, value: float | None, status: str) -> None:
    parsed = parse_verdict_tail(text, "prometheus")
    assert (parsed.value, parsed.status) == (value, status)
    assert parse_verdict_tail(text, "mtbench").status != OK  # one format's marker is not the other's


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> LLM:
    return LLM("local", cache=ResponseCache(tmp_path_factory.mktemp("formats_cache")))


SUMMARIES: dict[str, dict] = {}  # each method's last run summary


def _run(kind_name: str, records: list[dict], llm: LLM, **options) -> tuple[list[dict], object]:
    info = get("judge", kind_name)
    opts = info.make_options(options)
    ctx = RunContext(llm=llm, options=opts, method=kind_name, progress=False, random_state=3)
    rows = info.func(records, ctx)
    SUMMARIES[kind_name] = ctx.extras["judge_summary"][kind_name]
    return rows, opts


def test_rubric_prometheus_format_end_to_end(local: LLM) -> None:
    rec = {"instruction": "Add 2 and 2.", "input": "", "output": "4", "reference": "2 + 2 = 4"}
    rows, opts = _run("rubric", [rec], local, preset="official", max_tokens="24")
    assert (opts.format, opts.temperature, opts.top_p) == ("prometheus", 1.0, 0.9)
    row = rows[0]
    assert (row["rubric_score"] is not None) == (row["rubric_parse"] == OK)
    # The request was Prometheus 2's trained format, byte for byte (cached under exactly these messages).
    user = formats.prometheus_prompt("Add 2 and 2.", "4", DEFAULT_CRITERIA, DEFAULT_DESCRIPTIONS_1_5, "2 + 2 = 4")
    msgs = [{"role": "system", "content": formats.prometheus_system()}, {"role": "user", "content": user}]
    again = local.chat(msgs, temperature=1.0, top_p=0.9, seed=3, max_tokens=24, logprobs=True, top_logprobs=10)
    assert again.cached and again.text == row["rubric_raw"]
    parsed, _ = parse_prometheus_score(row["rubric_raw"], 1, 5)  # the preset reads as prometheus-eval does
    assert row["rubric_parse"] == parsed.status
    sent = SUMMARIES["rubric"]["official_text_sha256"]  # the manifest names the official text by its digests
    assert all(sent[name] in digests for name, digests in formats.PROMETHEUS_DIGESTS.items())
    with pytest.raises(ValueError, match="1-5"):
        _run("rubric", [rec], local, format="prometheus", hi="10")


def test_pairwise_mtbench_format_end_to_end(local: LLM) -> None:
    rec = {"instruction": "Name a color.", "response_a": "Blue", "response_b": "A dog"}
    rows, opts = _run("pairwise", [rec], local, format="mtbench", max_tokens="16")  # our wording, strict reading
    assert (opts.format, opts.prompts, opts.parse, opts.temperature) == ("mtbench", "ours", "strict", 0.0)
    row = rows[0]
    first = parse_verdict_tail(row["pairwise_raw"][0])
    assert row["pairwise_parse"] in (OK, first.status, parse_verdict_tail(row["pairwise_raw"][1]).status)
    msgs = [{"role": "system", "content": formats.MTBENCH_SYSTEM},
            {"role": "user", "content": formats.mtbench_prompt("Name a color.", "Blue", "A dog")}]  # fmt: skip
    assert local.chat(msgs, temperature=0.0, max_tokens=16).cached


def test_pairwise_prometheus_format_end_to_end(local: LLM) -> None:
    rec = {"instruction": "Name a color.", "response_a": "Blue", "response_b": "A dog", "reference": "Red"}
    rows, opts = _run("pairwise", [rec], local, preset="prometheus", max_tokens="8")
    assert (opts.format, opts.temperature, opts.top_p) == ("prometheus", 1.0, 0.9)
    assert rows[0]["pairwise_parse"] in (OK, "no_score", "empty", "inconsistent")
    from instructkit.judge.pairwise import PROMETHEUS_CRITERIA

    user = formats.prometheus_relative_prompt("Name a color.", "A dog", "Blue", PROMETHEUS_CRITERIA, "Red")
    assert user.startswith(formats.prometheus_strings()["RELATIVE_PROMPT"][:60]) and "###Reference Answer:\nRed\n" in user
    msgs = [{"role": "system", "content": formats.prometheus_system(relative=True)}, {"role": "user", "content": user}]
    assert local.chat(msgs, temperature=1.0, top_p=0.9, seed=3, max_tokens=8).cached  # the swapped order, byte for byte
