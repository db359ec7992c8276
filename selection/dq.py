"""DQ, Dataset Quantization (Zhou et al. 2023, "Dataset Quantization", 2308.10524), language part.

Bins: n_bins sequential GraphCut maximisations on the remaining pool R, each of b = N // n_bins
rows (greedy, NaiveGreedy semantics: argmax of the gain, ties to the smallest position), gain
g(x) = lam * sum_{j in R} <e_j, e_x> - 2 * sum_{s in S} <e_s, e_x> with the dot-product kernel
(ada-002 vectors are unit norm, so cosine). Each bin is returned sorted by index, as the official
code does. Then m = int(N * ratio / n_bins) rows are drawn uniformly without replacement from each
bin, concatenated in bin order. Deviations, both exact: the gain is one mat-vec against two running
d-vectors (O(N d) memory) instead of the official R x R similarity matrix per bin (10.8 GB for
Alpaca, TBs at 1M; time stays O(N^2 d / 2) mat-vec work in total, minutes at 100k on a CPU,
hours at 1M); the official per-bin `np.random.choice` is unseeded, ours uses random_state.
The N mod n_bins rows left after the last bin are never sampled, as in the official code. The running-
vector gains equal the official ones in real arithmetic; where only rounding separates two gains (exact
ties such as mirror-symmetric vectors) the official float32 matrix decides: `-o preset official`
(`float32_matrix`) computes it as upstream does (R x R memory) and holds tests/golden/dq bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from instructkit.registry import method

from .common import EmbeddingOptions, Matmul, as_indices, check_random_state, compute_dtype, seed_of, take
from .embed import load_embeddings


def graphcut_greedy(
    emb: np.ndarray, budget: int, lam: float = 1.0, device: str | None = "auto"
) -> np.ndarray:
    """Greedy GraphCut picks (pick order) over all rows of `emb` with the dot kernel."""
    dtype = compute_dtype(emb)
    x = np.asarray(emb, dtype=dtype)
    mm = Matmul(device)
    xt = mm.to_dev(x)
    total = x.sum(axis=0, dtype=np.float64)
    chosen_sum = np.zeros(x.shape[1], dtype=np.float64)
    taken = np.zeros(len(x), dtype=bool)
    picks = []
    for _ in range(min(int(budget), len(x))):
        w = (lam * total - 2.0 * chosen_sum).astype(dtype)
        gain = mm.abt(xt, w[None, :])[:, 0]
        gain[taken] = -np.inf
        j = int(np.argmax(gain))
        picks.append(j)
        taken[j] = True
        chosen_sum += x[j]
    return as_indices(picks)


def graphcut_matrix_float32(emb: np.ndarray, budget: int, lam: float = 1.0) -> np.ndarray:
    """Greedy GraphCut picks with the official arithmetic: the R x R similarity matrix stored in float32,
    its column sums and every gain in float32 (`GraphCut.calc_gain` under `NaiveGreedy`), so ties that
    only rounding separates go the official way. O(R^2) memory, as upstream."""
    x = np.asarray(emb)
    sim = np.zeros((len(x), len(x)), dtype=np.float32)
    sim[:, :] = x @ x.copy().T  # two buffers, as upstream's kernel gets: a general product, not numpy's syrk
    col_sums = np.sum(sim[:, np.ones(len(x), dtype=bool)], axis=0)  # upstream sums a masked copy (other order)
    taken = np.zeros(len(x), dtype=bool)
    gain = np.zeros(len(x))
    picks = []
    for _ in range(min(int(budget), len(x))):
        gain[~taken] = -2.0 * np.sum(sim[np.ix_(taken, ~taken)], axis=0) + lam * col_sums[~taken]
        j = int(gain.argmax())
        picks.append(j)
        taken[j] = True
        gain[j] = -np.inf
    return as_indices(picks)


def dq_bins(
    emb: np.ndarray, n_bins: int = 10, lam: float = 1.0, device: str | None = "auto", float32_matrix: bool = False
) -> list[np.ndarray]:
    """The n_bins GraphCut bins (each sorted by index) over successively smaller remaining pools."""
    n = len(emb)
    size = n // n_bins
    rest = np.arange(n, dtype=np.int64)
    bins = []
    for _ in range(n_bins):
        if float32_matrix:
            picks = graphcut_matrix_float32(emb[rest], size, lam)
        else:
            picks = graphcut_greedy(emb[rest], size, lam, device)
        bins.append(np.sort(rest[picks]))
        keep = np.ones(len(rest), dtype=bool)
        keep[picks] = False
        rest = rest[keep]
    return bins


def dq_sample(bins: list[np.ndarray], per_bin: int, random_state: int | None = 0) -> np.ndarray:
    """per_bin rows drawn uniformly without replacement from every bin, in bin order."""
    rng = check_random_state(random_state)
    return as_indices(np.concatenate([rng.choice(b, min(per_bin, len(b)), replace=False) for b in bins]))


def dq_select(
    emb: np.ndarray,
    ratio: float = 0.1,
    n_bins: int = 10,
    lam: float = 1.0,
    random_state: int | None = 0,
    device: str | None = "auto",
    budget: int | None = None,
    float32_matrix: bool = False,
) -> np.ndarray:
    """DQ: int(n / n_bins) random rows from each of n_bins GraphCut bins, n = budget or int(N * ratio)."""
    bins = dq_bins(emb, n_bins, lam, device, float32_matrix)
    n = int(budget) if budget is not None else int(len(emb) * ratio)
    return dq_sample(bins, int(n / n_bins), random_state)


@dataclass
class DQOptions(EmbeddingOptions):
    ratio: float = 0.1
    budget: int | None = None  # when set, used instead of int(N * ratio)
    n_bins: int = 10
    lam: float = 1.0
    random_state: int | None = None
    device: str = "auto"
    float32_matrix: bool = False  # the official float32 R x R similarity matrix (R^2 memory): its tie-breaks

    # `alpaca_sample.py`: GraphCut over a float32 similarity matrix; k=10 bins, ratio 0.1 (its argparse)
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"official": {"float32_matrix": True, "n_bins": 10, "ratio": 0.1}}


@method("select", "dq", options=DQOptions, needs_model=False)
def dq(records: list[dict], ctx) -> list[dict]:
    """DQ: GraphCut bins over the pool, then uniform sampling from every bin."""
    o = ctx.options or DQOptions()
    emb = load_embeddings(records, ctx, o)
    return take(records, dq_select(emb, o.ratio, o.n_bins, o.lam, seed_of(ctx, o), o.device, o.budget, o.float32_matrix))
