"""Selection at scale: DEITA's filter and exact k-center greedy on a memory-mapped float32 .npy.

The embeddings are synthetic but shaped like sentence embeddings: a seeded two-level Gaussian mixture
(topic centres; prompts around them; a few near-paraphrases of each prompt, cosine ~0.94, which DEITA's
tau = 0.9 rejects), each row normalised to unit length, written once per N as a
memory-mapped .npy under `--data-dir` (block by block: generating 1M x 384 never holds it in memory).
Every run is a fresh subprocess that opens the file with `np.load(mmap_mode="r")`, as `-o embeddings
FILE.npy` does, and reports the selection's wall time and its own peak RSS: the kernel's high-water mark
of its address space (`VmHWM`), which counts the mapped pages it touched as well as numpy's and torch's
buffers. (`ru_maxrss` would not do: Linux carries the parent's peak into a child across exec.)

Ideal time is the memory-bandwidth bound: the bytes that must be read at least once (k-center: every
row, N * d * 4; DEITA: every row the filter visits before its budget fills) over the copy bandwidth
measured here, in this run. k-center also shows the N * k * d GEMM bound (every row against every
centre once, at the float32 GEMM rate measured here): farthest-first without pruning can do no better.
"plain" is the textbook algorithm on the full N x N matrix (only at N = 10k, where it fits); its picks
must be identical to ours, and the run says so. Rows whose load average (1 min) exceeded the core
count at start or end are marked "under load": their times are not this machine's.

    python bench/selection_scale.py                     # 10k and 100k
    python bench/selection_scale.py --million           # and 1M (refused while `uptime` load >= 3)
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

ROOT = Path(__file__).resolve().parents[1]
D = 384
TOPICS = 2000  # mixture components
SPREAD = 0.6  # norm of a prompt's offset from its topic centre (cosine to it ~0.86, to a topic mate ~0.74)
PARAPHRASES = 4  # rows per prompt (on average)
JITTER = 0.25  # norm of a row's offset from its prompt (cosine between two rows of a prompt ~0.94)
BLOCK = 65536


def data_file(data_dir: Path, n: int, d: int = D, seed: int = 0) -> Path:
    """The N x d float32 .npy for this size, written block by block once (every block its own seed,
    so the first N rows of a bigger file are the same distribution)."""
    path = data_dir / f"mixture-n{n}-d{d}-t{TOPICS}-s{SPREAD}-p{PARAPHRASES}-j{JITTER}-seed{seed}.npy"
    if path.is_file():
        return path
    data_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 0])
    topics = rng.standard_normal((TOPICS, d), dtype=np.float32)
    topics /= np.linalg.norm(topics, axis=1, keepdims=True)
    tmp = path.with_suffix(".tmp.npy")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, d))
    for b, lo in enumerate(range(0, n, BLOCK)):
        hi = min(n, lo + BLOCK)
        r = np.random.default_rng([seed, 1, b])
        prompts = topics[r.integers(TOPICS, size=max(1, (hi - lo) // PARAPHRASES))]
        prompts += np.float32(SPREAD / np.sqrt(d)) * r.standard_normal(prompts.shape, dtype=np.float32)
        prompts /= np.linalg.norm(prompts, axis=1, keepdims=True)
        x = prompts[r.integers(len(prompts), size=hi - lo)]
        x += np.float32(JITTER / np.sqrt(d)) * r.standard_normal(x.shape, dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[lo:hi] = x
    out.flush()
    del out
    os.replace(tmp, path)
    return path


# ----- the plain algorithms on full N x N matrices (the reference at small N) -----------------


def plain_kcenter(x: np.ndarray, k: int, first: int) -> np.ndarray:
    """Farthest-first on the full distance matrix, filled as sklearn's `pairwise_distances` does for
    float32 rows (float64 -2 x.c + ||x||^2 + ||c||^2, stored as float32, clamped, float32 sqrt);
    argmax ties to the lowest index, as the official kCenterGreedy."""
    x64 = np.asarray(x, dtype=np.float64)
    sq = np.einsum("ij,ij->i", x64, x64)
    dist = np.empty((len(x), len(x)), dtype=np.float32)
    for lo in range(0, len(x), 1024):
        d2 = x64[lo : lo + 1024] @ x64.T
        d2 *= -2
        d2 += sq[lo : lo + 1024, None]
        d2 += sq[None, :]
        dist[lo : lo + 1024] = d2
    np.sqrt(np.maximum(dist, 0, out=dist), out=dist)
    m = dist[first].copy()
    m[first] = -1
    picks = [first]
    while len(picks) < k:
        i = int(np.argmax(m))
        picks.append(i)
        np.minimum(m, dist[i], out=m)
        m[picks] = -1
    return np.asarray(picks, dtype=np.int64)


def plain_deita(x: np.ndarray, scores: np.ndarray, budget: int, tau: float) -> np.ndarray:
    """Every similarity up front, then the batch-size-1 filter in score order."""
    x = np.asarray(x, dtype=np.float32)
    sim = x @ x.T
    order = np.lexsort((np.arange(len(x)), -scores))
    chosen = [int(order[0])]
    for i in order[1:]:
        if len(chosen) >= budget:
            break
        if sim[i, chosen].max() <= tau:
            chosen.append(int(i))
    return np.asarray(chosen, dtype=np.int64)


# ----- one run, in its own process ------------------------------------------------------------


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM; ru_maxrss where /proc is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_case(method: str, impl: str, path: str, k: int, tau: float) -> dict:
    sys.path.insert(0, str(ROOT))
    from instructkit.selection.common import stable_order
    from instructkit.selection.deita import deita_select
    from instructkit.selection.kcenter import kcenter_greedy

    x = np.load(path, mmap_mode="r")
    n = len(x)
    scores = np.random.default_rng(1).random(n)
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    if method == "kcenter":
        idx = plain_kcenter(x, k, 0) if impl == "plain" else kcenter_greedy(x, k, first_index=0)
        visited = n
    else:
        idx = plain_deita(x, scores, k, tau) if impl == "plain" else deita_select(x, scores, k, tau)
        rank = np.empty(n, dtype=np.int64)
        rank[stable_order(scores)] = np.arange(n)
        visited = int(rank[idx[-1]]) + 1 if len(idx) == k else n
    wall = time.perf_counter() - t0
    return {
        "method": method,
        "impl": impl,
        "n": n,
        "k": k,
        "wall_s": wall,
        "peak_rss_mb": peak_rss_mb(),
        "load": max(load0, os.getloadavg()[0]),
        "selected": len(idx),
        "visited": visited,
        "digest": hashlib.sha1(np.asarray(idx, dtype=np.int64).tobytes()).hexdigest()[:12],
    }


def subprocess_case(method: str, impl: str, path: Path, k: int, tau: float, timeout: float) -> dict:
    cmd = [sys.executable, __file__, "--case", method, impl, str(path), str(k), str(tau)]
    head = {"method": method, "impl": impl, "k": k}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**head, "error": f"timeout after {timeout:.0f} s"}
    if proc.returncode != 0:
        return {**head, "error": proc.stderr.strip()[-300:] or f"exit status {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----- this machine's bounds ------------------------------------------------------------------


def copy_bandwidth() -> float:
    """Bytes per second of a large numpy copy (read + write counted), best of 3."""
    a = np.ones(1 << 26, dtype=np.float32)  # 256 MiB
    b = np.empty_like(a)
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        np.copyto(b, a)
        best = min(best, time.perf_counter() - t)
    return 2 * a.nbytes / best


def gemm_rate() -> float:
    """float32 flop/s of the products k-center runs (rows against a block of centres), through torch."""
    import torch

    a, b = torch.rand(32768, D), torch.rand(1024, D)
    a @ b.T
    t = time.perf_counter()
    for _ in range(3):
        a @ b.T
    return 3 * 2 * a.shape[0] * b.shape[0] * D / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", nargs=5, metavar=("METHOD", "IMPL", "PATH", "K", "TAU"), help=argparse.SUPPRESS)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--million", action="store_true", help="also N = 1,000,000 (only while the load is under 3)")
    ap.add_argument("--k", type=int, default=10_000, help="k-center k and DEITA budget (capped at N / 10)")
    ap.add_argument("--tau", type=float, default=0.9)
    ap.add_argument("--plain-max-n", type=int, default=10_000, help="largest N for the N x N plain runs")
    ap.add_argument("--methods", nargs="+", default=["deita", "kcenter"])
    ap.add_argument("--timeout", type=float, default=900, help="seconds per run")
    ap.add_argument("--data-dir", type=Path, default=Path("/tmp/instructkit-selection-scale"))
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args()
    if args.case:
        method, impl, path, k, tau = args.case
        print(json.dumps(run_case(method, impl, path, int(k), float(tau))))
        return

    sizes = list(args.sizes)
    if args.million:
        load = os.getloadavg()[0]
        if load < 3:
            sizes.append(1_000_000)
        else:
            print(f"# 1M skipped: load average {load:.1f} (>= 3)")
    bw, gf = copy_bandwidth(), gemm_rate()
    cores = os.cpu_count() or 1
    print(f"# {cores} cpus, copy bandwidth {bw / 1e9:.1f} GB/s, float32 GEMM {gf / 1e9:.0f} GFLOP/s, "
          f"d={D}, tau={args.tau}, load {os.getloadavg()[0]:.1f}")  # fmt: skip
    rows = []
    for n in sizes:
        path = data_file(args.data_dir, n)
        k = min(args.k, n // 10)
        for method in args.methods:
            for impl in ("ours", "plain") if n <= args.plain_max_n else ("ours",):
                r = subprocess_case(method, impl, path, k, args.tau, args.timeout)
                r.update(n=n, k=k)
                if "error" not in r:
                    read = (n if method == "kcenter" else r["visited"]) * D * 4
                    r["ideal_read_s"] = read / bw
                    r["ideal_gemm_s"] = 2 * n * k * D / gf if method == "kcenter" else None
                    r["under_load"] = r["load"] > cores
                rows.append(r)
                print(json.dumps(r), flush=True)
    print()
    print(f"{'method':8} {'impl':5} {'N':>9} {'k':>6} {'wall s':>8} {'peak RSS MB':>11} {'ns/(N*k)':>9} "
          f"{'ideal read s':>12} {'ideal GEMM s':>12} {'visited':>9} {'load':>5}  picks")  # fmt: skip
    for r in rows:
        if "error" in r:
            print(f"{r['method']:8} {r['impl']:5} {r['n']:>9} {r['k']:>6} error: {r['error']}")
            continue
        gemm = f"{r['ideal_gemm_s']:.2f}" if r["ideal_gemm_s"] is not None else "-"
        twin = [p for p in rows if p is not r and "error" not in p and (p["method"], p["n"]) == (r["method"], r["n"])]
        same = "" if not twin else " == plain" if twin[0]["digest"] == r["digest"] else " DIFFER from plain"
        print(
            f"{r['method']:8} {r['impl']:5} {r['n']:>9} {r['k']:>6} {r['wall_s']:>8.2f} {r['peak_rss_mb']:>11.0f} "
            f"{r['wall_s'] / (r['n'] * r['k']) * 1e9:>9.2f} {r['ideal_read_s']:>12.3f} {gemm:>12} "
            f"{r['visited']:>9} {r['load']:>5.1f}  {r['digest']}{same}{' (under load)' if r['under_load'] else ''}"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
