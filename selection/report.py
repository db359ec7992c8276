"""Diversity and coverage report for a selection, beside a random subset of the same size (no single paper).

Metrics on L2-normalised vectors with cosine distance d = 1 - cos (use one fixed embedder for every
selection, not the selector's own): covering radius max_x min_s d(x, s) (the k-center objective)
with its mean and 95th percentile; facility location sum_x max_s cos(x, s) (also per row); mean
nearest-neighbour distance inside S; mean pairwise distance (closed form); Vendi score (Friedman &
Dieng 2023) with the cosine kernel through the dual d x d matrix X^T X / n (same non-zero spectrum
as K / n, O(n d^2)); cluster coverage and KL(S || D) over a fixed-seed KMeans of D; InsTag tag
coverage and mean tag count; distinct-1/2 (lowercase whitespace tokens); the score distribution.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from instructkit.registry import extension

from .basic import random_select
from .common import Matmul, as_indices, l2_normalize, row_blocks
from .instag import _norm_tags, tag_coverage


def max_similarity_to(
    x: np.ndarray, s: np.ndarray, mm: Matmul | None = None, exclude_self: bool = False
) -> np.ndarray:
    """For each row of x, the max cosine to the rows of s (both normalised), in blocks."""
    mm = mm or Matmul("auto")
    out = np.empty(len(x), dtype=np.float64)
    st = mm.to_dev(s)
    step = max(64, (1 << 22) // max(1, len(s)))
    for lo, hi in row_blocks(len(x), step):
        sim = mm.abt(x[lo:hi], st)
        if exclude_self:
            sim[np.arange(hi - lo), np.arange(lo, hi)] = -np.inf
        out[lo:hi] = sim.max(axis=1)
    return out


def vendi_score_dual(x: np.ndarray) -> float:
    """Vendi score of the cosine kernel from the d x d dual (x rows normalised inside)."""
    xn = l2_normalize(np.asarray(x, dtype=np.float64))
    n = len(xn)
    if n == 0:
        return 0.0
    w = np.linalg.eigvalsh(xn.T @ xn / n)
    w = w[w > 0]
    return float(np.exp(-(w * np.log(w)).sum()))


def mean_pairwise_cosine_distance(x: np.ndarray) -> float:
    """(2 / (n(n-1))) sum_{i<j} (1 - cos) in closed form from the sum of normalised rows."""
    xn = l2_normalize(np.asarray(x, dtype=np.float64))
    n = len(xn)
    if n < 2:
        return 0.0
    total = xn.sum(axis=0)
    off_diag = float(total @ total) - float(np.einsum("ij,ij->", xn, xn))
    return 1.0 - off_diag / (n * (n - 1))


def distinct_n(texts: Iterable[str], n: int) -> float:
    """#unique n-grams / #n-grams over all texts (lowercase whitespace tokens; 0 when none)."""
    grams: list[tuple[str, ...]] = []
    for t in texts:
        toks = str(t).lower().split()
        grams.extend(tuple(toks[i : i + n]) for i in range(len(toks) - n + 1))
    return len(set(grams)) / len(grams) if grams else 0.0


def score_summary(scores: np.ndarray) -> dict[str, float]:
    s = np.asarray(scores, dtype=np.float64)
    ok = s[~np.isnan(s)]
    if len(ok) == 0:
        return {"n_nan": int(len(s))}
    q = np.percentile(ok, [0, 25, 50, 75, 100])
    return {
        "mean": float(ok.mean()),
        "std": float(ok.std()),
        "min": float(q[0]),
        "p25": float(q[1]),
        "median": float(q[2]),
        "p75": float(q[3]),
        "max": float(q[4]),
        "n_nan": int(len(s) - len(ok)),
    }


def cluster_labels(emb: np.ndarray, n_clusters: int = 100, random_state: int = 0) -> np.ndarray:
    """Fixed-seed clusters of the whole pool (MiniBatchKMeans above 100k rows)."""
    from sklearn.cluster import KMeans, MiniBatchKMeans

    x = l2_normalize(np.asarray(emb, dtype=np.float32))
    k = min(n_clusters, len(x))
    cls = MiniBatchKMeans if len(x) > 100_000 else KMeans
    return cls(n_clusters=k, random_state=random_state, n_init=1).fit_predict(x)


def cluster_stats(labels: np.ndarray, idx: np.ndarray) -> dict[str, float]:
    labels = np.asarray(labels)
    uniq, pool_counts = np.unique(labels, return_counts=True)
    sel = labels[as_indices(idx)]
    sel_counts = np.array([(sel == u).sum() for u in uniq], dtype=np.float64)
    p = sel_counts / max(1, sel_counts.sum())
    q = pool_counts / pool_counts.sum()
    nz = p > 0
    return {
        "k": int(len(uniq)),
        "coverage": float(nz.sum() / len(uniq)),
        "kl_to_pool": float((p[nz] * np.log(p[nz] / q[nz])).sum()),
        "entropy": float(-(p[nz] * np.log(p[nz])).sum()),
    }


