"""K-center greedy coreset (Sener & Savarese 2018, "Active Learning for CNNs: A Core-Set Approach", 1708.00489).

Farthest-first traversal (Gonzalez' 2-approximation): repeatedly pick the row farthest from the
selected set. Same ordered picks as Google's `kCenterGreedy` (MoDS, DiverseEvol) given the same first
index / labeled set, float32 embeddings included: the official distances are sklearn's
`pairwise_distances`, which computes float32 rows in float64 (||x||^2 - 2 x.c + ||c||^2), rounds the
squared distance to float32, clamps it at 0 and takes a float32 sqrt; ties there go to the lowest index.
We compute every distance tile in float32 (fast), bound its rounding error rigorously
((gamma_d + 2u)(|x| + |c|)^2), and recompute in float64, as sklearn does, exactly the (row, center)
pairs whose float32 value is within that bound of changing the row's minimum; the running minimum is
kept in float64, and rows within float32 resolution of the farthest are compared as sklearn stores
them. float64 input is computed in float64 throughout. `exact=False` skips the refinement (float32
only; near-ties may then go differently from the official code).
Other deviations, none changing a pick: we track squared distances (same argmax), already-selected rows
are masked (so duplicates never trip the official `assert ind not in already_selected`), and memory is
O(N) (a running min-distance vector, no N x N matrix; a memory-mapped file's pages are released as the
passes and gathers finish with them: `read_blocks`, `PageBudget`). For speed the vector is updated lazily: each
row remembers how many centers it has seen, and before a pick only the rows whose stale (upper-bound)
distance could still beat the current best are brought up to date, in blocked products against the
centers they missed (lag buckets, <= 2x redundant work); when too many rows qualify, every row is
synced in contiguous blocks. Products run through torch (CPU threads, or the GPU) or numpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from instructkit.numerics import FP32_UNIT_ROUNDOFF, gamma
from instructkit.registry import method

from .common import (
    EmbeddingOptions,
    Matmul,
    PageBudget,
    as_indices,
    check_random_state,
    compute_dtype,
    l2_normalize,
    read_blocks,
    row_blocks,
    row_norms_sq,
    seed_of,
    take,
)
from .embed import load_embeddings

_DONE = np.iinfo(np.int32).max  # `seen` value of a selected row: never refreshed again
_PAIRS = 1 << 10  # (row, center) pairs recomputed in float64 per gather (bounds its temporaries)
_TIE_WINDOW = 2.0**-20  # relative gap under which two squared distances may round to one float32 distance
_MAPPED_BYTES = 64 << 20  # contiguous rows a pass over a memory-mapped file maps at once


def float32_error_coefficient(d: int, mm: Matmul) -> float:
    """c such that |float32 tile value - exact squared distance| <= c (|x| + |c|)^2.

    The tile is fl(||c||^2_32 - 2 fl(x.c)) (one float32 product over d terms, one addition) plus the
    float64 ||x||^2: error <= (gamma_d + 2u)(|x| + |c|)^2 with u = 2^-24, gamma_d = d u / (1 - d u), and
    with torch's reduced float32 matmul precision ("high": TF32 inputs, "medium": bfloat16 inputs) the
    rounding of both inputs on top. 1% margin, plus float64's own rounding of the reference."""
    u = FP32_UNIT_ROUNDOFF
    u_in = 0.0
    if mm.torch is not None:
        precision = mm.torch.get_float32_matmul_precision()
        u_in = {"high": 2.0**-11, "medium": 2.0**-8}.get(precision, 0.0)
        if mm.device != "cpu" and mm.torch.backends.cuda.matmul.allow_tf32:
            u_in = max(u_in, 2.0**-11)
    return 1.01 * (gamma(d, u) + 2 * u + 2 * u_in + u_in * u_in) + 2.0**-40


