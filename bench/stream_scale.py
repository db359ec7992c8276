"""Streaming judge at scale: `instructkit judge alpagasus ROWS -m NAME --api-base URL` as a whole process
against the fast fake OpenAI-compatible server (tests/fakes.py, no latency), at growing row counts.

    python bench/stream_scale.py [--sizes 10000,100000] [--million] [--window 10000] [--check-size 100000]

Per size: wall time (the process, timed from outside), rows/s, microseconds per row, and the peak RSS of
the CLI process (os.wait4's ru_maxrss), beside the ideal: time linear in rows (the first size's time per
row times the rows) and issue 20's memory target (at most 500 MB at any size). AlpaGasus runs with
`-o top_logprobs 0` (no logprobs: issue 20's million-row scenario) and a fresh cache per run. With
`--check-size N` (default 100000, when among the sizes) the same N rows run once more in memory
(`--window 0`) and the two outputs are compared byte for byte. `--million` adds 1,000,000 rows (about
15 minutes on a 2-core machine).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE.parent))
from api_throughput import cli_command, write_rows  # noqa: E402  (the same rows and command as the API bench)

RSS_TARGET_MB = 500


def run_judge(url: str, rows: Path, out: Path, window: int, concurrency: int) -> dict:
    """The CLI on `rows`, timed from outside, with its peak RSS (this child's, from wait4)."""
    cmd = cli_command() + ["judge", "alpagasus", str(rows), "--out", str(out), "-m", "bench-model", "--api-base", url,
                           "-o", "top_logprobs", "0", "--concurrency", str(concurrency), "--window", str(window),
                           "--cache-dir", str(out.with_suffix(".cache")), "--quiet"]  # fmt: skip
    env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True")
    start = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        err.seek(0)
        stderr = err.read().decode("utf-8", "replace")
    if proc.returncode != 0:
        raise RuntimeError(f"CLI failed ({proc.returncode}):\n{stderr[-3000:]}")
    return {"wall_s": wall, "rss_mb": usage.ru_maxrss / 1024, "rows_out": sum(1 for _ in out.open("rb"))}


def digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000", help="row counts, comma-separated")
    ap.add_argument("--million", action="store_true", help="add 1,000,000 rows (about 15 minutes)")
    ap.add_argument("--window", type=int, default=10_000, help="rows per window (the CLI's --window)")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--check-size", type=int, default=100_000, help="rows whose output is compared with --window 0")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()] + ([1_000_000] if args.million else [])
    sys.path.insert(0, str(REPO / "tests"))  # the fake server is test code (tests/fakes.py), not installed
    from fakes import serve_fake

    load = os.getloadavg()[0]
    print(f"load average {load:.2f} on {os.cpu_count()} CPUs{' (under load)' if load >= 3 else ''}; "
          f"window {args.window}, concurrency {args.concurrency}, fake server without latency")
    results = []
    with tempfile.TemporaryDirectory(prefix="ik-stream-") as tmp, serve_fake(record=False) as url:
        for n in sizes:
            rows = write_rows(Path(tmp) / f"rows{n}.jsonl", n)
            out = Path(tmp) / f"out{n}.jsonl"
            result = {"rows": n, **run_judge(url, rows, out, args.window, args.concurrency)}
            if n == args.check_size:
                whole = Path(tmp) / f"whole{n}.jsonl"
                memory = run_judge(url, rows, whole, 0, args.concurrency)
                result["identical"] = digest(out) == digest(whole)
                result["in_memory"] = memory
            results.append(result)
            print(f"  {n:,} rows: {result['wall_s']:.1f} s, {result['rss_mb']:.0f} MB", file=sys.stderr)
    per_row = results[0]["wall_s"] / results[0]["rows"]
    print(f"\n| rows | wall s | rows/s | us/row | ideal s (linear) | per row vs {results[0]['rows']:,} | "
          f"peak RSS MB | target MB | output |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in results:
        check = ""
        if "identical" in r:
            m = r["in_memory"]
            check = (f"{'identical to' if r['identical'] else 'DIFFERS from'} in-memory "
                     f"({m['wall_s']:.1f} s, {m['rss_mb']:.0f} MB)")
        print(f"| {r['rows']:,} | {r['wall_s']:.1f} | {r['rows'] / r['wall_s']:,.0f} | "
              f"{r['wall_s'] / r['rows'] * 1e6:.0f} | {per_row * r['rows']:.1f} | "
              f"{r['wall_s'] / r['rows'] / per_row:.2f}x | {r['rss_mb']:.0f} | {RSS_TARGET_MB} | {check} |")


if __name__ == "__main__":
    main()
