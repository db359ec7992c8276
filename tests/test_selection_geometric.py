"""DEITA filter, k-center greedy and DQ GraphCut against plain references (full matrices, loops)."""

from __future__ import annotations

import numpy as np
import pytest
from instructkit.selection.deita import deita_select, greedy_similarity_filter
from instructkit.selection.dq import dq_bins, dq_sample, dq_select
from instructkit.selection.kcenter import covering_radius, kcenter_greedy


def clustered(n: int, d: int, centers: int, noise: float, seed: int, dtype=np.float64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centers, d))
    x = c[rng.integers(centers, size=n)] + noise * rng.normal(size=(n, d))
    return x.astype(dtype)


def normalized(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# ----- DEITA ---------------------------------------------------------------------------------


def ref_deita(x: np.ndarray, scores: np.ndarray, budget: int, tau: float) -> list[int]:
    """The official IterativeFilter with batch size 1, on a full similarity matrix."""
    xn = normalized(x)
    sim = xn @ xn.T
    order = sorted(range(len(x)), key=lambda i: (-scores[i], i))
    chosen = [order[0]]
    for i in order[1:]:
        if len(chosen) >= budget:
            break
        if sim[i, chosen].max() > tau:
            continue
        chosen.append(i)
    return chosen[:budget]


@pytest.mark.parametrize("seed,noise,block", [(0, 0.25, 4096), (1, 0.4, 256), (2, 0.4, 64)])
def test_deita_matches_batch1_reference(seed: int, noise: float, block: int) -> None:
    x = clustered(2000, 24, 40, noise, seed)
    scores = np.random.default_rng(seed).integers(1, 7, size=len(x)).astype(float)  # many ties
    ref = ref_deita(x, scores, 600, 0.9)
    got = deita_select(x, scores, 600, 0.9, block=block)
    assert got.dtype == np.int64
    assert got.tolist() == ref
    assert (len(ref) == 600) == (noise > 0.3)  # budget reached (noise 0.4) and not reached (0.25)


def test_deita_budget_not_reached_and_unlimited() -> None:
    x = clustered(1500, 16, 10, 0.1, 3)  # tight clusters: most rows rejected
    scores = np.random.default_rng(3).random(len(x))
    ref = ref_deita(x, scores, 10_000, 0.9)
    assert len(ref) < 1500
    assert deita_select(x, scores, 10_000, 0.9, block=128).tolist() == ref


def test_deita_float32_agrees_away_from_tau() -> None:
    x = clustered(600, 32, 30, 0.3, 4)  # seed chosen so that no pair is within 1e-5 of tau
    scores = np.random.default_rng(4).random(len(x))
    xn = normalized(x)
    sim = xn @ xn.T
    if (np.abs(sim - 0.9) < 1e-5).any():
        pytest.skip("a pair sits within float32 rounding of tau")
    assert deita_select(x.astype(np.float32), scores, 500).tolist() == ref_deita(x, scores, 500, 0.9)


def test_deita_nan_scores_last_and_first_always_taken() -> None:
    x = np.array([[1, 0], [1, 0.01], [0, 1]], dtype=np.float64)
    scores = np.array([np.nan, 5.0, 1.0])
    assert deita_select(x, scores, 3).tolist() == [1, 2]  # row 0 duplicates row 1 and sorts last


def test_similarity_filter_is_order_and_budget_exact() -> None:
    x = clustered(800, 8, 20, 0.2, 5)
    order = np.random.default_rng(5).permutation(800)
    xn = normalized(x)
    sim = xn @ xn.T
    ref: list[int] = []
    for i in order:
        if not ref or sim[i, ref].max() <= 0.95:
            ref.append(int(i))
    assert greedy_similarity_filter(x, order, 0.95, block=100).tolist() == ref
    assert greedy_similarity_filter(x, order, 0.95, budget=7).tolist() == ref[:7]


# ----- k-center ------------------------------------------------------------------------------


def ref_kcenter(x: np.ndarray, k: int, first: int | None = None, init: list[int] | None = None) -> list[int]:
    """Farthest-first on the full N x N distance matrix (DiverseEvol style, clamped, selected masked)."""
    sq = (x * x).sum(1)
    dist = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0))
    picks: list[int] = []
    if init:
        m = dist[init].min(axis=0)
        m[init] = -1
    else:
        m = dist[first].copy()
        m[first] = -1
        picks.append(first)
    while len(picks) < k:
        i = int(np.argmax(m))
        picks.append(i)
        m = np.minimum(m, dist[i])
        m[picks] = -1
        if init:
            m[init] = -1
    return picks


