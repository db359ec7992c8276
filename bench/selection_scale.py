"""Scale benchmark: DEITA filter (budget 10k, tau 0.9) and k-center greedy (k 10k) on random unit vectors.

Each case runs in a fresh subprocess and reports wall time of the selection only (data generation
excluded), its CPU time (user + sys, both threads: on a shared machine wall time depends on the
load, printed too) and peak RSS (`resource.getrusage(...).ru_maxrss`, which sees the numpy/torch
buffers that tracemalloc misses), plus the RSS right after generating the data. The naive versions
materialise the N x N matrix (k-center: the official google/active-learning `kCenterGreedy` semantics,
sklearn's float32 path: squared distances computed in float64, stored as float32, float32 sqrt; DEITA:
a filter that precomputes all similarities) and run only where that matrix fits in `--naive-limit-gb`
(default 8 GB); at that N we also check that ours picks the identical ordered indices. For k-center the
`f32` rows are the algorithm before it was made exact (float32 tiles only, `exact=False`): the speed
reference. Measured before the change, on the 2-core machine at load 5.5: 100k rows, k 10k: 51.4 s wall,
24.5 s CPU. "ideal" memory is the float32 embedding matrix itself; ideal
time is 2 N k d flops (k-center: every row against every center, once), 2 (budget^2 / 2) d flops
(DEITA, every accepted pair) or N * accepted * d (DEITA on tight clusters, every row visited), at the
GEMM rate measured on this machine. `--methods deita_clustered` is the hard DEITA case: tight
clusters, so most rows are rejected and every row must be visited.

    python bench/selection_scale.py                 # 100k and 1M, naive at the largest N under the guard
    python bench/selection_scale.py --sizes 100000  # quicker
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

D = 384
ROOT = Path(__file__).resolve().parents[1]


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def unit_vectors(n: int, d: int = D, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.empty((n, d), dtype=np.float32)
    for lo in range(0, n, 65536):
        b = rng.standard_normal((min(n, lo + 65536) - lo, d), dtype=np.float32)
        b /= np.linalg.norm(b, axis=1, keepdims=True)
        x[lo : lo + len(b)] = b
    return x


def clustered_unit_vectors(n: int, d: int = D, centers: int = 5000, seed: int = 0) -> np.ndarray:
    """Tight clusters (within-cluster cosine ~0.93): DEITA accepts ~1 row per cluster and so has to
    visit every row (random unit vectors never exceed cosine 0.9, so they only ever test acceptance)."""
    rng = np.random.default_rng(seed)
    c = unit_vectors(centers, d, seed + 1)
    x = np.empty((n, d), dtype=np.float32)
    for lo in range(0, n, 65536):
        hi = min(n, lo + 65536)
        b = c[rng.integers(centers, size=hi - lo)] + 0.014 * rng.standard_normal(
            (hi - lo, d), dtype=np.float32
        )
        x[lo:hi] = b / np.linalg.norm(b, axis=1, keepdims=True)
    return x


# ----- naive references (N x N matrices) -----------------------------------------------------


def full_gram(x: np.ndarray) -> np.ndarray:
    """x @ x.T into one N x N float32 array, filled in row blocks (numpy's single SYRK call on a
    40k x 40k output segfaults inside its bundled OpenBLAS here)."""
    out = np.empty((len(x), len(x)), dtype=np.float32)
    for lo in range(0, len(x), 4096):
        np.matmul(x[lo : lo + 4096], x.T, out=out[lo : lo + 4096])
    return out


def naive_kcenter(x: np.ndarray, k: int, first: int) -> np.ndarray:
    """The official kCenterGreedy on a full N x N matrix, filled as sklearn's `pairwise_distances`
    does for float32 rows: blocks of -2 x.c + ||x||^2 + ||c||^2 in float64, stored as float32,
    clamped at 0, float32 sqrt; then farthest-first with np.argmax (ties: lowest index)."""
    dist = np.empty((len(x), len(x)), dtype=np.float32)
    x64 = x.astype(np.float64)
    sq = np.einsum("ij,ij->i", x64, x64)
    for lo in range(0, len(x), 1024):
        d2 = x64[lo : lo + 1024] @ x64.T
        d2 *= -2
        d2 += sq[lo : lo + 1024, None]
        d2 += sq[None, :]
        dist[lo : lo + 1024] = d2
    del x64, d2
    np.maximum(dist, 0, out=dist)
    np.sqrt(dist, out=dist)
    m = dist[first].copy()
    m[first] = -1
    picks = [first]
    while len(picks) < k:
        i = int(np.argmax(m))
        picks.append(i)
        np.minimum(m, dist[i], out=m)
        m[picks] = -1
    return np.asarray(picks, dtype=np.int64)


def naive_deita(x: np.ndarray, scores: np.ndarray, budget: int, tau: float) -> np.ndarray:
    """All pairwise similarities up front, then the batch-size-1 filter."""
    sim = full_gram(x)
    order = np.lexsort((np.arange(len(x)), -scores))
    chosen = [int(order[0])]
    for i in order[1:]:
        if len(chosen) >= budget:
            break
        if sim[i, chosen].max() > tau:
            continue
        chosen.append(int(i))
    return np.asarray(chosen, dtype=np.int64)


# ----- one case in this process --------------------------------------------------------------


def run_case(method: str, impl: str, n: int, k: int, tau: float) -> dict:
    sys.path.insert(0, str(ROOT))
    from instructkit.selection.deita import deita_select
    from instructkit.selection.kcenter import kcenter_greedy

    x = clustered_unit_vectors(n) if method == "deita_clustered" else unit_vectors(n)
    scores = np.random.default_rng(1).random(n)
    base = rss_mb()
    cpu0 = cpu_s()
    t0 = time.perf_counter()
    if method == "kcenter" and impl == "naive":
        idx = naive_kcenter(x, k, 0)
    elif method == "kcenter":  # ours: exact; f32: the float32-only algorithm before the change
        idx = kcenter_greedy(x, k, first_index=0, exact=impl == "ours")
    else:
        idx = deita_select(x, scores, k, tau) if impl == "ours" else naive_deita(x, scores, k, tau)
    wall = time.perf_counter() - t0
    cpu = cpu_s() - cpu0
    out = {
        "method": method,
        "impl": impl,
        "n": n,
        "k": k,
        "wall_s": wall,
        "cpu_s": cpu,
        "peak_rss_mb": rss_mb(),
    }
    out["load1"] = os.getloadavg()[0]
    out.update(data_rss_mb=base, selected=len(idx))
    out["digest"] = hashlib.sha1(np.asarray(idx, dtype=np.int64).tobytes()).hexdigest()[:16]
    return out


def gemm_gflops() -> float:
    import torch

    a = torch.rand(20000, D)
    b = torch.rand(1024, D)
    a @ b.T
    t = time.perf_counter()
    for _ in range(3):
        a @ b.T
    return 3 * 2 * 20000 * 1024 * D / (time.perf_counter() - t) / 1e9


def subprocess_case(method: str, impl: str, n: int, k: int, tau: float, timeout: float) -> dict:
    cmd = [sys.executable, __file__, "--case", method, impl, str(n), str(k), str(tau)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"method": method, "impl": impl, "n": n, "k": k, "error": f"timeout {timeout:.0f}s"}
    if proc.returncode != 0:
        why = proc.stderr.strip()[-300:] or f"exit status {proc.returncode} (negative: killed by that signal)"
        return {"method": method, "impl": impl, "n": n, "k": k, "error": why}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def largest_naive_n(limit_gb: float, candidates: list[int]) -> int | None:
    ok = [n for n in candidates if n * n * 4 + n * D * 4 <= limit_gb * 1e9]
    return max(ok) if ok else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", nargs=5, metavar=("METHOD", "IMPL", "N", "K", "TAU"))
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--k", type=int, default=10_000)
    ap.add_argument("--tau", type=float, default=0.9)
    ap.add_argument("--naive-limit-gb", type=float, default=8.0)
    ap.add_argument("--naive-sizes", type=int, nargs="+", default=[10_000, 20_000, 40_000])
    ap.add_argument(
        "--methods",
        nargs="+",
        default=["deita", "kcenter"],
        help="deita, kcenter, deita_clustered (hard case)",
    )
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = ap.parse_args()
    if args.case:
        method, impl, n, k, tau = args.case
        print(json.dumps(run_case(method, impl, int(n), int(k), float(tau))))
        return

    gf = gemm_gflops()
    naive_n = largest_naive_n(args.naive_limit_gb, args.naive_sizes)
    print(f"# {os.cpu_count()} cpus, torch GEMM {gf:.1f} GFLOP/s, d={D}, k/budget={args.k}, tau={args.tau}")
    print(f"# naive (N x N float32) guarded at {args.naive_limit_gb} GB -> largest naive N = {naive_n}")
    rows = []
    for method in args.methods:
        plan = [(impl, n) for n in args.sizes for impl in (("ours", "f32") if method == "kcenter" else ("ours",))]
        if naive_n:
            plan = [("ours", naive_n), ("naive", naive_n)] + plan
        for impl, n in plan:
            row = subprocess_case(method, impl, n, args.k, args.tau, args.timeout)
            row["ideal_mb"] = n * D * 4 / 2**20
            if method == "kcenter":  # every row against every center once
                flops = 2 * n * args.k * D
            elif method == "deita_clustered":  # every row visited, on average against half the accepted set
                flops = n * row.get("selected", args.k) * D
            else:  # the accepted rows against each other
                flops = args.k * args.k * D
            row["ideal_s"] = flops / (gf * 1e9)
            rows.append(row)
            print(json.dumps(row), flush=True)
    if naive_n:
        for method in args.methods:
            pair = [r for r in rows if r["method"] == method and r["n"] == naive_n and "error" not in r]
            if len(pair) == 2:
                same = pair[0]["digest"] == pair[1]["digest"]
                print(f"# {method} at N={naive_n}: ours == naive, identical ordered indices: {same}")
    for n in args.sizes:
        pair = {r["impl"]: r for r in rows if r["method"] == "kcenter" and r["n"] == n and "error" not in r}
        if "ours" in pair and "f32" in pair:
            o, f = pair["ours"], pair["f32"]
            print(
                f"# kcenter at N={n}: exact / float32-only (the algorithm before) = {o['wall_s'] / f['wall_s']:.2f}x "
                f"wall, {o['cpu_s'] / f['cpu_s']:.2f}x cpu; recorded before the change at 100k: 51.4 s wall, 24.5 s cpu"
            )
    print()
    print(
        f"{'method':8} {'impl':6} {'N':>9} {'wall s':>8} {'cpu s':>8} {'load':>5} {'peak MB':>9} {'data MB':>8} "
        f"{'ideal MB':>9} {'peak/ideal':>10} {'ideal s':>8} {'selected':>8}"
    )
    for r in rows:
        if "error" in r:
            print(f"{r['method']:8} {r['impl']:6} {r['n']:>9} error: {r['error']}")
            continue
        print(
            f"{r['method']:8} {r['impl']:6} {r['n']:>9} {r['wall_s']:>8.1f} {r['cpu_s']:>8.1f} {r['load1']:>5.1f} "
            f"{r['peak_rss_mb']:>9.0f} "
            f"{r['data_rss_mb']:>8.0f} {r['ideal_mb']:>9.0f} {r['peak_rss_mb'] / r['ideal_mb']:>10.2f} "
            f"{r['ideal_s']:>8.1f} {r['selected']:>8}"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