def diversity_report(
    emb: np.ndarray,
    idx: Sequence[int] | np.ndarray,
    scores: np.ndarray | None = None,
    tags: Sequence[Any] | None = None,
    texts: Sequence[str] | None = None,
    labels: np.ndarray | None = None,
    device: str | None = "auto",
) -> dict[str, Any]:
    """All metrics for one selection `idx` of the pool `emb` (labels: precomputed `cluster_labels`)."""
    idx = as_indices(idx)
    x = l2_normalize(emb, np.dtype(np.float32))
    mm = Matmul(device)
    out: dict[str, Any] = {"n": int(len(idx)), "pool": int(len(x))}
    if len(idx):
        s = x[idx]
        best = max_similarity_to(x, s, mm)
        dist = np.clip(1.0 - best, 0, None)
        out["covering_radius"] = float(dist.max())
        out["coverage_mean"] = float(dist.mean())
        out["coverage_p95"] = float(np.percentile(dist, 95))
        out["facility_location"] = float(best.sum())
        out["facility_location_mean"] = float(best.mean())
        if len(idx) > 1:
            nn = max_similarity_to(s, s, mm, exclude_self=True)
            out["mean_nn_distance"] = float(np.clip(1.0 - nn, 0, None).mean())
        out["mean_pairwise_distance"] = mean_pairwise_cosine_distance(s)
        out["vendi"] = vendi_score_dual(s)
    if labels is not None:
        out["clusters"] = cluster_stats(labels, idx)
    if tags is not None:
        out["tag_coverage"] = tag_coverage(tags, idx)
        out["mean_tags"] = float(np.mean([len(_norm_tags(tags[i], True)) for i in idx])) if len(idx) else 0.0
    if texts is not None:
        sel_texts = [texts[i] for i in idx]
        out["distinct_1"] = distinct_n(sel_texts, 1)
        out["distinct_2"] = distinct_n(sel_texts, 2)
    if scores is not None:
        out["score"] = score_summary(np.asarray(scores, dtype=np.float64)[idx])
    return out


@extension("select.compare_with_random")
def compare_with_random(
    emb: np.ndarray,
    idx: Sequence[int] | np.ndarray,
    random_state: int = 0,
    n_clusters: int = 100,
    **kw: Any,
) -> dict[str, dict[str, Any]]:
    """{"selection": report, "random": report of a random subset of the same size}."""
    idx = as_indices(idx)
    if kw.get("labels") is None and n_clusters:
        kw["labels"] = cluster_labels(emb, n_clusters, random_state)
    rand = random_select(len(emb), len(idx), random_state)
    return {"selection": diversity_report(emb, idx, **kw), "random": diversity_report(emb, rand, **kw)}


@extension("select.flatten_report")
def flatten(report: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in report.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


@extension("select.report_table")
def format_table(reports: dict[str, dict[str, Any]]) -> str:
    """A plain-text table, one column per named report, one row per metric."""
    flat = {name: flatten(r) for name, r in reports.items()}
    metrics: list[str] = []
    for r in flat.values():
        metrics.extend(m for m in r if m not in metrics)
    names = list(flat)
    width = max([len(m) for m in metrics] + [6])
    cols = [max(10, len(n)) for n in names]
    lines = [" ".join([f"{'metric':<{width}}"] + [f"{n:>{c}}" for n, c in zip(names, cols)])]
    for m in metrics:
        cells = []
        for n, c in zip(names, cols):
            v = flat[n].get(m, "")
            cells.append(f"{v:>{c}.4g}" if isinstance(v, float) else f"{v!s:>{c}}")
        lines.append(" ".join([f"{m:<{width}}"] + cells))
    return "\n".join(lines)


def report_for_records(
    records: list[dict],
    idx: Sequence[int] | np.ndarray,
    emb: np.ndarray,
    score: str | None = None,
    tags: str | None = None,
    text_field: str = "output",
    random_state: int = 0,
    n_clusters: int = 100,
) -> dict[str, dict[str, Any]]:
    """Selection vs random report from records (for `instructkit select ... --report`)."""
    from instructkit.data.io import response_of

    from .common import score_column

    kw: dict[str, Any] = {}
    if score:
        kw["scores"] = score_column(records, score)
    if tags:
        kw["tags"] = [r.get(tags) for r in records]
    kw["texts"] = [str(r.get(text_field) or "") if text_field in r else response_of(r) for r in records]
    return compare_with_random(emb, idx, random_state, n_clusters, **kw)


@extension("select.report")
def selection_report(
    records: list[dict], idx: Sequence[int], ctx: Any, options: Any, score: str | None = None
) -> dict[str, dict[str, Any]]:
    """The selector's pick beside a random subset of the same size, on the vectors its options name (or
    the default encoder's): what `select --report` prints and a pipeline's card shows."""
    from .embed import load_embeddings

    emb = load_embeddings(records, ctx, options)
    return report_for_records(records, idx, emb, score=score, random_state=ctx.random_state)