@pytest.mark.parametrize("dense_fraction", [0.0, 0.5, 2.0])
@pytest.mark.parametrize("case", ["random", "clustered"])
def test_kcenter_matches_full_matrix(case: str, dense_fraction: float) -> None:
    if case == "random":
        x = np.random.default_rng(0).normal(size=(1500, 16))
    else:
        x = clustered(2000, 32, 25, 0.2, 1)
    got = kcenter_greedy(x, 250, first_index=7, dense_fraction=dense_fraction, tile=1 << 16)
    assert got.dtype == np.int64
    assert got.tolist() == ref_kcenter(x, 250, first=7)


def test_kcenter_resident_torch_path() -> None:
    """The GPU code path (rows kept as one torch tensor, min reduced in torch), run on the CPU."""
    x = clustered(1500, 16, 20, 0.3, 8)
    ref = ref_kcenter(x, 200, first=3)
    assert kcenter_greedy(x, 200, first_index=3, resident=True, tile=1 << 15).tolist() == ref
    assert kcenter_greedy(x, 200, first_index=3, device="numpy").tolist() == ref


def test_kcenter_already_selected_and_cosine() -> None:
    x = clustered(1200, 12, 15, 0.3, 2)
    init = [3, 50, 900]
    got = kcenter_greedy(x, 120, already_selected=init)
    assert got.tolist() == ref_kcenter(x, 120, init=init)
    xn = normalized(x)
    assert kcenter_greedy(x, 100, metric="cosine", first_index=0).tolist() == ref_kcenter(xn, 100, first=0)


def test_kcenter_duplicates_never_repick() -> None:
    # integer coordinates: distances are exact, so duplicate ties break by index as in the reference
    rng = np.random.default_rng(3)
    base = rng.integers(-3, 4, size=(40, 5)).astype(np.float64)
    x = np.concatenate([base, base, base])
    got = kcenter_greedy(x, 100, first_index=0)
    assert len(set(got.tolist())) == 100
    assert got.tolist() == ref_kcenter(x, 100, first=0)


def test_kcenter_first_pick_rules_and_radius() -> None:
    x = clustered(500, 8, 5, 0.5, 4)
    got = kcenter_greedy(x, 5, random_state=11)
    assert got[0] == np.random.RandomState(11).choice(500)
    xn = normalized(x)
    center = int(np.argmin(((xn - xn.mean(0)) ** 2).sum(1)))
    assert kcenter_greedy(x, 3, init="center")[0] == center
    picks = kcenter_greedy(x, 20, first_index=0)
    radius = covering_radius(x, picks)
    full = np.sqrt(((x[:, None, :] - x[None, picks, :]) ** 2).sum(-1)).min(1)
    np.testing.assert_allclose(radius, full, atol=1e-6)
    assert kcenter_greedy(x, 0).size == 0
    assert len(kcenter_greedy(x[:10], 50, first_index=0)) == 10


# ----- DQ ------------------------------------------------------------------------------------


def ref_dq_bins(x: np.ndarray, n_bins: int, lam: float = 1.0) -> list[list[int]]:
    """The official NaiveGreedy GraphCut with the full similarity matrix of each remaining pool."""
    size = len(x) // n_bins
    rest = np.arange(len(x))
    bins = []
    for _ in range(n_bins):
        sub = x[rest]
        kernel = sub @ sub.T
        selected = np.zeros(len(sub), dtype=bool)
        gains = np.zeros(len(sub))
        for _ in range(size):
            gain = -2.0 * kernel[selected][:, ~selected].sum(0) + lam * kernel[:, ~selected].sum(0)
            gains[~selected] = gain
            j = int(gains.argmax())
            selected[j] = True
            gains[j] = -np.inf
        bins.append(rest[selected].tolist())
        rest = rest[~selected]
    return bins


def test_dq_bins_match_full_matrix_greedy() -> None:
    x = normalized(clustered(603, 16, 12, 0.4, 6))
    got = dq_bins(x, n_bins=5)
    ref = ref_dq_bins(x, 5)
    assert [b.tolist() for b in got] == ref
    assert sum(len(b) for b in got) == 600  # the last N mod k rows never enter a bin


def test_dq_sampling_is_seeded_per_bin() -> None:
    x = normalized(clustered(400, 8, 6, 0.4, 7))
    bins = dq_bins(x, n_bins=4)
    got = dq_select(x, ratio=0.1, n_bins=4, random_state=3)
    rng = np.random.RandomState(3)
    ref = np.concatenate([rng.choice(b, 10, replace=False) for b in bins])
    assert got.tolist() == ref.tolist()
    assert dq_sample(bins, 10, 3).tolist() == ref.tolist()
    assert len(dq_select(x, n_bins=4, budget=40)) == 40
