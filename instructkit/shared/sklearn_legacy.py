"""PCA and K-means as scikit-learn before 1.3 computed them, on today's scikit-learn.

Official selection code of 2023-24 (CaR's lock pins 0.24; Cherry and Nuggets ran sklearn < 1.4) called
`PCA(n_components=0.95)` and `KMeans(random_state=..)`. Today's versions give other numbers for the same
call: PCA flips signs by V (1.5) and may solve by the covariance (1.5); k-means++ draws its first centre
with `choice(p=weights)` instead of `randint` (1.3) and accumulates its potentials in float32, so every
initialisation, and with it the labels, differ. This module restates the old arithmetic (full SVD with
U-based signs and `U * S` as the projection; k-means++ with `randint`, float64 cumulative sums and float32
potentials; the best of `n_init` runs by strictly lower inertia unless the labelling is the same) and
leaves each Lloyd run to scikit-learn's own: tests/golden/car and tests/golden/nuggets hold labels and
anchors equal to scikit-learn 1.1.3 running the official scripts.
"""

from __future__ import annotations

import numpy as np


def pca_full(x: np.ndarray, variance: float) -> np.ndarray:
    """`PCA(n_components=variance).fit_transform(x)` as sklearn < 1.5's full solver: centred, SVD,
    signs fixed by U's largest entry per component, the fewest components reaching `variance`."""
    from scipy import linalg

    xc = x - x.mean(axis=0)
    u, s, vt = linalg.svd(xc, full_matrices=False)
    signs = np.sign(u[np.argmax(np.abs(u), axis=0), range(u.shape[1])])
    u *= signs
    explained = s**2 / (len(x) - 1)
    ratio = explained / explained.sum()
    k = int(np.searchsorted(np.cumsum(ratio), variance, side="right") + 1) if 0 < variance < 1 else int(variance)
    return u[:, :k] * s[:k]


def _kmeans_plusplus(x: np.ndarray, k: int, rng: np.random.RandomState, sq_norms: np.ndarray) -> np.ndarray:
    """k-means++ seeding as sklearn < 1.3: first centre by `randint`, 2 + log(k) candidates per step."""
    from sklearn.metrics.pairwise import euclidean_distances

    trials = 2 + int(np.log(k))
    chosen = [rng.randint(len(x))]
    closest = euclidean_distances(x[chosen], x, Y_norm_squared=sq_norms[None, :], squared=True)
    potential = closest.sum()
    for _ in range(1, k):
        draws = rng.uniform(size=trials) * potential
        candidates = np.searchsorted(np.cumsum(closest, dtype=np.float64), draws)
        np.clip(candidates, None, closest.size - 1, out=candidates)
        dist = euclidean_distances(x[candidates], x, Y_norm_squared=sq_norms[None, :], squared=True)
        np.minimum(closest, dist, out=dist)
        potentials = dist.sum(axis=1)
        best = int(np.argmin(potentials))
        potential, closest = potentials[best], dist[best : best + 1]
        chosen.append(int(candidates[best]))
    return x[chosen]


def _same_labelling(a: np.ndarray, b: np.ndarray) -> bool:
    """sklearn's `_is_same_clustering`: every label of `a` maps to one label of `b`."""
    mapping: dict[int, int] = {}
    return all(mapping.setdefault(i, j) == j for i, j in zip(a.tolist(), b.tolist()))


def kmeans(x: np.ndarray, k: int, random_state: int, n_init: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """(labels, centres) of `KMeans(n_clusters=k, random_state=random_state, n_init=n_init).fit(x)` as
    sklearn < 1.3 computed them: the data centred, the old seeding, sklearn's own single Lloyd run (its
    private `_kmeans_single_lloyd`, unchanged since: public `KMeans` started from given centres would
    centre the data a second time and move the centres in their last bits, which decides ties between
    rows equidistant from a centre), the mean added back to the centres."""
    from sklearn.cluster import _kmeans
    from sklearn.utils._openmp_helpers import _openmp_effective_n_threads
    from sklearn.utils.extmath import row_norms

    tol = float(np.mean(np.var(x, axis=0))) * 1e-4  # KMeans' tol=1e-4 scaled by the data's variance
    rng = np.random.RandomState(random_state)
    mean = x.mean(axis=0)
    xc = np.ascontiguousarray(x - mean)
    sq_norms = row_norms(xc, squared=True)
    weights = np.ones(len(x), dtype=x.dtype)
    threads = _openmp_effective_n_threads()
    best = None
    for _ in range(int(n_init)):
        init = _kmeans_plusplus(xc, k, rng, sq_norms)
        labels, inertia, centres, _ = _kmeans._kmeans_single_lloyd(xc, weights, init, tol=tol, n_threads=threads)
        if best is None or (inertia < best[1] and not _same_labelling(labels, best[0])):
            best = (labels, inertia, centres)
    centres = best[2]
    centres += mean
    return best[0], centres
