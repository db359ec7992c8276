"""Threshold, top-k, ratio and random selection on any score column (no paper; the baselines).

Ties are broken by original index (a stable sort), NaN scores never pass a threshold and sort last.
The peers use pandas' default quicksort, whose tie order is unspecified; ours is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from instructkit.registry import method

from .common import as_indices, check_random_state, score_column, seed_of, stable_order, take


def threshold_select(
    scores: np.ndarray, threshold: float, above: bool = True, strict: bool = False, order: str = "score"
) -> np.ndarray:
    """Rows whose score passes `threshold` (>= or >, or <= / < with above=False).

    order="score": best first (stable); order="index": dataset order.
    """
    s = np.asarray(scores, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        if above:
            keep = s > threshold if strict else s >= threshold
        else:
            keep = s < threshold if strict else s <= threshold
    keep &= ~np.isnan(s)
    if order == "index":
        return np.flatnonzero(keep).astype(np.int64)
    ranked = stable_order(s, descending=above)
    return ranked[keep[ranked]]


def topk_select(scores: np.ndarray, k: int, descending: bool = True, order: str = "score") -> np.ndarray:
    """The k best rows (highest with descending=True); NaN rows only when nothing else is left."""
    ranked = stable_order(scores, descending=descending)[: max(0, int(k))]
    return np.sort(ranked) if order == "index" else ranked


def ratio_select(
    scores: np.ndarray, ratio: float, descending: bool = True, order: str = "score"
) -> np.ndarray:
    """The best int(N * ratio) rows (the Cherry/Superfiltering convention: floor, not round)."""
    if not 0 <= ratio <= 1:
        raise ValueError(f"ratio must be in [0, 1], got {ratio}")
    return topk_select(scores, int(len(scores) * ratio), descending, order)


def random_select(n: int, k: int, random_state: int | None = 0) -> np.ndarray:
    """k distinct rows uniformly at random (the baseline every report compares against)."""
    rng = check_random_state(random_state)
    return as_indices(rng.choice(n, size=min(int(k), n), replace=False))


@dataclass
class ThresholdOptions:
    score: str = "score"  # column (dotted path allowed)
    threshold: float = 0.0
    above: bool = True  # keep score >= threshold (False: keep score <= threshold)
    strict: bool = False  # > / < instead of >= / <=
    order: str = "score"  # score (best first) or index (dataset order)


@dataclass
class TopKOptions:
    score: str = "score"
    k: int = 1000
    descending: bool = True
    order: str = "score"


@dataclass
class RatioOptions:
    score: str = "score"
    ratio: float = 0.1
    descending: bool = True
    order: str = "score"


@dataclass
class RandomOptions:
    k: int = 1000
    random_state: int | None = None  # default: the run's seed


@method("select", "threshold", options=ThresholdOptions, needs_model=False)
def threshold(records: list[dict], ctx) -> list[dict]:
    """Keep rows whose score column passes a threshold (stable ties, NaN dropped)."""
    o = ctx.options or ThresholdOptions()
    return take(
        records, threshold_select(score_column(records, o.score), o.threshold, o.above, o.strict, o.order)
    )


@method("select", "topk", options=TopKOptions, needs_model=False)
def topk(records: list[dict], ctx) -> list[dict]:
    """Keep the k best rows by a score column (ties by original index)."""
    o = ctx.options or TopKOptions()
    return take(records, topk_select(score_column(records, o.score), o.k, o.descending, o.order))


@method("select", "ratio", options=RatioOptions, needs_model=False)
def ratio(records: list[dict], ctx) -> list[dict]:
    """Keep the best int(N * ratio) rows by a score column."""
    o = ctx.options or RatioOptions()
    return take(records, ratio_select(score_column(records, o.score), o.ratio, o.descending, o.order))


@method("select", "random", options=RandomOptions, needs_model=False)
def random_subset(records: list[dict], ctx) -> list[dict]:
    """Keep k rows uniformly at random (seeded): the baseline."""
    o = ctx.options or RandomOptions()
    return take(records, random_select(len(records), o.k, seed_of(ctx, o)))
