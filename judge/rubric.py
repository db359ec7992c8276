"""Pointwise rubric judge: criteria + per-score descriptions, optional reference, any integer range.

Papers: Kim et al., "Prometheus 2" (arXiv 2405.01535) for the rubric format; Liu et al., "G-Eval"
(arXiv 2303.16634) for the probability-weighted score.
`format=prometheus` (preset `official`) is Prometheus 2's trained absolute-grading format byte for
byte (its system prompt, task description, "[criteria]" + "Score n:" rubric, reference answer when the
record has one), read at run time from the installed prometheus-eval package (judge/formats.py):
feedback, then "[RESULT] n" on 1-5. `-o parse official` (in the preset) reads the score as
prometheus-eval's parser does (held to its golden outputs, tests/golden/prometheus); `parse strict` (the
default) takes only "[RESULT] n" (or "Score: n") ending the reply and also reads "[RESULT] 4." and
"**[RESULT] 4**", which prometheus-eval rejects and retries. The preset's decoding is prometheus-eval's
(T 1.0, top_p 0.9, 1024 tokens) except its repetition penalty 1.03, which the OpenAI API lacks; its up to
10 retries of an unparsed reply are not made (the row is null with its status).
Deviations of the default `format=ours`: the score comes first (alone on the first line) and the
justification after, not feedback then "[RESULT] n": that puts the score at a known token so its
top_logprobs give the expected value Σ s·p(s) (with argmax and entropy); without logprobs the parsed
integer is used. (Under `prometheus` the expectation is read at the final score token.)
`-o score` picks what `rubric_score` is: `auto` (default) the parsed number, else the expectation;
`text` the parsed number only (Prometheus); `expected` the expectation where logprobs came back
(G-Eval's weighting). `-o constrained auto` asks for JSON whose score is an enum of lo..hi (after the
feedback under `prometheus`, first otherwise) where the backend constrains output.
Self-consistency (n samples) averages only valid parses and reports the spread and the valid count;
G-Eval's counting of unparseable samples as 0 is not copied. Our own prompt wording.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from instructkit.data.io import INSTRUCTION_FIELD, RESPONSE_FIELD
from instructkit.registry import method
from instructkit.run.runner import RunContext
from instructkit.shared.rows import (
    chat_messages,
    finish,
    llm_of,
    score_schema,
    triplet,
    use_constraint,
    with_json_reply,
)
from instructkit.shared.scores import (
    OK,
    check_score_mode,
    report,
    score_completion,
    score_result_completion,
    source_counts,
    usage_columns,
)
from instructkit.templates import render

from .formats import official_digests, prometheus_prompt, prometheus_strings, prometheus_system

PREFIX = "rubric"
FORMATS = ("ours", "prometheus")
COLUMNS = [
    f"{PREFIX}_{c}"
    for c in (
        "score",
        "raw",
        "parse",
        "parsed",
        "score_source",
        "text_parse",
        "expected",
        "argmax",
        "entropy",
        "score_mass",
        "n_valid",
        "std",
        "tokens",
        "cost",
        "calls",
    )
]

DEFAULT_CRITERIA = "Does the response carry out the instruction helpfully, correctly and completely?"
DEFAULT_DESCRIPTIONS_1_5 = [
    "Off-topic, wrong or harmful; it does not carry out the instruction.",
    "Touches the instruction but is mostly wrong, incomplete or unclear.",
    "Partly correct and useful, with notable errors or omissions.",
    "Correct and useful, with minor gaps or rough edges.",
    "Fully correct, complete and clear; nothing important is missing.",
]


@dataclass
class RubricOptions:
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "official": {"format": "prometheus", "parse": "official", "temperature": 1.0, "top_p": 0.9, "max_tokens": 1024},
    }

    format: str = (
        "ours"  # ours (score first, then why) | prometheus (Prometheus 2: feedback, then "[RESULT] n")
    )
    parse: str = "strict"  # prometheus: strict (the result ends the reply) | official (prometheus-eval's parser)
    criteria: str = DEFAULT_CRITERIA
    descriptions: list[str] | None = None  # one per score lo..hi (default: built-in 1-5 rubric)
    rubric_file: str | None = None  # JSON/YAML {"criteria": ..., "descriptions": {"1": ..., ...}}
    lo: int = 1
    hi: int = 5
    reference_field: str = "reference"  # used when the record has it
    response_field: str | None = None  # default: the record's output / first response
    n_samples: int = 1  # > 1: self-consistency, sampled at sample_temperature
    sample_temperature: float = 1.0
    logprobs: bool = True
    top_logprobs: int = 10
    score: str = "auto"  # text (parsed number) | expected (Σ s·p(s), G-Eval) | auto (text, else expected)
    constrained: str = (
        "off"  # off: the format's free text | auto: JSON, score restricted to lo..hi, where supported
    )
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 128
    template: str | None = None
    system_template: str | None = None


def load_rubric(opts: RubricOptions) -> tuple[str, list[tuple[int, str]]]:
    """(criteria, [(score, description)]) from the options, a rubric file or the defaults."""
    criteria, descriptions = opts.criteria, opts.descriptions
    if opts.rubric_file:
        text = Path(opts.rubric_file).read_text(encoding="utf-8")
        if opts.rubric_file.endswith((".yaml", ".yml")):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
        criteria = data.get("criteria", criteria)
        desc = data.get("descriptions")
        if isinstance(desc, dict):
            descriptions = [desc.get(str(s), desc.get(s, "")) for s in range(opts.lo, opts.hi + 1)]
        elif desc is not None:
            descriptions = list(desc)
    scores = list(range(opts.lo, opts.hi + 1))
    if descriptions is None:
        if (opts.lo, opts.hi) == (1, 5):
            descriptions = DEFAULT_DESCRIPTIONS_1_5
        else:
            return criteria, [
                (opts.lo, "the worst possible response"),
                (opts.hi, "the best possible response"),
            ]
    if len(descriptions) != len(scores):
        raise ValueError(
            f"rubric: {len(descriptions)} descriptions for {len(scores)} scores {opts.lo}-{opts.hi}"
        )
    return criteria, list(zip(scores, descriptions))


def rubric_messages(rec: dict, opts: RubricOptions, rubric: tuple[str, list[tuple[int, str]]]) -> list[dict]:
    instruction, inp, output = triplet(rec)
    if inp:
        instruction = f"{instruction}\n\n{inp}"
    if opts.response_field:
        output = str(rec.get(opts.response_field) or "")
    reference = str(rec.get(opts.reference_field) or "")
    if opts.format == "prometheus":
        user = prometheus_prompt(instruction, output, rubric[0], [d for _, d in rubric[1]], reference)
        system = prometheus_system() if opts.system_template is None else render("", path=opts.system_template)
        return chat_messages(system, user)
    user = render(
        "rubric.jinja",
        path=opts.template,
        instruction=instruction,
        response=output,
        reference=reference,
        criteria=rubric[0],
        descriptions=rubric[1],
        lo=opts.lo,
        hi=opts.hi,
    )
    return chat_messages(render("rubric_system.jinja", path=opts.system_template), user)


def summarise(prefix: str, comps: list[Any], samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Row columns from scored samples: mean of valid values, spread, first sample's details."""
    valid = [s["value"] for s in samples if s["value"] is not None]
    first = samples[0]
    row: dict[str, Any] = {
        f"{prefix}_score": statistics.fmean(valid) if valid else None,
        f"{prefix}_raw": comps[0].text,
        f"{prefix}_parse": OK if valid else first["status"],
        f"{prefix}_parsed": first["parsed"],
        f"{prefix}_score_source": first["source"] if len(samples) == 1 else ("mean" if valid else None),
        f"{prefix}_text_parse": first["text_status"],
        f"{prefix}_expected": None,
        f"{prefix}_argmax": None,
        f"{prefix}_entropy": None,
        f"{prefix}_score_mass": None,
        f"{prefix}_n_valid": len(valid),
        f"{prefix}_std": statistics.pstdev(valid) if len(valid) > 1 else (0.0 if valid else None),
        **usage_columns(prefix, comps),
    }
    if first["exp"] is not None and first["exp"].status == OK:  # beside the score, whichever mode
        row.update(first["exp"].columns(prefix))
    if len(samples) > 1:
        row[f"{prefix}_samples"] = [s["value"] for s in samples]
        row[f"{prefix}_raw_all"] = [c.text for c in comps]
    return row