class _State:
    """Running squared min-distances (float64) with lazy per-row updates against a growing center list."""

    def __init__(
        self, x: np.ndarray, k: int, mm: Matmul, tile: int, resident: bool | None = None, exact: bool = True
    ):
        self.x, self.mm, self.tile = x, mm, tile
        self.dtype = x.dtype if x.dtype == np.float64 else np.dtype(np.float32)
        n, d = x.shape
        self.refine = exact and self.dtype == np.float32
        self.sqn = row_norms_sq(x, np.dtype(np.float64), block=1024)  # sklearn's norms of the upcast rows
        self.rn = np.sqrt(self.sqn)
        self.coef = float32_error_coefficient(d, mm) if self.refine else 0.0
        self.m = np.full(n, np.inf)
        self.seen = np.zeros(n, dtype=np.int32)
        self.centers = np.empty((max(k, 1), d), dtype=self.dtype)
        self.cn = np.empty(max(k, 1))
        self.t = 0
        self.pages = PageBudget(x)
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
        return np.asarray(self.take(g), dtype=self.dtype)

    def take(self, g: np.ndarray) -> np.ndarray:
        """A copy of the scattered rows g (the pages a memory-mapped file maps for them kept within
        budget: `PageBudget`)."""
        rows = self.x[g]
        self.pages.took(len(g))
        return rows

    def fold(self, rows: Any, g: np.ndarray | slice, cvec: np.ndarray, cn: np.ndarray) -> None:
        """m[g] = min(m[g], squared distance of each row to its nearest center in cvec) (rows = x[g]).

        Each tile holds ||c||^2 - 2 <row, c> in the compute dtype; with `refine`, the pairs that could
        set a row's new minimum (the tile's best, and any other within the error bound of it, found
        from the row's second smallest value) are recomputed in float64 and only they change m."""
        m, sqn, rn = self.m[g], self.sqn[g], self.rn[g]
        n_rows = g.stop - g.start if isinstance(g, slice) else len(g)
        step = max(1, self.tile // max(1, len(cvec)))
        torch = self.mm.torch
        on_dev = self.xdev is not None  # resident rows: the tile is made and reduced where they live
        cn_t = cn.astype(self.dtype)
        if on_dev:
            c, cnd = self.mm.to_dev(cvec), self.mm.to_dev(cn_t)
        cmax = float(np.sqrt(cn.max())) if len(cn) else 0.0
        for lo, hi in row_blocks(n_rows, step):
            if on_dev:
                part = torch.addmm(cnd[None, :], rows[lo:hi], c.T, alpha=-2)
            else:  # a CPU tile: torch's product, numpy's in-place updates and row reductions (fastest here)
                part = self.mm.abt(rows[lo:hi], cvec)
                part *= -2
                part += cn_t[None, :]
            if on_dev:
                best = part.min(dim=1)
                pmin = best.values.cpu().numpy()
            else:
                pmin = part.min(axis=1)
            approx = pmin.astype(np.float64) + sqn[lo:hi]
            if not self.refine:
                np.minimum(m[lo:hi], np.maximum(approx, 0), out=m[lo:hi])
                continue
            err = self.coef * (rn[lo:hi] + cmax) ** 2
            near = np.flatnonzero(approx - err <= m[lo:hi])
            if not len(near):
                continue
            # a pair matters if its exact value could be below both the row's minimum and the tile's best
            bound = np.minimum(m[lo:hi][near] + err[near], approx[near] + 2 * err[near]) - sqn[lo:hi][near]
            bound32 = np.nextafter(bound.astype(np.float32), np.float32(np.inf))
            if len(cvec) == 1:  # one center: its pair is the only one
                first, second = np.zeros(len(near), dtype=np.int64), np.full(len(near), np.inf)
            elif on_dev:
                ni = self.mm.to_dev(near)
                first = best.indices.index_select(0, ni)
                others = part.index_select(0, ni).scatter_(1, first[:, None], float("inf"))
                second = others.min(dim=1).values.cpu().numpy()
                first = first.cpu().numpy()
            else:
                others = part[near]
                first = others.argmin(axis=1)
                others[np.arange(len(near)), first] = np.inf
                second = others.min(axis=1)
            pr, pc = np.arange(len(near)), first
            crowded = np.flatnonzero(second <= bound32)  # rare: more than one pair within the bound
            if len(crowded):
                if on_dev:
                    sel = others.index_select(0, self.mm.to_dev(crowded))
                    hit = torch.nonzero(sel <= self.mm.to_dev(bound32[crowded].astype(self.dtype))[:, None])
                    hr, hc = (a.cpu().numpy() for a in hit.T)
                else:
                    hr, hc = np.nonzero(others[crowded] <= bound32[crowded, None])
                pr, pc = np.concatenate([pr, crowded[hr]]), np.concatenate([pc, hc])
            local = near[pr] + lo
            glob = local + g.start if isinstance(g, slice) else g[local]
            exact = self.exact_pairs(glob, cvec, cn, pc)
            if len(crowded):  # a row may appear more than once
                np.minimum.at(m, local, exact)
            else:
                m[local] = np.minimum(m[local], exact)
        if not isinstance(g, slice):
            self.m[g] = m

    def exact_pairs(self, g: np.ndarray, cvec: np.ndarray, cn: np.ndarray, c: np.ndarray) -> np.ndarray:
        """Squared distances of rows g to centers cvec[c] as sklearn computes float32 input:
        upcast to float64, -2 x.c + ||x||^2 + ||c||^2, clamped at 0."""
        out = np.empty(len(g))
        for lo, hi in row_blocks(len(g), _PAIRS):
            # float32 x float32 products are exact in float64: only the sum rounds, in float64
            d2 = np.einsum("ij,ij->i", self.take(g[lo:hi]), cvec[c[lo:hi]], dtype=np.float64) * -2
            d2 += self.sqn[g[lo:hi]]
            d2 += cn[c[lo:hi]]
            out[lo:hi] = d2
        return np.maximum(out, 0)

    def apply_all(self, cvec: np.ndarray, cn: np.ndarray, block: int) -> None:
        """Fold centers into every row, in contiguous blocks (no copy of the rows; a memory-mapped
        file's pages released block by block, so at most `_MAPPED_BYTES` of it are mapped at once)."""
        block = min(block, max(256, _MAPPED_BYTES // max(1, self.x.itemsize * self.x.shape[1])))
        for lo, hi, _ in read_blocks(self.x, block):
            self.fold(self.rows(lo, hi), slice(lo, hi), cvec, cn)

    def add_fixed(self, idx: np.ndarray) -> None:
        """Fold an already-selected set into every row (dense pass) and mask those rows."""
        for lo, hi in row_blocks(len(idx), 4096):
            cvec = np.asarray(self.x[idx[lo:hi]], dtype=self.dtype)
            self.apply_all(cvec, self.sqn[idx[lo:hi]], self.tile // max(1, len(cvec)))
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
            for lo, hi in row_blocks(len(grp), 2048):
                g = grp[lo:hi]
                self.fold(self.gather(g), g, cvec, cn)
        self.seen[rows] = t

    def sync_all(self) -> None:
        """Bring every unselected row up to date with contiguous blocks (one pass over the data)."""
        live = self.seen != _DONE
        if not live.any():
            return
        start = int(self.seen[live].min())
        if start < self.t:
            cvec, cn = self.centers[start : self.t], self.cn[start : self.t]
            self.apply_all(cvec, cn, max(256, self.tile // max(1, len(cvec))))
        self.m[~live] = -np.inf
        self.seen[live] = self.t

    def next_center(self, dense_fraction: float) -> int:
        """The official pick: the argmax of the (eager) min-distance vector as sklearn stores it
        (float32 sqrt of the float32-rounded squared distance for float32 input), ties to the
        smallest index."""
        i = int(np.argmax(self.m))
        if self.seen[i] < self.t:
            self.refresh(np.array([i]))
            r = self.m[i]
            stale = np.flatnonzero((self.m >= r) & (self.seen < self.t))
            if len(stale) > dense_fraction * len(self.m):
                self.sync_all()
            elif len(stale):
                self.refresh(stale)
            i = int(np.argmax(self.m))
        assert self.seen[i] >= self.t or self.m[i] == -np.inf
        top = self.m[i]
        if not top > 0 or not np.isfinite(top):
            return i
        near = np.flatnonzero(self.m >= top * (1 - _TIE_WINDOW))
        if len(near) > 1:  # rows that may store the same distance as the farthest: compare them as stored
            stale = near[self.seen[near] < self.t]
            if len(stale):
                self.refresh(stale)
                near = np.flatnonzero(self.m >= top * (1 - _TIE_WINDOW))
            stored = np.sqrt(np.maximum(self.m[near].astype(self.dtype), 0))
            i = int(near[np.argmax(stored)])
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
    exact: bool = True,
) -> np.ndarray:
    """k farthest-first picks (pick order), excluding `already_selected`.

    metric: "euclidean" on the raw vectors (MoDS, DiverseEvol) or "cosine" (L2-normalised rows).
    The first pick, when nothing is already selected: `first_index`, else init="random"
    (`RandomState(random_state).choice(N)`, the official unseeded `np.random.choice` made explicit)
    or init="center" (the row nearest the mean of the normalised vectors, the "0.5% data" task center).
    tile: elements per distance tile (memory bound of the temporaries). resident: keep the rows as one
    torch tensor on the device and reduce there (default: on for a GPU, off on CPU). exact: the
    official picks on float32 input (float32 tiles refined in float64 near the decisions); False:
    float32 tiles only.
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
    st = _State(x, k, Matmul(device), tile, resident, exact)
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
        for _, _, rows in read_blocks(x, 65536):
            mean += l2_normalize(rows, np.dtype(np.float64)).sum(axis=0)
        mean /= len(x)
        best, best_d = 0, np.inf
        for lo, _, rows in read_blocks(x, 65536):
            d2 = ((l2_normalize(rows, np.dtype(np.float64)) - mean) ** 2).sum(axis=1)
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
    exact: bool = True  # official picks on float32 input; False: float32 distances only (near-ties may differ)


@method("select", "kcenter", options=KCenterOptions, needs_model=False)
def kcenter(records: list[dict], ctx) -> list[dict]:
    """K-center greedy coreset (farthest-first), O(N) memory, the official picks on float32 input."""
    o = ctx.options or KCenterOptions()
    emb = load_embeddings(records, ctx, o)
    fixed = [i for i, r in enumerate(records) if o.already_selected and r.get(o.already_selected)]
    idx = kcenter_greedy(
        emb, o.k, o.metric, fixed or None, o.first_index, o.init, seed_of(ctx, o), device=o.device, exact=o.exact
    )
    return take(records, idx)
