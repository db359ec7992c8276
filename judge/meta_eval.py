"""Judge meta-evaluation: run a judge on a labelled file and measure how far to trust it.

Method: standard agreement statistics as used to validate LLM judges (e.g. Zheng et al., MT-Bench,
arXiv 2306.05685): accuracy, Cohen's kappa, Spearman and Kendall (tau-b) correlations, position
consistency, parse-failure rate, calls, tokens and cost.
Conventions (no paper to deviate from): accuracy and kappa compare the judge's score rounded to
the nearest label with the label; correlations use the unrounded score; all four are computed over
rows the judge scored, and `accuracy_all` also counts unscored rows as wrong. Pairwise labels are
A, B or tie (0 / 1 / 0.5 are accepted too).
"""

from __future__ import annotations

import json
import math
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from instructkit.registry import get, method
from instructkit.run.runner import RunContext

PREFIX = "eval"
PAIR_LABELS = {
    "a": "A",
    "b": "B",
    "tie": "tie",
    "c": "tie",
    "0": "A",
    "0.0": "A",
    "1": "B",
    "1.0": "B",
    "0.5": "tie",
}
PAIR_VALUE = {"A": 0.0, "tie": 0.5, "B": 1.0}


@dataclass
class EvalOptions:
    judge: str = "rubric"  # the judge method to evaluate
    label_field: str = "label"
    judge_options: dict | None = None
    score_column: str | None = None  # default: <judge>_score (pairwise: pairwise_winner)
    kind: str = "auto"  # auto | pointwise | pairwise


def cohen_kappa(a: Sequence[Any], b: Sequence[Any]) -> float | None:
    """Cohen's kappa of two raters over the same items: (p_o - p_e) / (1 - p_e)."""
    n = len(a)
    if n == 0 or n != len(b):
        return None
    p_o = sum(x == y for x, y in zip(a, b)) / n
    ca, cb = Counter(a), Counter(b)
    p_e = sum(ca[k] * cb[k] for k in set(ca) | set(cb)) / (n * n)
    if math.isclose(p_e, 1.0):
        return None  # both raters used one and the same category: kappa is 0/0, undefined
    return (p_o - p_e) / (1 - p_e)


def _correlations(x: Sequence[float], y: Sequence[float]) -> tuple[float | None, float | None]:
    """(Spearman rho, Kendall tau-b), None when fewer than 2 rows or a constant side."""
    if len(x) < 2 or len(set(x)) < 2 or len(set(y)) < 2:
        return None, None
    from scipy.stats import kendalltau, spearmanr

    return float(spearmanr(x, y).statistic), float(kendalltau(x, y).statistic)


def nearest_label(value: float, labels: Sequence[float]) -> float:
    """The label closest to value (ties to the lower label)."""
    return min(labels, key=lambda lab: (abs(lab - value), lab))


def _agreement(
    kind: str,
    n: int,
    pred: Sequence[Any],
    gold: Sequence[Any],
    pred_values: Sequence[float],
    gold_values: Sequence[float],
) -> dict[str, Any]:
    """The shared metrics over the scored rows: labels for accuracy and kappa, values for correlations."""
    scored = len(pred)
    correct = sum(p == g for p, g in zip(pred, gold))
    spearman, kendall = _correlations(pred_values, gold_values)
    return {
        "kind": kind,
        "rows": n,
        "scored": scored,
        "parse_failure_rate": (n - scored) / n if n else None,
        "accuracy": correct / scored if scored else None,
        "accuracy_all": correct / n if n else None,
        "cohen_kappa": cohen_kappa(pred, gold) if scored else None,
        "spearman": spearman,
        "kendall": kendall,
    }


def pointwise_metrics(pred: Sequence[float | None], gold: Sequence[float]) -> dict[str, Any]:
    """Agreement of judge scores with numeric labels."""
    rows = [(p, float(g)) for p, g in zip(pred, gold) if p is not None]
    labels = sorted({float(g) for g in gold})
    golds = [g for _, g in rows]
    out = _agreement(
        "pointwise",
        len(gold),
        [nearest_label(p, labels) for p, _ in rows],
        golds,
        [p for p, _ in rows],
        golds,
    )
    out["mae"] = sum(abs(p - g) for p, g in rows) / len(rows) if rows else None
    return out


