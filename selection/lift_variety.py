"""LIFT variety curation: keep the rows whose coordinates on the first principal components vary most.

Paper: Xu et al., "Rethinking the Instruction Quality: LIFT is What You Need" (arXiv 2312.11508), the
variety step of its curation: embed every row, project the embeddings onto their principal components
and keep the rows with the largest variance across the projected coordinates. No code is released;
the number of components (16) and the kept share (half) are ours, each an option. Ties in variance
go to the lower original index (stable); PCA is sklearn's exact SVD on centred float64 vectors. The
variance depends on each component's sign, which sklearn fixes (the largest loading positive).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from instructkit.registry import method

from .common import EmbeddingOptions, stable_order, take
from .embed import load_embeddings


def pca_row_variance(emb: np.ndarray, n_components: int = 16) -> np.ndarray:
    """Each row's variance (population, ddof 0) across its coordinates on the first n principal components."""
    from sklearn.decomposition import PCA

    x = np.asarray(emb, dtype=np.float64)
    n = max(1, min(int(n_components), x.shape[0], x.shape[1]))
    proj = PCA(n_components=n, svd_solver="full").fit_transform(x)
    return proj.var(axis=1)


def variety_select(emb: np.ndarray, k: int, n_components: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """(the k rows of largest projected variance, highest first, ties by index; every row's variance)."""
    var = pca_row_variance(emb, n_components)
    return stable_order(var)[: max(0, int(k))], var


@dataclass
class LiftVarietyOptions(EmbeddingOptions):
    k: int = 0  # rows kept (0: `ratio` of the rows)
    ratio: float = 0.5
    pca_components: int = 16


@method("select", "lift_variety", options=LiftVarietyOptions, needs_model=False)
def lift_variety(records: list[dict], ctx) -> list[dict]:
    """LIFT variety curation: the rows of largest variance on the first principal components (`lift_variance`)."""
    o = ctx.options or LiftVarietyOptions()
    if not records:
        return []
    k = o.k if o.k > 0 else max(1, int(len(records) * o.ratio))
    idx, var = variety_select(load_embeddings(records, ctx, o), k, o.pca_components)
    return take(records, idx, {"lift_variance": var[idx]})