def _reads(opts: RubricOptions | None) -> tuple[str, ...]:
    response = opts.response_field if opts is not None and opts.response_field else RESPONSE_FIELD
    return (INSTRUCTION_FIELD, response)


@method("judge", PREFIX, options=RubricOptions, reads=_reads)
def rubric(records: list[dict], ctx: RunContext) -> list[dict]:
    """Rubric judge: criteria + score descriptions, logprob-weighted score, optional n-sample mean."""
    opts = ctx.options or RubricOptions()
    llm = llm_of(ctx)
    if opts.format not in FORMATS:
        raise ValueError(f"rubric: format must be one of {', '.join(FORMATS)}, not {opts.format!r}")
    if opts.format == "prometheus" and (opts.lo, opts.hi) != (1, 5):
        raise ValueError(f"rubric: format=prometheus grades on 1-5, not {opts.lo}-{opts.hi}")
    if opts.parse not in ("strict", "official"):
        raise ValueError(f"rubric: parse must be strict or official, not {opts.parse!r}")
    if opts.format == "prometheus":
        prometheus_strings()  # read and checked now: without prometheus-eval the run stops before any call
    rubric_spec = load_rubric(opts)
    mode = check_score_mode(opts.score, PREFIX)
    feedback_first = opts.format == "prometheus"
    schema = score_schema(
        list(range(opts.lo, opts.hi + 1)), explanation="feedback", score_first=not feedback_first
    )
    constrained = use_constraint(llm, opts.constrained, PREFIX)
    params: dict[str, Any] = {"max_tokens": opts.max_tokens}
    if constrained:
        params["json_schema"] = schema
    if opts.top_p != 1.0:
        params["top_p"] = opts.top_p
    if opts.logprobs:
        params.update(logprobs=True, top_logprobs=opts.top_logprobs)

    async def one(rec: dict) -> dict:
        msgs = rubric_messages(rec, opts, rubric_spec)
        prompt = msgs[-1]["content"]
        if constrained:
            msgs = with_json_reply(msgs, schema)
        if opts.n_samples > 1:
            comps = await llm.asample(
                msgs, opts.n_samples, temperature=opts.sample_temperature, seed=ctx.random_state, **params
            )
        else:
            seed = {"seed": ctx.random_state} if opts.temperature > 0 else {}
            comps = [await llm.achat(msgs, temperature=opts.temperature, **seed, **params)]
        key = "score" if constrained else None
        if feedback_first:
            official = opts.parse == "official"
            samples = [score_result_completion(c, opts.lo, opts.hi, mode=mode, json_key=key, official=official)
                       for c in comps]  # fmt: skip
        else:
            samples = [score_completion(c, opts.lo, opts.hi, prompt, mode=mode, json_key=key) for c in comps]
        return summarise(PREFIX, comps, samples)

    out = finish(records, ctx.map(records, one, stage="grade"), "grade", PREFIX, COLUMNS)
    extra = {
        "scale": [opts.lo, opts.hi],
        "n_samples": opts.n_samples,
        "score": mode,
        "constrained": constrained,
        "parse": opts.parse,
    }
    if opts.format == "prometheus":  # which official text was sent, by its digests
        extra["official_text_sha256"] = official_digests("prometheus")
    report(out, PREFIX, ctx, {**extra, "score_source": source_counts(out, PREFIX)})
    return out
