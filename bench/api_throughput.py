"""API throughput: chat requests to a loopback OpenAI-compatible server with fixed latency.

    python bench/api_throughput.py [--requests 5000] [--concurrency 200] [--latency 0.2]
                                   [--cached-rows 10000] [--distilabel-python /tmp/distilabel-venv/bin/python]

Paths, each in its own fresh interpreter (the fake server runs in a third process):
- instructkit CLI: `instructkit judge alpagasus ROWS.jsonl` on `--requests` rows, the whole process
  timed from outside (interpreter start, imports, reading rows, writing the output and manifest
  included), with its defaults (cache in a fresh dir, journal, retries, progress line, AlpaGasus's
  top-20 logprobs per reply). The server records request times, so the table also says how long
  passed from launch to the first request and how many requests were in flight on average.
- instructkit http: LLM + RunContext.map over the fast aiohttp path, with cache writes (fresh temp
  cache dir), retries (max_retries=6) and progress on, journaling to a temp work dir.
- instructkit litellm: the same through litellm (`via="litellm"`), for comparison.
- named providers: the same CLI command with `-m openai/bench-model` (OPENAI_BASE_URL pointed at the
  server), `-m groq/bench-model` (GROQ_BASE_URL) and `-m anthropic/bench-model` (ANTHROPIC_BASE_URL:
  the server's Messages API, which has no logprobs), each on its fast path and with `--via litellm`
  (the path these specs took before they had one).
- distilabel 1.5.3, when a side venv with it is given: OpenAILLM.agenerate driven directly at the
  same concurrency (its best case, the "vs distilabel" baseline), and its usual way, a Pipeline
  (LoadDataFromDicts >> TextGeneration) with batches of `concurrency` rows.
- cached re-run of `--cached-rows` rows: the same CLI command answering every row from the response
  cache (new output and work dir, so no journal to lean on), whole process timed from outside; and
  once more from the journal (same work dir again).
Ideal rate = concurrency / latency. Goals (issue 14): the CLI >= 75% of ideal and >= 5x distilabel's
best case, launch to first request <= 0.5 s, cached re-run of 10,000 rows <= 3 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
REPO = HERE.parent.parent


def prompts(n: int) -> list[str]:
    return [f"Bench prompt {i}: write one short sentence about the number {i}." for i in range(n)]


def write_rows(path: Path, n: int) -> Path:
    """`n` instruction/output rows for a judge, as a JSONL file."""
    with path.open("w", encoding="utf-8") as fh:
        for i, prompt in enumerate(prompts(n)):
            fh.write(json.dumps({"instruction": prompt, "output": f"The number {i} is a number."}) + "\n")
    return path


def cli_command() -> list[str]:
    """The `instructkit` console script of this interpreter's environment (else `python -m`)."""
    script = Path(sys.executable).parent / "instructkit"
    return [str(script)] if script.exists() else [sys.executable, "-m", "instructkit.cli"]


def run_cli(url: str, rows: Path, out: Path, cache_dir: Path, concurrency: int,
            model: list[str] | None = None, env: dict[str, str] | None = None) -> dict:
    """`instructkit judge alpagasus` as a user runs it, timed from outside: wall seconds, the wall
    clock at launch (to compare with the server's request times) and the summary line. `model`: the
    model flags (default `-m bench-model --api-base URL`); `env`: more environment (a provider's
    base-URL variable)."""
    model = model or ["-m", "bench-model", "--api-base", url]
    cmd = cli_command() + ["judge", "alpagasus", str(rows), "--out", str(out), *model,
                           "--concurrency", str(concurrency), "--cache-dir", str(cache_dir)]  # fmt: skip
    env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True", **(env or {}))
    launched, start = time.time(), time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    wall = time.perf_counter() - start
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"CLI failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    summary = next((line for line in proc.stderr.splitlines() if line.startswith("judge alpagasus:")), "")
    return {"wall_s": wall, "launched": launched, "summary": summary, "rows": sum(1 for _ in out.open())}


def request_window(times: list[float], launched: float, latency: float) -> dict:
    """From the server's request times: seconds from launch to the first request, and the mean number
    of requests in flight between the first request and the last reply."""
    times = sorted(times)
    return {"first_s": times[0] - launched, "in_flight": len(times) * latency / (times[-1] - times[0] + latency)}


# ----- workers (each runs in a fresh interpreter) -------------------------------------------------