def pair_label(value: Any) -> str | None:
    if value is None:
        return None
    return PAIR_LABELS.get(str(value).strip().lower())


def pairwise_metrics(
    pred: Sequence[str | None], gold: Sequence[Any], consistent: Sequence[bool | None] | None = None
) -> dict[str, Any]:
    """Agreement of pairwise verdicts with A/B/tie labels, plus position consistency."""
    rows = [(pair_label(p), pair_label(g)) for p, g in zip(pred, gold)]
    if any(g is None for _, g in rows):
        raise ValueError("pairwise labels must be A, B or tie")
    scored = [(p, g) for p, g in rows if p is not None]
    out = _agreement(
        "pairwise",
        len(gold),
        [p for p, _ in scored],
        [g for _, g in scored],
        [PAIR_VALUE[p] for p, _ in scored],
        [PAIR_VALUE[g] for _, g in scored],
    )
    judged = [c for c in (consistent or []) if c is not None]
    out["position_consistency"] = sum(judged) / len(judged) if judged else None
    return out


def evaluate(records: list[dict], ctx: RunContext) -> tuple[list[dict], dict[str, Any]]:
    """Run the judge named in ctx.options on labelled records; (judged records, metrics report)."""
    opts = ctx.options or EvalOptions()
    missing = [i for i, r in enumerate(records) if r.get(opts.label_field) is None]
    if missing:
        raise ValueError(
            f"eval: {len(missing)} rows lack the label field {opts.label_field!r} (first: row {missing[0]})"
        )
    info = get("judge", opts.judge)
    kind = opts.kind if opts.kind != "auto" else ("pairwise" if opts.judge == "pairwise" else "pointwise")
    before = ctx.llm.stats.as_dict() if ctx.llm is not None else {}
    sub = RunContext(
        llm=ctx.llm,
        options=info.make_options(opts.judge_options or {}),
        method=opts.judge,
        work_dir=ctx.work_dir,
        concurrency=ctx.concurrency,
        random_state=ctx.random_state,
        progress=ctx.progress,
        stats=ctx.stats,
    )
    judged = info.func(records, sub)
    gold = [r[opts.label_field] for r in records]
    if kind == "pairwise":
        column = opts.score_column or f"{opts.judge}_winner"
        metrics = pairwise_metrics(
            [r.get(column) for r in judged], gold, [r.get(f"{opts.judge}_consistent") for r in judged]
        )
    else:
        column = opts.score_column or f"{opts.judge}_score"
        metrics = pointwise_metrics([r.get(column) for r in judged], [float(g) for g in gold])
    after = ctx.llm.stats.as_dict() if ctx.llm is not None else {}
    metrics.update(
        {
            "judge": opts.judge,
            "score_column": column,
            "calls": after.get("calls", 0) - before.get("calls", 0),
            "cache_hits": after.get("cache_hits", 0) - before.get("cache_hits", 0),
            "tokens": sum(int(r.get(f"{opts.judge}_tokens") or 0) for r in judged),
            "cost": sum(float(r.get(f"{opts.judge}_cost") or 0.0) for r in judged),
            "parse_statuses": dict(Counter(str(r.get(f"{opts.judge}_parse")) for r in judged)),
        }
    )
    return judged, metrics


def format_report(metrics: dict[str, Any]) -> str:
    """A two-column text table of the metrics."""
    lines = []
    for key, value in metrics.items():
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        lines.append(f"{key:<22} {shown}")
    return "\n".join(lines)


@method("judge", PREFIX, options=EvalOptions, reads=("{label_field}",), cross_row="its metrics are computed over all rows")
def eval_judge(records: list[dict], ctx: RunContext) -> list[dict]:
    """Meta-evaluate a judge on labelled rows: accuracy, kappa, Spearman, Kendall, consistency, cost."""
    judged, metrics = evaluate(records, ctx)
    ctx.extras["eval_report"] = metrics
    if ctx.work_dir is not None:
        path = Path(ctx.work_dir) / "eval.report.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    if ctx.progress:
        print(format_report(metrics), file=sys.stderr)
    return judged
