"""Pairwise judge: A, B or tie, judged in both orders, with position consistency.

Paper: Zheng et al., "Judging LLM-as-a-Judge with MT-Bench and Chatbot Arena" (NeurIPS 2023, arXiv
2306.05685), the swap-and-compare protocol.
`format=prometheus` (preset `prometheus`) is Prometheus 2's trained relative-grading format byte for
byte, read from the installed prometheus-eval package (judge/formats.py; the rubric is the `criteria`
text): feedback, then "[RESULT] A" or "B" (no tie); decoding T 1.0, top_p 0.9, 1024 tokens
(prometheus-eval's defaults; its repetition penalty 1.03 has no OpenAI parameter and is not sent).
`format=mtbench` is MT-Bench's judge format (FastChat llm_judge): the question and both answers between
its "[The Start of Assistant A's Answer]" markers, an explanation, then "[[A]]", "[[B]]" or "[[C]]" (tie),
at T 0 with 2048 tokens under the preset `official`; `-o prompts official` (in the preset) sends FastChat's
pair-v2 byte for byte, or pair-math-v1 with the reference answer when the row has a reference field
(FastChat's math/reasoning/coding questions), read from FastChat's judge_prompts.jsonl (formats.py says
where); `prompts ours` is our own wording of the same layout. `-o parse official` (both presets) reads
verdicts as the official code does: FastChat's first of `[[A]]`, `[[B]]`, `[[C]]` anywhere in the reply,
checked in that order (a quoted format line decides), prometheus-eval's "[RESULT] A|B" ending any line;
`parse strict` (the default) takes only a verdict that ends the reply. Held to golden outputs of the
official code (tests/golden/mtbench, tests/golden/prometheus). `pairwise_pref` is not read in either format.
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

from instructkit.data.io import INSTRUCTION_FIELD
from instructkit.registry import method
from instructkit.run.runner import RunContext
from instructkit.shared.rows import chat_messages, finish, llm_of, triplet, use_constraint, with_json_reply
from instructkit.shared.scores import (
    OK,
    check_score_mode,
    first_position,
    parse_json_verdict,
    parse_prometheus_verdict,
    parse_verdict,
    parse_verdict_fastchat,
    parse_verdict_tail,
    report,
    source_counts,
    usage_columns,
    verdict_position,
    verdict_preference,
)
from instructkit.templates import render

from .formats import (
    MTBENCH_SYSTEM,
    fastchat_pair_prompt,
    fastchat_prompts,
    mtbench_prompt,
    official_digests,
    prometheus_relative_prompt,
    prometheus_strings,
    prometheus_system,
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
        "official": {"format": "mtbench", "prompts": "official", "parse": "official", "temperature": 0.0,
                     "max_tokens": 2048},
        "prometheus": {"format": "prometheus", "parse": "official", "temperature": 1.0, "top_p": 0.9,
                       "max_tokens": 1024},
    }

    format: str = "ours"  # ours (verdict first) | mtbench (why, then [[A]]/[[B]]/[[C]]) | prometheus ([RESULT] A|B)
    response_a_field: str = "response_a"
    response_b_field: str = "response_b"
    reference_field: str = "reference"  # mtbench/prometheus: a reference answer shown when the row has one
    criteria: str | None = None
    prompts: str = "ours"  # mtbench: ours (our wording) | official (FastChat's pair-v2 / pair-math-v1, read at run time)
    fastchat_prompts: str | None = None  # path to FastChat's llm_judge/data/judge_prompts.jsonl (prompts official)
    parse: str = "strict"  # mtbench/prometheus: strict (the verdict ends the reply) | official (the official parser)
    inconsistent: str = "tie"  # tie | first | null
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 128
    logprobs: bool = True  # also report pairwise_pref, P(B better) from the verdict token's top_logprobs
    top_logprobs: int = 10
    score: str = "auto"  # text (verdicts, the paper) | expected (pairwise_expected) | auto (verdicts, else expected)
    constrained: str = "off"  # off: the format's free text | auto: JSON {verdict: A|B|tie, explanation} where supported
    template: str | None = None
    system_template: str | None = None


def read_verdict(text: str | None, fmt: str, parse: str = "strict"):
    """A released format's verdict: `strict` only where it ends the reply; `official` as the official
    code reads it (FastChat's `[[A]]`/`[[B]]`/`[[C]]` anywhere, prometheus-eval's line-end "[RESULT] X")."""
    if parse == "official":
        return parse_verdict_fastchat(text) if fmt == "mtbench" else parse_prometheus_verdict(text)
    return parse_verdict_tail(text, fmt)


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
    if opts.prompts not in ("ours", "official") or opts.parse not in ("strict", "official"):
        raise ValueError(f"pairwise: prompts must be ours|official and parse strict|official (got {opts.prompts}, {opts.parse})")
    trained = opts.format != "ours"  # a released judge's format: verdict at the end, read end-anchored
    official_prompts = opts.format == "mtbench" and opts.prompts == "official"
    if official_prompts:
        if opts.criteria:
            raise ValueError("pairwise: FastChat's prompts (prompts=official) have no criteria; leave -o criteria out")
        fastchat_prompts(opts.fastchat_prompts)  # read and checked now: a missing file stops before any call
    if opts.format == "prometheus":
        prometheus_strings()  # read and checked now: without prometheus-eval the run stops before any call
    if opts.system_template is not None or not trained:
        system = render("pairwise_system.jinja", path=opts.system_template)
    else:
        system = MTBENCH_SYSTEM if opts.format == "mtbench" else prometheus_system(relative=True)
    mode = check_score_mode(opts.score, PREFIX)
    constrained = use_constraint(llm, opts.constrained, PREFIX)
    fields = [("verdict", {"enum": ["A", "B", "tie"]}), ("explanation", {"type": "string"})]
    if trained:  # the explanation first, as the released formats put it
        fields.reverse()
    schema = {"type": "object", "properties": dict(fields), "required": [k for k, _ in fields],
              "additionalProperties": False}  # fmt: skip

    async def judge_order(instruction: str, a: str, b: str, reference: str | None) -> tuple[Any, Any, Any]:
        sys_text = system
        if official_prompts:
            fc_system, user = fastchat_pair_prompt(instruction, a, b, reference, opts.fastchat_prompts)
            sys_text = fc_system if opts.system_template is None else system
        elif opts.format == "mtbench":
            user = mtbench_prompt(instruction, a, b, opts.criteria, reference or "")
        elif opts.format == "prometheus":
            user = prometheus_relative_prompt(instruction, a, b, opts.criteria or PROMETHEUS_CRITERIA, reference or "")
        else:
            user = render("pairwise.jinja", path=opts.template, instruction=instruction, response_a=a, response_b=b,
                          criteria=opts.criteria)  # fmt: skip
        msgs = chat_messages(sys_text, user)
        lp = {"logprobs": True, "top_logprobs": opts.top_logprobs} if opts.logprobs and not trained else {}
        sampling = {"seed": ctx.random_state} if opts.temperature > 0 else {}
        if opts.top_p != 1.0:
            sampling["top_p"] = opts.top_p
        if constrained:
            msgs, lp = with_json_reply(msgs, schema), {**lp, "json_schema": schema}
        comp = await llm.achat(msgs, temperature=opts.temperature, max_tokens=opts.max_tokens, **sampling, **lp)
        if constrained:
            parsed = parse_json_verdict(comp.text)
            pos = verdict_position(comp.logprobs, last=trained)
        else:
            parsed = read_verdict(comp.text, opts.format, opts.parse) if trained else parse_verdict(comp.text, prompt=user)
            pos = None if parsed.ok or trained else first_position(comp.logprobs)  # the verdict-first slot
        pref = verdict_preference(comp.logprobs, pos) if comp.logprobs and (pos is not None or parsed.ok) else None
        return comp, parsed, pref

    async def one(rec: dict) -> dict:
        instruction, inp, _ = triplet(rec)
        if inp:
            instruction = f"{instruction}\n\n{inp}"
        a, b = str(rec.get(opts.response_a_field) or ""), str(rec.get(opts.response_b_field) or "")
        ref = rec.get(opts.reference_field)
        # FastChat picks the reference-based judge by question category; here a row that has the field
        # (even empty) is such a question. Our wording shows a reference only when it is not empty.
        reference = (str(ref) if ref is not None else None) if official_prompts else str(ref or "")
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
             "constrained": constrained, "score_source": source_counts(out, PREFIX), "parse": opts.parse}  # fmt: skip
    if official_prompts or opts.format == "prometheus":  # which official text was sent, by its digests
        extra["official_text_sha256"] = official_digests(opts.format, opts.fastchat_prompts)
    report(out, PREFIX, ctx, extra)
    return out
