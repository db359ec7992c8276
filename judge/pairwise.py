"""Pairwise judge: A, B or tie, judged in both orders, with position consistency.

Paper: Zheng et al., "Judging LLM-as-a-Judge with MT-Bench and Chatbot Arena" (NeurIPS 2023, arXiv
2306.05685), the swap-and-compare protocol.
`format=prometheus` (preset `prometheus`) is Prometheus 2's trained relative-grading format byte for
byte (judge/formats.py; the rubric is the `criteria` text): feedback, then "[RESULT] A" or "B" (no tie),
parsed end-anchored; decoding T 1.0, 1024 tokens (prometheus-eval's; its top_p 0.9 and repetition
penalty 1.03 are not sent).
`format=mtbench` (preset `official`) is MT-Bench's judge format (FastChat llm_judge, pair-v2): the
question and both answers between its "[The Start of Assistant A's Answer]" markers, an explanation,
then "[[A]]", "[[B]]" or "[[C]]" (tie), parsed end-anchored, at T 0 with 2048 tokens; a row with a
reference answer shows it before the answers (pair-math-v1's layout); its system
prompt's prose is our own wording (judge/formats.py). `pairwise_pref` is not read in either format.
Deviations of the default `format=ours`: the prompt asks for the verdict alone on the first line (the
parser also accepts MT-Bench's [[A]]/[[B]]/[[C]] and "[RESULT] A"); an inconsistent pair is a tie by default, as in the
paper's adjusted win rate, or `inconsistent=first` (keep the A-B order's verdict) or `null`; a pair
with an unparseable verdict in either order is null with its parse status, never a default. With
logprobs, `pairwise_pref` (= `pairwise_expected`) is P(B better) from the verdict token, averaged over
both orders. `-o score auto` (default) keeps the verdicts where both orders parse, else takes
`pairwise_score` = that probability (winner: the nearest of A / tie / B); `text` never does; `expected`
always does where logprobs came back. `-o constrained auto` asks for JSON {verdict, explanation}
(explanation first under the released formats) where the backend constrains output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from instructkit.io import INSTRUCTION_FIELD
from instructkit.registry import method
from instructkit.runner import RunContext
from instructkit.templates import render

from .common import chat_messages, finish, llm_of, triplet, use_constraint, with_json_reply
from .formats import MTBENCH_SYSTEM, PROMETHEUS_REL_SYSTEM, mtbench_prompt, prometheus_relative_prompt
from .parsing import (
    OK,
    check_score_mode,
    first_position,
    parse_json_verdict,
    parse_verdict,
    parse_verdict_tail,
    report,
    source_counts,
    usage_columns,
    verdict_position,
    verdict_preference,
)

PREFIX = "pairwise"
FORMATS = ("ours", "mtbench", "prometheus")
PROMETHEUS_CRITERIA = "Which response carries out the instruction more helpfully, correctly and completely?"
COLUMNS = [
    f"{PREFIX}_{c}"
    for c in (
        "winner",
        "score",
        "first",
        "second",
        "consistent",
        "pref",
        "expected",
        "score_source",
        "raw",
        "parse",
        "tokens",
        "cost",
        "calls",
    )
]
VALUE = {"A": 0.0, "tie": 0.5, "B": 1.0}  # pairwise_score: how strongly B is preferred


@dataclass
class PairwiseOptions:
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "official": {"format": "mtbench", "temperature": 0.0, "max_tokens": 2048},
        "prometheus": {"format": "prometheus", "temperature": 1.0, "max_tokens": 1024},
    }

    format: str = "ours"  # ours (verdict first) | mtbench (why, then [[A]]/[[B]]/[[C]]) | prometheus ([RESULT] A|B)
    response_a_field: str = "response_a"
    response_b_field: str = "response_b"
    reference_field: str = "reference"  # mtbench/prometheus: a reference answer shown when the row has one
    criteria: str | None = None
    inconsistent: str = "tie"  # tie | first | null
    temperature: float = 0.0
    max_tokens: int = 128
    logprobs: bool = True  # also report pairwise_pref, P(B better) from the verdict token's top_logprobs
    top_logprobs: int = 10
    score: str = "auto"  # text (verdicts, the paper) | expected (pairwise_expected) | auto (verdicts, else expected)
    constrained: str = "off"  # off: the format's free text | auto: JSON {verdict: A|B|tie, explanation} where supported
    template: str | None = None
    system_template: str | None = None


def _label(value: float) -> str:
    return {0.0: "A", 0.5: "tie", 1.0: "B"}[value]


def combine(first: str, second: str, inconsistent: str = "tie") -> tuple[str | None, bool]:
    """(winner, consistent) from the A-B order's verdict and the B-A order's verdict mapped back."""
    if first == second:
        return first, True
    if inconsistent == "tie":
        return "tie", False
    if inconsistent == "first":
        return first, False
    if inconsistent == "null":
        return None, False
    raise ValueError(f"inconsistent must be tie, first or null, not {inconsistent!r}")


@method("judge", PREFIX, options=PairwiseOptions, reads=(INSTRUCTION_FIELD, "{response_a_field}", "{response_b_field}"))
def pairwise(records: list[dict], ctx: RunContext) -> list[dict]:
    """Pairwise judge (A/B/tie) in both orders; reports position consistency."""
    opts = ctx.options or PairwiseOptions()
    llm = llm_of(ctx)
    if opts.format not in FORMATS:
        raise ValueError(f"pairwise: format must be one of {', '.join(FORMATS)}, not {opts.format!r}")
    trained = opts.format != "ours"  # a released judge's format: verdict at the end, read end-anchored
    if opts.system_template is not None or not trained:
        system = render("pairwise_system.jinja", path=opts.system_template)
    else:
        system = MTBENCH_SYSTEM if opts.format == "mtbench" else PROMETHEUS_REL_SYSTEM
    mode = check_score_mode(opts.score, PREFIX)
    constrained = use_constraint(llm, opts.constrained, PREFIX)
    fields = [("verdict", {"enum": ["A", "B", "tie"]}), ("explanation", {"type": "string"})]
    if trained:  # the explanation first, as the released formats put it
        fields.reverse()
    schema = {"type": "object", "properties": dict(fields), "required": [k for k, _ in fields],
              "additionalProperties": False}  # fmt: skip

    async def judge_order(instruction: str, a: str, b: str, reference: str = "") -> tuple[Any, Any]:
        if opts.format == "mtbench":
            user = mtbench_prompt(instruction, a, b, opts.criteria, reference)
        elif opts.format == "prometheus":
            user = prometheus_relative_prompt(instruction, a, b, opts.criteria or PROMETHEUS_CRITERIA, reference)
        else:
            user = render("pairwise.jinja", path=opts.template, instruction=instruction, response_a=a, response_b=b,
                          criteria=opts.criteria)  # fmt: skip
        msgs = chat_messages(system, user)
        lp = {"logprobs": True, "top_logprobs": opts.top_logprobs} if opts.logprobs and not trained else {}
        seed = {"seed": ctx.random_state} if opts.temperature > 0 else {}
        if constrained:
            msgs, lp = with_json_reply(msgs, schema), {**lp, "json_schema": schema}
        comp = await llm.achat(msgs, temperature=opts.temperature, max_tokens=opts.max_tokens, **seed, **lp)
        if constrained:
            parsed = parse_json_verdict(comp.text)
            pos = verdict_position(comp.logprobs, last=trained)
        else:
            parsed = parse_verdict_tail(comp.text, opts.format) if trained else parse_verdict(comp.text, prompt=user)
            pos = None if parsed.ok or trained else first_position(comp.logprobs)  # the verdict-first slot
        pref = verdict_preference(comp.logprobs, pos) if comp.logprobs and (pos is not None or parsed.ok) else None
        return comp, parsed, pref

    async def one(rec: dict) -> dict:
        instruction, inp, _ = triplet(rec)
        if inp:
            instruction = f"{instruction}\n\n{inp}"
        a, b = str(rec.get(opts.response_a_field) or ""), str(rec.get(opts.response_b_field) or "")
        reference = str(rec.get(opts.reference_field) or "")
        c1, p1, pref1 = await judge_order(instruction, a, b, reference)
        c2, p2, pref2 = await judge_order(instruction, b, a, reference)
        expected = (pref1 + (1.0 - pref2)) / 2 if pref1 is not None and pref2 is not None else None
        row: dict[str, Any] = {
            f"{PREFIX}_raw": [c1.text, c2.text],
            f"{PREFIX}_first": _label(p1.value) if p1.ok else None,
            f"{PREFIX}_second": _label(1.0 - p2.value) if p2.ok else None,  # mapped back to A-B labels
            f"{PREFIX}_pref": expected,  # P(B better), both orders (the swapped order's P(B) is P(A))
            f"{PREFIX}_expected": expected,
            f"{PREFIX}_score_source": "text",
            **usage_columns(PREFIX, [c1, c2]),
        }
        if expected is not None and (mode == "expected" or (mode == "auto" and not (p1.ok and p2.ok))):
            winner = min(VALUE, key=lambda k: (abs(VALUE[k] - expected), k))  # nearest of A / tie / B
            row.update({f"{PREFIX}_winner": winner, f"{PREFIX}_score": expected, f"{PREFIX}_consistent": None,
                        f"{PREFIX}_score_source": "expected", f"{PREFIX}_parse": OK})  # fmt: skip
            return row
        if not (p1.ok and p2.ok):
            bad = p1 if not p1.ok else p2
            row.update({f"{PREFIX}_winner": None, f"{PREFIX}_score": None, f"{PREFIX}_consistent": None,
                        f"{PREFIX}_score_source": None})  # fmt: skip
            row[f"{PREFIX}_parse"] = bad.status
            return row
        winner, consistent = combine(row[f"{PREFIX}_first"], row[f"{PREFIX}_second"], opts.inconsistent)
        row.update(
            {
                f"{PREFIX}_winner": winner,
                f"{PREFIX}_score": VALUE[winner] if winner is not None else None,
                f"{PREFIX}_consistent": consistent,
                f"{PREFIX}_parse": OK if winner is not None else "inconsistent",
            }
        )
        return row

    out = finish(records, ctx.map(records, one, stage="compare"), "compare", PREFIX, COLUMNS)
    judged = [r[f"{PREFIX}_consistent"] for r in out if r.get(f"{PREFIX}_consistent") is not None]
    consistency = sum(judged) / len(judged) if judged else None
    extra = {"position_consistency": consistency, "inconsistent_as": opts.inconsistent, "score": mode,
             "constrained": constrained, "score_source": source_counts(out, PREFIX)}  # fmt: skip
    report(out, PREFIX, ctx, extra)
    return out
