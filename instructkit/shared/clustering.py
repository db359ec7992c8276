"""Clustering pieces more than one family uses: Cherry's K-means middle-confidence pre-selection (the
`select cherry` selector and the IFD scorer's pre-experience stage) and KMeans' `n_init` option."""

from __future__ import annotations

import numpy as np


def parse_n_init(value: str | int) -> int | str:
    """KMeans n_init from an option string: an int, or "auto"."""
    return int(value) if str(value).isdigit() else str(value)



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
    return np.asarray(np.concatenate(out) if out else [], dtype=np.int64)


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
