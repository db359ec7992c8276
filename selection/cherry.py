"""Cherry pre-experience sampling (Li et al. 2023, "From Quantity to Quality: Boosting LLM Performance with Self-Guided Data Selection", 2308.12032).

KMeans (100 clusters, random_state 0) on the raw embeddings (the paper: a causal LM's mean last
hidden state of the templated instruction; `instructkit embed --encoder causal:SPEC:mean`), then
per cluster the middle-confidence rows: those with perplexity between the 25th and 75th
percentiles (numpy linear interpolation, bounds inclusive) taken *in dataset-index order* (not
sorted by perplexity, as `data_by_cluster.py` does despite its variable names), evenly spaced with
step len // n, first n. Clusters with fewer than n rows are taken whole. Output is clusters in
label order. This is the one implementation; the IFD scorer imports `middle_confidence_sample`.
K-means runs as the official script ran it (2023, sklearn < 1.4): `n_init=10`, `random_state=0`, both
options (`n_init=auto` is sklearn >= 1.4's single k-means++ run).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from instructkit.registry import method

from .common import EmbeddingOptions, as_indices, parse_n_init, score_column, seed_of, take
from .embed import load_embeddings


def middle_confidence_sample(
    labels: np.ndarray, confidences: np.ndarray, n: int = 10, low: float = 25, high: float = 75
) -> np.ndarray:
    """Per cluster (label order): up to n rows with confidence in [P_low, P_high], evenly spaced by index.

    The official script passes 25/75; its argparse defaults are 1/99.
    """
    labels = np.asarray(labels)
    conf = np.asarray(confidences, dtype=np.float64)
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    out: list[np.ndarray] = []
    for lab in np.unique(labels):
        members = np.flatnonzero(labels == lab)
        if len(members) < n:
            out.append(members)
            continue
        c = conf[members]
        lo, hi = np.percentile(c, low), np.percentile(c, high)
        middle = members[(c >= lo) & (c <= hi)]
        if len(middle) < n:
            out.append(middle)
        else:
            out.append(middle[:: len(middle) // n][:n])
    return as_indices(np.concatenate(out) if out else [])


def cherry_pre_select(
    emb: np.ndarray,
    confidences: np.ndarray,
    n_clusters: int = 100,
    n_per_cluster: int = 10,
    low: float = 25,
    high: float = 75,
    random_state: int | None = 0,
    n_init: int | str = 10,
) -> tuple[np.ndarray, np.ndarray]:
    """(selected indices, cluster labels): KMeans on the raw vectors, then middle-confidence sampling."""
    from sklearn.cluster import KMeans

    x = np.asarray(emb, dtype=np.float32)
    km = KMeans(n_clusters=min(n_clusters, len(x)), random_state=random_state, n_init=n_init)
    labels = km.fit_predict(x).astype(np.int64)
    return middle_confidence_sample(labels, confidences, n_per_cluster, low, high), labels


@dataclass
class CherryOptions(EmbeddingOptions):
    confidence: str = "instruction_ppl"  # column: perplexity of the templated instruction
    n_clusters: int = 100
    n_per_cluster: int = 10
    low: float = 25
    high: float = 75
    n_init: str = "10"  # the official sklearn default (< 1.4); "auto": one k-means++ run
    random_state: int | None = 0
    fields: list[str] = field(default_factory=lambda: ["instruction", "input"])

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "official": {"n_clusters": 100, "n_per_cluster": 10, "low": 25, "high": 75, "n_init": "10", "random_state": 0}
    }


@method("select", "cherry", options=CherryOptions, needs_model=False)
def cherry(records: list[dict], ctx) -> list[dict]:
    """Cherry pre-experience: KMeans clusters, middle-perplexity rows evenly spaced per cluster."""
    o = ctx.options or CherryOptions()
    idx, labels = cherry_pre_select(
        load_embeddings(records, ctx, o),
        score_column(records, o.confidence),
        o.n_clusters,
        o.n_per_cluster,
        o.low,
        o.high,
        seed_of(ctx, o),
        parse_n_init(o.n_init),
    )
    return take(records, idx, {"cherry_cluster": labels[idx]})
