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
Provider scenarios (issue 20), `--scenarios cap,rpm,faults,logprobs` (instead of the table above),
each the CLI beside distilabel's agenerate and the ideal, from one run against the fake server:
- cap: the server admits 100 in flight and answers 429 + Retry-After 1 above that (`--cap-rows`);
- rpm: a token bucket advertised as 3,000 RPM in x-ratelimit-* headers, empty at the start, 429
  above it (`--rpm-rows`); the rate sustained between the first and last answer, and % refused;
- faults: the random fault mix (10% 500, 5% 429 Retry-After 1 s, 2% broken JSON, 1% dropped
  mid-body, 1% 3 s slow; seeded) against the same rows clean, outputs compared byte for byte;
- logprobs: replies shaped like a judge's (a score, then `--reply-words` words) with OpenAI's top
  logprobs when asked: defaults (top 20) beside `-o top_logprobs 0`, CPU per row and cache size.
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


def run_cli(url: str, rows: Path, out: Path, cache_dir: Path, concurrency: int, extra: tuple[str, ...] = (),
            model: list[str] | None = None, env: dict[str, str] | None = None) -> dict:
    """`instructkit judge alpagasus` as a user runs it, timed from outside: wall seconds, the wall
    clock at launch (to compare with the server's request times) and the summary line. `extra`: more CLI
    flags; `model`: the model flags (default `-m bench-model --api-base URL`); `env`: more environment
    (a provider's base-URL variable)."""
    model = model or ["-m", "bench-model", "--api-base", url]
    cmd = cli_command() + ["judge", "alpagasus", str(rows), "--out", str(out), *model,
                           "--concurrency", str(concurrency), "--cache-dir", str(cache_dir), *extra]  # fmt: skip
    env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True", **(env or {}))
    launched, start = time.time(), time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    wall = time.perf_counter() - start
    if proc.returncode not in (0, 1) or not out.exists():  # 1: some rows failed (counted, not fatal)
        raise RuntimeError(f"CLI failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    summary = next((line for line in proc.stderr.splitlines() if line.startswith("alpagasus:")
                    or line.startswith("judge alpagasus:")), "")  # fmt: skip
    limits = next((line for line in proc.stderr.splitlines() if line.startswith("rate limits:")), "")
    return {"wall_s": wall, "launched": launched, "summary": summary, "limits": limits,
            "rows": sum(1 for _ in out.open()), "failed": proc.returncode == 1}  # fmt: skip


def request_window(times: list[float], launched: float, latency: float) -> dict:
    """From the server's request times: seconds from launch to the first request, and the mean number
    of requests in flight between the first request and the last reply."""
    times = sorted(times)
    return {"first_s": times[0] - launched, "in_flight": len(times) * latency / (times[-1] - times[0] + latency)}


# ----- workers (each runs in a fresh interpreter) -------------------------------------------------


def worker_instructkit(args: argparse.Namespace) -> dict:
    """LLM + RunContext.map with cache, retries, journal and progress on."""
    from instructkit.models import LLM
    from instructkit.run.runner import RunContext

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

        return await asyncio.gather(*(one(p) for p in items), return_exceptions=True)  # a failed row is counted

    cpu0, start = time.process_time(), time.perf_counter()
    out = asyncio.run(main())
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
    ok = sum(1 for o in out if isinstance(o, dict) and o.get("generations") and o["generations"][0])
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
    ap.add_argument("--scenarios", default="", help="comma list of cap,rpm,faults,logprobs: run these provider "
                    "scenarios instead of the throughput table")  # fmt: skip
    ap.add_argument("--cap-rows", type=int, default=3000)
    ap.add_argument("--rpm-rows", type=int, default=600)
    ap.add_argument("--fault-rows", type=int, default=2000)
    ap.add_argument("--reply-words", type=int, default=60)
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
    if args.scenarios:
        args.scenarios = set(args.scenarios.split(","))
        scenarios(args)
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
                res = run_cli(url, data, d / "out.jsonl", d / "cache", args.concurrency, model=model, env=env)
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


# ----- hosted-provider scenarios (issue 20) --------------------------------------------------------

FAULT_MIX = {"seed": 0, "rules": [{"kind": "500", "p": 0.10}, {"kind": "429", "p": 0.05, "retry_after": 1.0},
                                  {"kind": "broken_json", "p": 0.02}, {"kind": "drop", "p": 0.01},
                                  {"kind": "timeout", "p": 0.01, "delay": 3.0}]}  # fmt: skip


