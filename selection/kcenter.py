"""K-center greedy coreset (Sener & Savarese 2018, "Active Learning for CNNs: A Core-Set Approach", 1708.00489).

Farthest-first traversal (Gonzalez' 2-approximation): repeatedly pick the row farthest from the
selected set. Same picks as Google's `kCenterGreedy` (MoDS) and DiverseEvol's N x N version given
the same first index / labeled set; already-selected rows are masked, so duplicates never trip the
official `assert ind not in already_selected`. Deviations, all exact: we track squared distances
(same argmax), clamp tiny negatives at 0 (the official N x N code gets NaN there), and keep O(N)
memory (a running min-distance vector, no N x N matrix). For speed the min-distance vector is
updated lazily: each row remembers how many centers it has seen, and before a pick only the rows
whose stale (upper-bound) distance could still beat the current best are brought up to date, in
blocked matrix products against the centers they missed (lag buckets, <= 2x redundant work); when
too many rows qualify, every row is synced in contiguous blocks. Because stale distances are upper
bounds, the argmax (ties: smallest index) is the same as with the eager update.
Products run through torch (CPU threads, or the GPU when available) or numpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from instructkit.registry import method

from .common import (
    EmbeddingOptions,
    Matmul,
    as_indices,
    check_random_state,
    compute_dtype,
    l2_normalize,
    load_embeddings,
    row_blocks,
    row_norms_sq,
    seed_of,
    take,
)

_DONE = np.iinfo(np.int32).max  # `seen` value of a selected row: never refreshed again


class _State:
    """Running squared min-distances with lazy per-row updates against a growing center list."""

    def __init__(self, x: np.ndarray, k: int, mm: Matmul, tile: int, resident: bool | None = None):
        self.x, self.mm, self.tile = x, mm, tile
        self.dtype = x.dtype if x.dtype == np.float64 else np.dtype(np.float32)
        n, d = x.shape
        self.sqn = row_norms_sq(x, self.dtype)
        self.m = np.full(n, np.inf, dtype=self.dtype)
        self.seen = np.zeros(n, dtype=np.int32)
        self.centers = np.empty((max(k, 1), d), dtype=self.dtype)
        self.cn = np.empty(max(k, 1), dtype=self.dtype)
        self.t = 0
        if resident is None:  # on a GPU the rows live there once; the min is reduced there too
            resident = mm.torch is not None and mm.device != "cpu"
        self.xdev = mm.to_dev(np.asarray(x, dtype=self.dtype)) if resident and mm.torch is not None else None

    def rows(self, lo: int, hi: int) -> Any:
        if self.xdev is not None:
            return self.xdev[lo:hi]
        return np.asarray(self.x[lo:hi], dtype=self.dtype)

    def gather(self, g: np.ndarray) -> Any:
        if self.xdev is not None:
            return self.xdev[self.mm.to_dev(g)]
        return np.asarray(self.x[g], dtype=self.dtype)

    def dist_min(self, rows: Any, cvec: np.ndarray, cn: np.ndarray) -> np.ndarray:
        """min over the given centers of ||c||^2 - 2 <row, c> (add ||row||^2 for the squared distance)."""
        out = np.empty(len(rows), dtype=self.dtype)
        step = max(1, self.tile // max(1, len(cvec)))
        if self.xdev is not None:
            c, cnd = self.mm.to_dev(cvec), self.mm.to_dev(cn)
            for lo, hi in row_blocks(len(rows), step):
                d2 = self.mm.torch.addmm(cnd[None, :], rows[lo:hi], c.T, alpha=-2)
                out[lo:hi] = d2.min(dim=1).values.cpu().numpy()
            return out
        for lo, hi in row_blocks(len(rows), step):
            d2 = self.mm.abt(rows[lo:hi], cvec)
            d2 *= -2
            d2 += cn[None, :]
            out[lo:hi] = d2.min(axis=1)
        return out

    def apply_block(self, lo: int, hi: int, cvec: np.ndarray, cn: np.ndarray) -> None:
        """Fold centers into rows lo:hi (contiguous, no copy of the rows)."""
        d2 = self.dist_min(self.rows(lo, hi), cvec, cn) + self.sqn[lo:hi]
        np.maximum(d2, 0, out=d2)
        np.minimum(self.m[lo:hi], d2, out=self.m[lo:hi])

    def add_fixed(self, idx: np.ndarray) -> None:
        """Fold an already-selected set into every row (dense pass) and mask those rows."""
        for lo, hi in row_blocks(len(idx), 4096):
            cvec = np.asarray(self.x[idx[lo:hi]], dtype=self.dtype)
            cn = self.sqn[idx[lo:hi]]
            for a, b in row_blocks(len(self.x), self.tile // max(1, len(cvec))):
                self.apply_block(a, b, cvec, cn)
        self.m[idx] = -np.inf
        self.seen[idx] = _DONE

    def push(self, i: int) -> None:
        self.centers[self.t] = self.x[i]
        self.cn[self.t] = self.sqn[i]
        self.t += 1
        self.m[i] = -np.inf
        self.seen[i] = _DONE

    def refresh(self, rows: np.ndarray) -> None:
        """Bring the given rows up to date, grouping them by lag (<= 2x redundant products)."""
        t = self.t
        lag = t - self.seen[rows]
        bucket = np.floor(np.log2(lag)).astype(np.int64)
        for b in np.unique(bucket):
            grp = rows[bucket == b]
            start = t - int(lag[bucket == b].max())
            cvec, cn = self.centers[start:t], self.cn[start:t]
            for lo, hi in row_blocks(len(grp), 8192):
                g = grp[lo:hi]
                d2 = self.dist_min(self.gather(g), cvec, cn) + self.sqn[g]
                np.maximum(d2, 0, out=d2)
                self.m[g] = np.minimum(self.m[g], d2)
        self.seen[rows] = t

    def sync_all(self) -> None:
        """Bring every unselected row up to date with contiguous blocks (one pass over the data)."""
        live = self.seen != _DONE
        if not live.any():
            return
        start = int(self.seen[live].min())
        if start < self.t:
            cvec, cn = self.centers[start : self.t], self.cn[start : self.t]
            for lo, hi in row_blocks(len(self.x), max(256, self.tile // max(1, len(cvec)))):
                self.apply_block(lo, hi, cvec, cn)
        self.m[~live] = -np.inf
        self.seen[live] = self.t

    def next_center(self, dense_fraction: float) -> int:
        """The exact argmax of the (eager) min-distance vector; ties to the smallest index."""
        i = int(np.argmax(self.m))
        if self.seen[i] >= self.t:
            return i
        self.refresh(np.array([i]))
        r = self.m[i]
        stale = np.flatnonzero((self.m >= r) & (self.seen < self.t))
        if len(stale) > dense_fraction * len(self.m):
            self.sync_all()
        elif len(stale):
            self.refresh(stale)
        i = int(np.argmax(self.m))
        assert self.seen[i] >= self.t or self.m[i] == -np.inf
        return i


def kcenter_greedy(
    emb: np.ndarray,
    k: int,
    metric: str = "euclidean",
    already_selected: np.ndarray | list[int] | None = None,
    first_index: int | None = None,
    init: str = "random",
    random_state: int | None = 0,
    device: str | None = "auto",
    tile: int = 1 << 22,
    dense_fraction: float = 0.5,
    resident: bool | None = None,
) -> np.ndarray:
    """k farthest-first picks (pick order), excluding `already_selected`.

    metric: "euclidean" on the raw vectors (MoDS, DiverseEvol) or "cosine" (L2-normalised rows).
    The first pick, when nothing is already selected: `first_index`, else init="random"
    (`RandomState(random_state).choice(N)`, the official unseeded `np.random.choice` made explicit)
    or init="center" (the row nearest the mean of the normalised vectors, the "0.5% data" task center).
    tile: elements per distance tile (memory bound of the temporaries). resident: keep the rows as one
    torch tensor on the device and reduce there (default: on for a GPU, off on CPU).
    """
    n = len(emb)
    fixed = as_indices(already_selected if already_selected is not None else [])
    k = int(min(k, n - len(np.unique(fixed))))
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    if metric == "cosine":
        x = l2_normalize(emb)
    elif metric == "euclidean":
        x = emb if np.asarray(emb[:1]).dtype in (np.float32, np.float64) else np.asarray(emb, np.float32)
    else:
        raise ValueError(f"metric must be euclidean or cosine, not {metric!r}")
    st = _State(x, k, Matmul(device), tile, resident)
    picks: list[int] = []
    if len(fixed):
        st.add_fixed(np.unique(fixed))
    else:
        if first_index is None:
            first_index = _first(x, init, random_state)
        st.push(int(first_index))
        picks.append(int(first_index))
        st.sync_all()
    while len(picks) < k:
        i = st.next_center(dense_fraction)
        st.push(i)
        picks.append(i)
    return np.asarray(picks, dtype=np.int64)


def _first(x: np.ndarray, init: str, random_state: int | None) -> int:
    if init == "random":
        return int(check_random_state(random_state).choice(len(x)))
    if init == "center":
        mean = np.zeros(x.shape[1], dtype=np.float64)
        for lo, hi in row_blocks(len(x), 65536):
            mean += l2_normalize(x[lo:hi], np.dtype(np.float64)).sum(axis=0)
        mean /= len(x)
        best, best_d = 0, np.inf
        for lo, hi in row_blocks(len(x), 65536):
            d2 = ((l2_normalize(x[lo:hi], np.dtype(np.float64)) - mean) ** 2).sum(axis=1)
            j = int(np.argmin(d2))
            if d2[j] < best_d:
                best, best_d = lo + j, d2[j]
        return best
    raise ValueError(f"init must be random or center, not {init!r}")


def covering_radius(emb: np.ndarray, centers: np.ndarray, metric: str = "euclidean") -> np.ndarray:
    """min distance from every row to the given centers (the k-center objective is its max)."""
    x = l2_normalize(emb) if metric == "cosine" else np.asarray(emb)
    dtype = compute_dtype(x)
    st = _State(x, 1, Matmul("auto"), 1 << 22)
    st.add_fixed(as_indices(centers))
    out = st.m.astype(np.float64)
    c = as_indices(centers)
    out[c] = 0.0
    return np.sqrt(np.maximum(out, 0)).astype(dtype)


@dataclass
class KCenterOptions(EmbeddingOptions):
    k: int = 1000
    metric: str = "euclidean"  # euclidean (official) or cosine
    init: str = "random"  # random (seeded) or center
    first_index: int | None = None
    already_selected: str | None = None  # column: rows where it is truthy are the initial set
    random_state: int | None = None
    device: str = "auto"


@method("select", "kcenter", options=KCenterOptions, needs_model=False)
def kcenter(records: list[dict], ctx) -> list[dict]:
    """K-center greedy coreset (farthest-first), O(N) memory, exact."""
    o = ctx.options or KCenterOptions()
    emb = load_embeddings(records, ctx, o)
    fixed = [i for i, r in enumerate(records) if o.already_selected and r.get(o.already_selected)]
    idx = kcenter_greedy(
        emb, o.k, o.metric, fixed or None, o.first_index, o.init, seed_of(ctx, o), device=o.device
    )
    return take(records, idx)
