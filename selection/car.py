"""CaR, Clustering and Ranking (Ge et al. 2024, "Clustering and Ranking: Diversity-preserved Instruction Selection", 2402.18191).

The global top-n1 rows by quality score, plus the best n2 rows of every K-means cluster that are
not already in, as `Clustering/cluster.py` combines them: PCA keeping 95% of the variance
(random_state 42), KMeans with k = int(sqrt(N/2)) (random_state 42), cluster representatives
appended in the official order (labels compared as strings, descending). Deviations: ties in
score are broken by original index (the official sort is stable on an already score-sorted list,
so it agrees); membership is by row index, so content-identical duplicate rows are not merged as
the official dict-equality test would; `n_init` is explicit: the default "auto" (one initialisation,
sklearn >= 1.4's default) is cheaper; `-o preset official` sets 10, the default of the scikit-learn 0.24
that the official poetry.lock pins, and `legacy_sklearn` (today's PCA signs and k-means++ draws give
other clusters for the same call; `sklearn_legacy` restates the old ones; tests/golden/car holds labels
and selections identical to the official script run under scikit-learn 1.1.3). For N beyond ~200k,
`minibatch=True` switches to MiniBatchKMeans (an approximation; reported as such). The official
code embeds "Instruction: ... Input: ... Response: ..." (`text_template=car_iqs`, set by
`-o preset official`); the default embeds the fields joined by newlines (chat rows: every turn).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from instructkit.registry import method
from instructkit.shared import sklearn_legacy
from instructkit.shared.clustering import parse_n_init

from .common import EmbeddingOptions, as_indices, score_column, seed_of, stable_order, take
from .embed import load_embeddings


def car_clusters(
    emb: np.ndarray,
    n_clusters: int | None = None,
    pca_variance: float | None = 0.95,
    random_state: int | None = 42,
    n_init: int | str = "auto",
    minibatch: bool = False,
    legacy_sklearn: bool = False,
) -> np.ndarray:
    """Cluster labels as CaR computes them: PCA(variance) then KMeans(k = int(sqrt(N/2))); with
    `legacy_sklearn`, both as the scikit-learn of the official lock (`sklearn_legacy`)."""
    from sklearn.cluster import KMeans, MiniBatchKMeans
    from sklearn.decomposition import PCA

    x = np.asarray(emb, dtype=np.float32)
    k = n_clusters or max(1, int(math.sqrt(len(x) / 2)))
    if legacy_sklearn:
        if minibatch or n_init == "auto":
            raise ValueError("legacy_sklearn restates KMeans with an integer n_init, without minibatch")
        x = sklearn_legacy.pca_full(x, pca_variance) if pca_variance else x
        return sklearn_legacy.kmeans(x, min(k, len(x)), int(random_state or 0), int(n_init))[0].astype(np.int64)
    if pca_variance:
        x = PCA(n_components=pca_variance, random_state=random_state).fit_transform(x)
    km_cls = MiniBatchKMeans if minibatch else KMeans
    km = km_cls(n_clusters=min(k, len(x)), random_state=random_state, n_init=n_init)
    return km.fit_predict(x).astype(np.int64)


def car_combine(
    scores: np.ndarray, labels: np.ndarray, n1: int = 1000, n2: int = 1, label_order: str = "string"
) -> np.ndarray:
    """Top-n1 by score, then each cluster's top-n2 not already taken.

    label_order="string": clusters visited in descending string order of the label ("9" > "10"),
    as the official code appends them; "int": ascending numeric labels.
    """
    s = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    ranked = stable_order(s)
    out = list(ranked[: max(0, int(n1))])
    taken = set(out)
    uniq = np.unique(labels)
    if label_order == "string":
        uniq = sorted(uniq.tolist(), key=str, reverse=True)
    elif label_order == "int":
        uniq = sorted(uniq.tolist())
    else:
        raise ValueError(f"label_order must be string or int, not {label_order!r}")
    rank_of = np.empty(len(s), dtype=np.int64)
    rank_of[ranked] = np.arange(len(s))
    for lab in uniq:
        members = np.flatnonzero(labels == lab)
        best = members[np.argsort(rank_of[members], kind="stable")][: max(0, int(n2))]
        for i in best:
            if int(i) not in taken:
                taken.add(int(i))
                out.append(int(i))
    return as_indices(out)


def car_select(
    emb: np.ndarray,
    scores: np.ndarray,
    n1: int = 1000,
    n2: int = 1,
    n_clusters: int | None = None,
    pca_variance: float | None = 0.95,
    random_state: int | None = 42,
    n_init: int | str = "auto",
    label_order: str = "string",
    minibatch: bool = False,
    legacy_sklearn: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """(selected indices, cluster labels of all rows)."""
    labels = car_clusters(emb, n_clusters, pca_variance, random_state, n_init, minibatch, legacy_sklearn)
    return car_combine(scores, labels, n1, n2, label_order), labels


@dataclass
class CaROptions(EmbeddingOptions):
    score: str = "score"  # quality column (IQS in the paper)
    n1: int = 1000
    n2: int = 1
    n_clusters: int | None = None  # default int(sqrt(N/2))
    pca_variance: float = 0.95
    n_init: str = "auto"  # "auto" (sklearn >= 1.4) or an int (10 before 1.4, the official lock's 0.24)
    label_order: str = "string"
    minibatch: bool = False
    random_state: int | None = 42
    legacy_sklearn: bool = False  # PCA and k-means++ as sklearn < 1.3 (the official lock's 0.24) computed them

    # `Clustering/cluster.py`: the IQS input string through a 384-d sentence-BERT (all-MiniLM-L6-v2 is
    # our `local`), PCA 95% and KMeans(k = int(sqrt(N/2)), random_state 42), top 1000 + 1 per cluster
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "official": {
            "text_template": "car_iqs",
            "encoder": "local",
            "pca_variance": 0.95,
            "random_state": 42,
            "n1": 1000,
            "n2": 1,
            "label_order": "string",
            "n_init": "10",  # the official lock pins scikit-learn 0.24, whose KMeans default is n_init=10
            "legacy_sklearn": True,
        }
    }


@method("select", "car", options=CaROptions, needs_model=False)
def car(records: list[dict], ctx) -> list[dict]:
    """CaR: global top-n1 by score plus the best row of each K-means cluster (labels in `car_cluster`)."""
    o = ctx.options or CaROptions()
    idx, labels = car_select(
        load_embeddings(records, ctx, o),
        score_column(records, o.score),
        o.n1,
        o.n2,
        o.n_clusters,
        o.pca_variance,
        seed_of(ctx, o),
        parse_n_init(o.n_init),
        o.label_order,
        o.minibatch,
        o.legacy_sklearn,
    )
    return take(records, idx, {"car_cluster": labels[idx]})
