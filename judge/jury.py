"""Jury: several judge models score the same items; mean, median, majority or weighted vote.

Paper: Verga et al., "Replacing Judges with Juries: Evaluating LLM Generations with a Panel of Diverse
Models" (PoLL, arXiv 2404.18796).
Deviations: any registered judge can sit on the jury (rubric by default) with its own options; every
member is derived from the run's model (`LLM.derive`), so dry run, --max-cost, rate limits, retries,
batch mode and call counts cover the whole jury; every member's score, parse status and raw text
are kept per row. Only valid member scores are pooled; a row with none is null. Majority votes on a
half-point grid (so pairwise 0 / 0.5 / 1 and AlpaGasus half points vote as themselves); a tied vote
is the mean of the tied values (a 1-1 A/B split is a tie).
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field

from instructkit.credentials import redact
from instructkit.models import LLM
from instructkit.registry import get, method
from instructkit.run.runner import RunContext
from instructkit.shared.scores import OK, report

PREFIX = "jury"
AGGREGATES = ("mean", "median", "majority", "weighted")


@dataclass
class JuryOptions:
    models: list[str] = field(default_factory=list)  # model specs; empty: the run's own model only
    judge: str = "rubric"  # the judge method each member runs
    judge_options: dict | None = None
    aggregate: str = "mean"  # mean | median | majority | weighted
    weights: list[float] | None = None  # one per model, for aggregate=weighted
    score_column: str | None = None  # default: <judge>_score


def aggregate(
    values: list[float | None], how: str, weights: list[float] | None = None
) -> tuple[float | None, float]:
    """(pooled value, agreement) over the valid values; agreement = share of valid votes for the
    majority value (1.0 when all agree), or for mean/median the share within 0.5 of the result."""
    pairs = [(v, (weights[i] if weights else 1.0)) for i, v in enumerate(values) if v is not None]
    if not pairs:
        return None, 0.0
    vals = [v for v, _ in pairs]
    if how == "mean":
        result = statistics.fmean(vals)
    elif how == "median":
        result = float(statistics.median(vals))
    elif how == "weighted":
        total = sum(w for _, w in pairs)
        if total <= 0:
            raise ValueError("jury: weights of the valid members sum to zero")
        result = sum(v * w for v, w in pairs) / total
    elif how == "majority":
        votes = Counter(round(v * 2) / 2 for v in vals)
        top = max(votes.values())
        tied = sorted(v for v, n in votes.items() if n == top)
        result = statistics.fmean(tied)
        return result, top / len(vals)
    else:
        raise ValueError(f"jury: aggregate must be one of {AGGREGATES}, not {how!r}")
    return result, sum(abs(v - result) <= 0.5 for v in vals) / len(vals)


def _reads(opts: JuryOptions | None) -> tuple[str, ...]:
    """What the member judge reads, with its options."""
    opts = opts or JuryOptions()
    info = get("judge", opts.judge)
    return tuple("|".join(alts) for alts in info.fields_read(info.make_options(opts.judge_options or {})))


@method("judge", PREFIX, options=JuryOptions, reads=_reads)
def jury(records: list[dict], ctx: RunContext) -> list[dict]:
    """Jury: several judge models on the same rows, pooled by mean/median/majority/weighted."""
    opts = ctx.options or JuryOptions()
    if opts.aggregate not in AGGREGATES:
        raise ValueError(f"jury: aggregate must be one of {AGGREGATES}, not {opts.aggregate!r}")
    specs = list(opts.models) or ([ctx.llm.spec] if ctx.llm is not None else [])
    if not specs:
        raise ValueError("jury needs models (-o models=a,b) or a --model")
    if opts.weights is not None and len(opts.weights) != len(specs):
        raise ValueError(f"jury: {len(opts.weights)} weights for {len(specs)} models")
    info = get("judge", opts.judge)
    column = opts.score_column or f"{opts.judge}_score"
    members: list[tuple[str, list[dict]]] = []
    # Members come from the run's model: one dry run, budget, rate limits, retry policy, batch
    # collector and call statistics for the whole jury.
    run_llm = ctx.llm if ctx.llm is not None else LLM(specs[0])
    for i, spec in enumerate(specs):
        llm = run_llm.derive(spec)
        sub = RunContext(
            llm=llm,
            options=info.make_options(opts.judge_options or {}),
            method=f"{PREFIX}.{i}.{opts.judge}",
            work_dir=ctx.work_dir,
            concurrency=ctx.concurrency,
            random_state=ctx.random_state,
            progress=ctx.progress,
            stats=ctx.stats,
        )
        shown = redact(spec)  # a key inside a member's URL never becomes a column name
        label = shown if shown not in [s for s, _ in members] else f"{shown}#{i}"
        members.append((label, info.func(records, sub)))
    out = []
    for r, rec in enumerate(records):
        values = [rows[r].get(column) for _, rows in members]
        value, agreement = aggregate(values, opts.aggregate, opts.weights)
        new = dict(rec)
        new.update(
            {
                f"{PREFIX}_score": value,
                f"{PREFIX}_agreement": agreement if value is not None else None,
                f"{PREFIX}_n_valid": sum(v is not None for v in values),
                f"{PREFIX}_scores": {m: rows[r].get(column) for m, rows in members},
                f"{PREFIX}_parses": {m: rows[r].get(f"{opts.judge}_parse") for m, rows in members},
                f"{PREFIX}_raws": {m: rows[r].get(f"{opts.judge}_raw") for m, rows in members},
                f"{PREFIX}_parse": OK if value is not None else "no_valid_member",
            }
        )
        out.append(new)
    report(
        out,
        PREFIX,
        ctx,
        {"judge": opts.judge, "aggregate": opts.aggregate, "models": [m for m, _ in members]},
    )
    return out