def worker_instructkit(args: argparse.Namespace) -> dict:
    """LLM + RunContext.map with cache, retries, journal and progress on."""
    from instructkit.models import LLM
    from instructkit.runner import RunContext

    llm = LLM(
        "bench-model",
        api_base=args.url,
        via=args.via,
        cache_dir=args.cache_dir,
        concurrency=args.concurrency,
        max_retries=6,
        timeout=60,
    )
    ctx = RunContext(
        llm=llm, method="bench", work_dir=Path(args.work_dir), concurrency=args.concurrency, progress=True
    )

    async def one(prompt: str) -> dict:
        comp = await llm.achat(prompt, max_tokens=16)
        return {"text": comp.text}

    # Load the client libraries before the clock starts, as distilabel's `load()` does.
    llm.backend  # noqa: B018
    if args.via == "litellm":
        from instructkit.models.pricing import import_litellm

        import_litellm()
    items = prompts(args.requests)
    cpu0, start = time.process_time(), time.perf_counter()
    results = ctx.map(items, one, stage="chat")
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
    llm.close()
    return {
        "ok": sum(r.ok for r in results),
        "wall_s": wall,
        "calls": llm.stats.calls,
        "cache_hits": llm.stats.cache_hits,
        "retries": llm.stats.retries,
        "cpu_s": cpu,
        "imported": [m for m in ("aiohttp", "litellm", "numpy") if m in sys.modules],
    }


def worker_distilabel(args: argparse.Namespace) -> dict:
    """distilabel's OpenAILLM.agenerate, `concurrency` requests in flight."""
    from distilabel.models.llms import OpenAILLM

    llm = OpenAILLM(model="bench-model", base_url=args.url, api_key="not-needed", max_retries=6, timeout=60)
    llm.load()
    items = prompts(args.requests)

    async def main() -> list:
        sem = asyncio.Semaphore(args.concurrency)

        async def one(prompt: str):
            async with sem:
                return await llm.agenerate(input=[{"role": "user", "content": prompt}], max_new_tokens=16)

        return await asyncio.gather(*(one(p) for p in items))

    cpu0, start = time.process_time(), time.perf_counter()
    out = asyncio.run(main())
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
    ok = sum(1 for o in out if o and o.get("generations") and o["generations"][0])
    return {"ok": ok, "wall_s": wall, "calls": len(items), "cpu_s": cpu}


def worker_distilabel_pipeline(args: argparse.Namespace) -> dict:
    """distilabel's usual way: a Pipeline (LoadDataFromDicts >> TextGeneration), batches of
    `concurrency` rows (a batch's requests run concurrently); wall time includes pipeline start."""
    from distilabel.models.llms import OpenAILLM
    from distilabel.pipeline import Pipeline
    from distilabel.steps import LoadDataFromDicts
    from distilabel.steps.tasks import TextGeneration

    items = prompts(args.requests)
    cpu0, start = time.process_time(), time.perf_counter()
    with Pipeline(name="ik-bench", cache_dir=args.work_dir) as pipeline:
        load = LoadDataFromDicts(data=[{"instruction": p} for p in items], batch_size=args.concurrency)
        llm = OpenAILLM(model="bench-model", base_url=args.url, api_key="not-needed", max_retries=6, timeout=60,
                        generation_kwargs={"max_new_tokens": 16})  # fmt: skip
        gen = TextGeneration(llm=llm, input_batch_size=args.concurrency)
        load >> gen
    distiset = pipeline.run(use_cache=False)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
    rows = distiset["default"]["train"]
    return {"ok": sum(1 for r in rows if r["generation"]), "wall_s": wall, "calls": len(items), "cpu_s": cpu}


WORKERS = {
    "instructkit": worker_instructkit,
    "distilabel": worker_distilabel,
    "distilabel-pipeline": worker_distilabel_pipeline,
}


# ----- the driver ---------------------------------------------------------------------------------


