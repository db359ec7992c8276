"""Judge throughput: AlpaGasus and the rubric judge over Alpaca rows, fake latency server and local model.

    python bench/judge_throughput.py [--rows 2000] [--latency 0.1] [--local-rows 50] [--local-max-tokens 32]

For each backend and judge: a first run (every row a model call), then a re-run of the same rows
with a fresh work folder, so every answer comes from the response cache (not the journal). Reports
rows/s, the cached re-run time and the parse-failure rate. The fake server answers with a hash,
not a score, so its parse-failure rate is 100% by construction: it measures the judge's overhead
(prompting, parsing, journaling) at a fixed latency, not judging quality. The local SmolLM2-135M
run uses fewer rows and a smaller max_tokens (CPU generation), as printed.
Data: ../shared/data/alpaca_sample_17970.json (skipped with a message when absent).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from instructkit.models import LLM
from instructkit.registry import get
from instructkit.run.runner import RunContext

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "alpaca_sample_17970.json"


def run_judge(
    name: str, rows: list[dict], llm: LLM, options: dict, concurrency: int
) -> tuple[float, list[dict]]:
    info = get("judge", name)
    with tempfile.TemporaryDirectory() as work:
        ctx = RunContext(
            llm=llm,
            options=info.make_options(options),
            method=name,
            work_dir=Path(work),
            concurrency=concurrency,
            progress=False,
        )
        start = time.perf_counter()
        out = info.func(rows, ctx)
        return time.perf_counter() - start, out


def measure(label: str, name: str, rows: list[dict], llm: LLM, options: dict, concurrency: int) -> dict:
    first, out = run_judge(name, rows, llm, options, concurrency)
    calls = llm.stats.calls
    again, out2 = run_judge(name, rows, llm, options, concurrency)
    assert llm.stats.calls == calls, "the re-run made model calls: the cache did not answer"
    failures = sum(r.get(f"{name}_parse") != "ok" for r in out)
    return {
        "backend": label,
        "judge": name,
        "rows": len(rows),
        "first_s": first,
        "rows_per_s": len(rows) / first,
        "cached_rerun_s": again,
        "cached_rows_per_s": len(rows) / again,
        "parse_failure_rate": failures / len(rows),
        "errors": sum(r.get(f"{name}_parse") == "error" for r in out),
        "options": options,
    }


def print_table(results: list[dict]) -> None:
    head = f"{'backend':<30} {'judge':<10} {'rows':>5} {'first s':>8} {'rows/s':>8} {'cached s':>9} {'cached rows/s':>14} {'parse fail':>10}"
    print(head)
    print("-" * len(head))
    for r in results:
        print(
            f"{r['backend']:<30} {r['judge']:<10} {r['rows']:>5} {r['first_s']:>8.2f} {r['rows_per_s']:>8.1f} "
            f"{r['cached_rerun_s']:>9.2f} {r['cached_rows_per_s']:>14.1f} {r['parse_failure_rate']:>10.1%}"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--latency", type=float, default=0.1, help="fake server latency per request (s)")
    ap.add_argument("--concurrency", type=int, default=256)
    ap.add_argument("--local-rows", type=int, default=50, help="rows for the local model (0 skips it)")
    ap.add_argument("--local-max-tokens", type=int, default=32)
    ap.add_argument("--json", type=str, default=None, help="also write the results here")
    args = ap.parse_args(argv)
    if not DATA.exists():
        print(f"skipped: {DATA} not found (benchmark data lives in ../shared/data/)")
        return 0
    records = json.loads(DATA.read_text(encoding="utf-8"))[: args.rows]
    results = []

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the fake server is test code (tests/fakes.py), not installed
    from fakes import serve_fake

    with serve_fake(latency=args.latency, record=False) as url, tempfile.TemporaryDirectory() as cache_dir:
        llm = LLM(
            "fake-model", api_base=url, cache_dir=cache_dir, concurrency=args.concurrency, max_retries=2
        )
        label = f"fake server ({args.latency * 1000:.0f} ms)"
        results.append(measure(label, "alpagasus", records, llm, {}, args.concurrency))
        results.append(measure(label, "rubric", records, llm, {"logprobs": True}, args.concurrency))
        llm.close()
    print_table(results)
    print(f"load average (1 min) on this machine: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    sys.stdout.flush()

    if args.local_rows > 0:
        with tempfile.TemporaryDirectory() as cache_dir:
            llm = LLM("local", cache_dir=cache_dir)
            rows = records[: args.local_rows]
            opts = {"max_tokens": args.local_max_tokens}
            label = f"local SmolLM2 (max_tokens {args.local_max_tokens})"
            results.append(measure(label, "alpagasus", rows, llm, opts, 64))
            results.append(measure(label, "rubric", rows, llm, {**opts, "logprobs": True}, 64))
        print()
        print_table(results)
        print(f"load average (1 min) on this machine: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