def scenarios(args: argparse.Namespace) -> None:
    """The provider-limit scenarios, each with instructkit's CLI beside distilabel (when its venv is
    given) and the ideal, from the same run: a concurrency cap, an advertised RPM limit, the random
    fault mix, and replies with OpenAI-shaped top logprobs."""
    sys.path.insert(0, str(REPO / "tests"))
    from fakes import serve_fake

    distil = args.distilabel_python if args.distilabel_python and Path(args.distilabel_python).exists() else None
    tables: list[str] = []
    with tempfile.TemporaryDirectory(prefix="ik-scen-") as tmp, serve_fake(latency=args.latency, record=True) as url:
        root = Path(tmp)

        def cli(name: str, n: int, extra: tuple[str, ...] = ()) -> dict:
            url.configure(reset=True)
            cpu0 = children_cpu()
            res = run_cli(url, write_rows(root / f"{name}.jsonl", n), root / name / "out.jsonl", root / name / "cache",
                          args.concurrency, extra)  # fmt: skip
            res["cpu_ms"] = 1000 * (children_cpu() - cpu0) / n
            seen = url.requests()
            res["sent"], res["refused"] = len(seen), sum(r["fault"] in ("cap", "rate_limit") for r in seen)
            times = sorted(r["t"] for r in seen if r["fault"] is None)
            res["span_s"] = times[-1] - times[0] if len(times) > 1 else float("nan")
            res["out"] = root / name / "out.jsonl"
            res["cache_mb"] = sum(f.stat().st_size for f in (root / name / "cache").rglob("*") if f.is_file()) / 1e6
            print(f"  {name}: {n / res['wall_s']:.0f} rows/s, {res['wall_s']:.2f} s, sent {res['sent']}, refused "
                  f"{res['refused']}, load {os.getloadavg()[0]:.1f}\n    {res['summary']}\n    {res['limits']}",
                  file=sys.stderr)  # fmt: skip
            return res

        def distilabel(n: int) -> dict | None:
            if distil is None:
                return None
            url.configure(reset=True)
            try:
                res, _ = run_worker(distil, "distilabel", url, args, requests=n)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                print(f"  distilabel failed: {str(exc)[-300:]}", file=sys.stderr)
                return None
            seen = url.requests()
            res["refused"] = sum(r["fault"] in ("cap", "rate_limit") for r in seen)
            print(f"  distilabel: {n / res['wall_s']:.0f} req/s {res}", file=sys.stderr)
            return res

        def row(label: str, n: int, res: dict | None, ideal: float, extra: str = "") -> str:
            if res is None:
                return f"| {label} | not run | | | |"
            rate = n / res["wall_s"]
            lost = n - res.get("ok", res.get("rows", n)) if "ok" in res else (n - res["rows"]) + int(res.get("failed", 0))
            return (f"| {label} | {res['wall_s']:.1f} s | {rate:.0f} | {100 * rate / ideal:.0f}% | "
                    f"{res.get('refused', 0)} | {lost} | {extra} |")  # fmt: skip

        head = "| path | wall | rows/s | % of ideal | 429s | rows lost | notes |\n| --- | ---: | ---: | ---: | ---: | ---: | --- |"
        if "cap" in args.scenarios:
            n = args.cap_rows
            url.configure(max_in_flight=100, cap_retry_after=1.0, latency=args.latency)
            ideal = 100 / args.latency
            ours, theirs = cli("cap", n), distilabel(n)
            url.configure(max_in_flight=None)
            free = cli("uncapped", n, ("--concurrency", "100"))  # what this machine does at 100 in flight, no cap
            tables.append(f"Concurrency cap: the server admits 100 in flight, 429 + Retry-After 1 above that; "
                          f"client concurrency {args.concurrency}; {n} rows (target >= 80% of ideal)\n\n{head}\n"
                          + row("instructkit CLI (judge alpagasus, defaults)", n, ours, ideal, ours["limits"]) + "\n"
                          + row("distilabel 1.5.3 (OpenAILLM.agenerate)", n, theirs, ideal) + "\n"
                          + row("instructkit CLI, no cap, --concurrency 100 (this machine's ceiling now)", n, free,
                                ideal, f"the capped run is {100 * free['wall_s'] / ours['wall_s']:.0f}% of it") + "\n"
                          + f"| ideal (100 / latency) | {n / ideal:.1f} s | {ideal:.0f} | 100% | 0 | 0 | |")
        if "rpm" in args.scenarios:
            n, rpm = args.rpm_rows, 3000
            url.configure(rate_limit={"requests": rpm, "window": 60.0, "kind": "bucket", "start": 0.0},
                          latency=args.latency)  # fmt: skip
            ideal = rpm / 60.0
            ours = cli("rpm", n, ("-o", "top_logprobs", "0"))
            theirs = distilabel(n)
            url.configure(rate_limit=None)
            sustained = (n - 1) / ours["span_s"] * 60.0
            tables.append(f"Advertised limit: {rpm:,} RPM in x-ratelimit-* headers (a token bucket, empty at the start, "
                          f"429 above it); {n} rows (target >= 90% sustained, < 1% refused)\n\n{head}\n"
                          + row("instructkit CLI", n, ours, ideal,
                                f"sustained {sustained:,.0f} rpm between first and last answer "
                                f"({100 * sustained / rpm:.0f}%), refused {100 * ours['refused'] / ours['sent']:.1f}% "
                                f"of {ours['sent']} sent") + "\n"
                          + row("distilabel 1.5.3", n, theirs, ideal) + "\n"
                          + f"| ideal ({rpm:,} RPM) | {n / ideal:.1f} s | {ideal:.0f} | 100% | 0 | 0 | |")  # fmt: skip
        if "faults" in args.scenarios:
            n = args.fault_rows
            clean = cli("clean", n, ("-o", "top_logprobs", "0"))
            url.configure(random_faults=FAULT_MIX)
            faulty = cli("faults", n, ("-o", "top_logprobs", "0"))
            theirs = distilabel(n)
            url.configure(random_faults=None)
            same = clean["out"].read_bytes() == faulty["out"].read_bytes()
            bound = max(2 * clean["wall_s"], clean["wall_s"] + 5)
            ideal = args.concurrency / args.latency
            tables.append(f"Random faults (10% 500, 5% 429 Retry-After 1 s, 2% broken JSON, 1% dropped mid-body, 1% 3 s "
                          f"slow), {n} rows; target <= max(2x clean, clean + 5 s) = {bound:.1f} s, output identical\n\n"
                          f"{head}\n" + row("instructkit CLI, clean server", n, clean, ideal) + "\n"
                          + row("instructkit CLI, fault mix", n, faulty, ideal,
                                f"output identical to the clean run: {same}; {faulty['wall_s'] / clean['wall_s']:.2f}x clean")
                          + "\n" + row("distilabel 1.5.3, fault mix", n, theirs, ideal) + "\n"
                          + f"| ideal (concurrency / latency, no faults) | {n / ideal:.1f} s | {ideal:.0f} | 100% | | | |")  # fmt: skip
        if "logprobs" in args.scenarios:
            n = args.requests
            url.configure(reply="score", reply_words=args.reply_words)
            ideal = args.concurrency / args.latency
            default = cli("lp-default", n)
            zero = cli("lp-zero", n, ("-o", "top_logprobs", "0"))
            theirs = distilabel(n)
            url.configure(reply="hash", reply_words=0)
            ratio = (n / default["wall_s"]) / (n / zero["wall_s"])
            tables.append(f"Replies shaped like a judge's (a score, then {args.reply_words} words), top logprobs as OpenAI "
                          f"returns them when asked; {n} rows (target: defaults >= 75% of `-o top_logprobs 0`)\n\n{head}\n"
                          + row("instructkit CLI, defaults (top 20 logprobs)", n, default, ideal,
                                f"{default['cpu_ms']:.2f} ms CPU/row, cache {default['cache_mb']:.1f} MB; "
                                f"{100 * ratio:.0f}% of top_logprobs 0") + "\n"
                          + row("instructkit CLI, -o top_logprobs 0", n, zero, ideal,
                                f"{zero['cpu_ms']:.2f} ms CPU/row, cache {zero['cache_mb']:.1f} MB") + "\n"
                          + row("distilabel 1.5.3 (asks for no logprobs)", n, theirs, ideal) + "\n"
                          + f"| ideal | {n / ideal:.1f} s | {ideal:.0f} | 100% | | | |")  # fmt: skip
    print()
    print(f"server latency {args.latency * 1000:.0f} ms, client concurrency {args.concurrency}; {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.1f} (other work on the machine slows every path)")  # fmt: skip
    for table in tables:
        print()
        print(table)


def children_cpu() -> float:
    """CPU seconds (user + system) used so far by finished child processes."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    main()