def run_worker(
    python: str, kind: str, url: str, args: argparse.Namespace, **extra: str
) -> tuple[dict, float]:
    cmd = [
        python,
        str(HERE),
        "--worker",
        kind,
        "--url",
        url,
        "--requests",
        str(extra.pop("requests", args.requests)),
    ]
    cmd += ["--concurrency", str(args.concurrency)]
    for key, value in extra.items():
        cmd += [f"--{key.replace('_', '-')}"] + ([] if value is True else [str(value)])
    env = dict(os.environ, PYTHONPATH=str(REPO), LITELLM_LOCAL_MODEL_COST_MAP="True")
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} worker failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1]), wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--concurrency", type=int, default=200)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--cached-rows", type=int, default=10000)
    ap.add_argument("--distilabel-python", default="/tmp/distilabel-venv/bin/python")
    ap.add_argument("--skip-litellm", action="store_true")
    ap.add_argument("--skip-named", action="store_true", help="no rows for named providers (openai/, groq/, anthropic/)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per path; the best is reported")
    # worker mode
    ap.add_argument("--worker", choices=sorted(WORKERS))
    ap.add_argument("--url")
    ap.add_argument("--via", default="http")
    ap.add_argument("--cache-dir")
    ap.add_argument("--work-dir")
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(WORKERS[args.worker](args)))
        return

    sys.path.insert(0, str(REPO / "tests"))  # the fake server is test code (tests/fakes.py), not installed
    from fakes import serve_fake

    ideal = args.concurrency / args.latency
    rows: list[tuple[str, float, float, float]] = []  # (path, req/s, client CPU ms per request, load)
    load_before = os.getloadavg()[0]
    first_s = in_flight = float("nan")
    with (
        tempfile.TemporaryDirectory(prefix="ik-bench-") as tmp,
        serve_fake(latency=args.latency, record=False) as url,
    ):
        root = Path(tmp)

        def cli_row() -> None:
            nonlocal first_s, in_flight
            data = write_rows(root / "rows.jsonl", args.requests)
            best = None
            for k in range(args.repeat):
                url.configure(record=True, reset=True)  # request times: launch to first request, in flight
                cpu0 = children_cpu()
                res = run_cli(url, data, root / f"cli-{k}" / "out.jsonl", root / f"cli-{k}" / "cache", args.concurrency)
                cpu = children_cpu() - cpu0
                times = [r["t"] for r in url.requests()]
                url.configure(record=False, reset=True)
                assert res["rows"] == args.requests and len(times) == args.requests, (res, len(times))
                window = request_window(times, res["launched"], args.latency)
                rate = args.requests / res["wall_s"]
                load = os.getloadavg()[0]
                print(f"  CLI run {k + 1}: {rate:.0f} req/s, {res['wall_s']:.2f} s, first request after "
                      f"{window['first_s']:.2f} s, {window['in_flight']:.0f} in flight, load {load:.1f}\n"
                      f"    {res['summary']}", file=sys.stderr)  # fmt: skip
                if best is None or rate > best[0]:
                    best = (rate, 1000 * cpu / args.requests, load, window)
            assert best is not None
            first_s, in_flight = best[3]["first_s"], best[3]["in_flight"]
            rows.append(("instructkit CLI: `judge alpagasus`, whole process (start, imports, output included)",
                         best[0], best[1], best[2]))  # fmt: skip

        def ours(via: str, label: str) -> None:
            best, cpu_ms, load = 0.0, 0.0, 0.0
            for k in range(args.repeat):
                d = root / f"{via}-{k}"
                res, _ = run_worker(sys.executable, "instructkit", url, args, via=via,
                                    cache_dir=d / "cache", work_dir=d / "work")  # fmt: skip
                assert res["ok"] == args.requests and res["calls"] == args.requests, res
                rate = args.requests / res["wall_s"]
                print(f"  {label} run {k + 1}: {rate:.0f} req/s  {res}", file=sys.stderr)
                if rate > best:
                    best, cpu_ms, load = rate, 1000 * res["cpu_s"] / args.requests, os.getloadavg()[0]
            rows.append((label, best, cpu_ms, load))

        def named_row(label: str, model: list[str], env: dict[str, str]) -> None:
            """The CLI with a named provider's spec, its SDK's base-URL variable pointed at the server."""
            data = root / "rows.jsonl"
            best = None
            for k in range(args.repeat):
                url.configure(record=True, reset=True)
                d = root / f"named-{len(rows)}-{k}"
                cpu0 = children_cpu()
                res = run_cli(url, data, d / "out.jsonl", d / "cache", args.concurrency, model, env)
                cpu = children_cpu() - cpu0
                sent = len(url.requests(path=None))
                url.configure(record=False, reset=True)
                assert res["rows"] == args.requests and sent == args.requests, (res, sent)
                rate = args.requests / res["wall_s"]
                print(f"  {label} run {k + 1}: {rate:.0f} req/s, {res['wall_s']:.2f} s\n    {res['summary']}",
                      file=sys.stderr)  # fmt: skip
                if best is None or rate > best[0]:
                    best = (rate, 1000 * cpu / args.requests, os.getloadavg()[0])
            assert best is not None
            rows.append((label, *best))

        cli_row()
        if not args.skip_named:
            keys = {"OPENAI_API_KEY": "bench", "GROQ_API_KEY": "bench", "ANTHROPIC_API_KEY": "bench"}
            named = [("openai/bench-model", {"OPENAI_BASE_URL": url}),
                     ("groq/bench-model", {"GROQ_BASE_URL": url}),
                     ("anthropic/bench-model", {"ANTHROPIC_BASE_URL": url.root})]  # fmt: skip
            for spec, base in named:
                for via in ("http", "litellm"):
                    what = "fast HTTP" if via == "http" else "--via litellm, as before"
                    var = next(iter(base))
                    named_row(f"instructkit CLI: `-m {spec}` ({var}; {what})", ["-m", spec, "--via", via],
                              {**keys, **base})  # fmt: skip
        ours("http", "instructkit in process (LLM + RunContext.map, http fast path)")
        if not args.skip_litellm:
            ours("litellm", "instructkit in process (via litellm)")

        distil = None
        if args.distilabel_python and Path(args.distilabel_python).exists():
            best, cpu_ms, load = 0.0, 0.0, 0.0
            for k in range(args.repeat):
                res, _ = run_worker(args.distilabel_python, "distilabel", url, args)
                assert res["ok"] == args.requests, res
                rate = args.requests / res["wall_s"]
                print(f"  distilabel run {k + 1}: {rate:.0f} req/s  {res}", file=sys.stderr)
                if rate > best:
                    best, cpu_ms, load = rate, 1000 * res["cpu_s"] / args.requests, os.getloadavg()[0]
            distil = best
            rows.append(("distilabel 1.5.3 (OpenAILLM.agenerate, its best case)", best, cpu_ms, load))
            best_p, cpu_p, load_p = 0.0, 0.0, 0.0
            for k in range(args.repeat):
                res, _ = run_worker(args.distilabel_python, "distilabel-pipeline", url, args,
                                    work_dir=root / f"distilabel-{k}")  # fmt: skip
                assert res["ok"] == args.requests, res
                rate = args.requests / res["wall_s"]
                print(f"  distilabel pipeline run {k + 1}: {rate:.0f} req/s  {res}", file=sys.stderr)
                if rate > best_p:
                    best_p, cpu_p, load_p = rate, 1000 * res["cpu_s"] / args.requests, os.getloadavg()[0]
            label_p = f"distilabel 1.5.3 (Pipeline + TextGeneration, batches of {args.concurrency}; CPU: main process only)"
            rows.append((label_p, best_p, cpu_p, load_p))

        # Cached re-run: fill a cache with N rows through the CLI (zero latency), then run the same
        # command again into a new output and work dir (every row from the response cache, no journal),
        # and once more into that same work dir (every row from the journal).
        cached = root / "cached"
        data = write_rows(root / "cached-rows.jsonl", args.cached_rows)
        url.configure(latency=0.0, reset=True)
        run_cli(url, data, cached / "fill" / "out.jsonl", cached / "cache", args.concurrency)
        url.configure(latency=args.latency, reset=True)
        rerun = run_cli(url, data, cached / "rerun" / "out.jsonl", cached / "cache", args.concurrency)
        rerun_load = os.getloadavg()[0]
        print(f"  cached re-run: {rerun['wall_s']:.2f} s, load {rerun_load:.1f}\n    {rerun['summary']}", file=sys.stderr)
        assert rerun["rows"] == args.cached_rows and f"cache hits {args.cached_rows}" in rerun["summary"], rerun
        again = run_cli(url, data, cached / "rerun" / "out.jsonl", cached / "cache", args.concurrency)
        print(f"  journal re-run: {again['wall_s']:.2f} s\n    {again['summary']}", file=sys.stderr)
        assert f"reused {args.cached_rows}" in again["summary"], again

    print()
    print(f"{args.requests} chat requests, concurrency {args.concurrency}, server latency {args.latency * 1000:.0f} ms,"
          f" ideal {ideal:.0f} req/s; {os.cpu_count()} cores, load average {load_before:.1f} before and"
          f" {os.getloadavg()[0]:.1f} after (other work on the machine slows every path)")  # fmt: skip
    print()
    print("| path | req/s | % of ideal | vs distilabel | client CPU ms/request | load |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for label, rate, cpu_ms, load in rows:
        vs = f"{rate / distil:.1f}x" if distil else "n/a"
        print(f"| {label} | {rate:.0f} | {100 * rate / ideal:.0f}% | {vs} | {cpu_ms:.2f} | {load:.1f} |")
    print(f"| ideal (concurrency / latency) | {ideal:.0f} | 100% | {f'{ideal / distil:.1f}x' if distil else 'n/a'} | | |")
    print()
    print(f"CLI: launch to first request {first_s:.2f} s (goal <= 0.5 s); {in_flight:.0f} of {args.concurrency} requests"
          " in flight on average between the first request and the last reply")  # fmt: skip
    print(f"Cached re-run of {args.cached_rows:,} rows with the CLI (whole process, timed from outside):")
    print(f"  from the response cache (new output and work dir): {rerun['wall_s']:.2f} s (goal <= 3 s), load {rerun_load:.1f}")
    print(f"  from the journal (same work dir again):            {again['wall_s']:.2f} s")


def children_cpu() -> float:
    """CPU seconds (user + system) used so far by finished child processes."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    main()
