"""Local generation speed: the transformers path (before llama.cpp), the llama.cpp path, and references.

Same prompts for every row: the first `--n` instructions of examples/records.jsonl as chat turns,
`--max-tokens` new tokens, greedy, no response cache. "one at a time" waits for each answer before the
next request; "concurrent" sends all of them at once through `LLM.achat` (the runner's pattern).
References: `model.generate` of transformers and llama-cpp-python's own `create_chat_completion`, one
at a time. Ideal: one token per pass over the weights, the weights read once per pass at this
machine's measured memory bandwidth (decoding a model this small is bandwidth-bound; a batch of
concurrent sequences shares each pass, so concurrent rows may exceed it). tok/s counts the tokens
actually generated (an answer may stop before max tokens); tok/cpu-s divides by the process's CPU
time, which other load on the machine changes less than wall time.

    python bench/local_speed.py [--n 6] [--max-tokens 128] [--threads N]

The llama.cpp path generates from the Q8_0 copy of the shipped Q4_1 file (docs/DEVELOPING.md); the
llama-cpp-python reference reads the shipped file itself, as issue 11 measured it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

RECORDS = Path(__file__).resolve().parents[1] / "examples" / "records.jsonl"
RECORDED_TODAY = 8.9  # tok/s of LLM("local") one at a time on transformers, as issue 11 measured it


def load_prompts(n: int) -> list[str]:
    rows = [json.loads(line) for line in RECORDS.read_text().splitlines() if line.strip()][:n]
    return [r["instruction"] + ("\n\n" + r["input"] if r.get("input") else "") for r in rows]


def timed(fn) -> tuple[int, float, float]:
    """(tokens, wall s, cpu s) of fn() -> tokens."""
    wall, cpu = time.perf_counter(), time.process_time()
    tokens = fn()
    return tokens, time.perf_counter() - wall, time.process_time() - cpu


def bench_llm(spec: str, prompts: list[str], max_tokens: int, **options) -> dict[str, tuple]:
    """One at a time, then all concurrently, through the `LLM` facade (no cache)."""
    from instructkit.aio import run_sync
    from instructkit.models import LLM

    llm = LLM(spec, cache=False, **options)
    llm.chat(prompts[0], max_tokens=8)  # load and warm up outside the timers

    def one_at_a_time() -> int:
        return sum(llm.chat(p, max_tokens=max_tokens).usage.completion_tokens for p in prompts)

    async def together() -> int:
        done = await asyncio.gather(*[llm.achat(p, max_tokens=max_tokens) for p in prompts])
        return sum(c.usage.completion_tokens for c in done)

    return {"one at a time": timed(one_at_a_time), "concurrent": timed(lambda: run_sync(together()))}


def bench_bare_transformers(prompts: list[str], max_tokens: int) -> tuple:
    import torch

    from instructkit.models.local import load_local_backend

    lm = load_local_backend("local")
    ids = [lm.prompt_ids([{"role": "user", "content": p}]) for p in prompts]

    def run(batch: list[list[int]]) -> int:
        n = 0
        with torch.inference_mode():
            for p in batch:
                out = lm.model.generate(
                    torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                    max_new_tokens=max_tokens, do_sample=False, pad_token_id=lm.pad_id,
                )  # fmt: skip
                n += len([x for x in out[0, len(p) :].tolist() if x not in lm.eos_ids])
        return n

    run(ids[:1])
    return timed(lambda: run(ids))


def bench_bare_llamacpp(prompts: list[str], max_tokens: int, threads: int) -> tuple:
    """llama-cpp-python's high-level API with its own default threads (or `threads` for both)."""
    import llama_cpp

    from instructkit.models.local_files import smollm2_gguf

    model = llama_cpp.Llama(str(smollm2_gguf()), n_ctx=2048, n_threads=threads or None,
                            n_threads_batch=threads or None, verbose=False)  # fmt: skip

    def run(batch: list[str]) -> int:
        return sum(
            model.create_chat_completion([{"role": "user", "content": p}], max_tokens=max_tokens, temperature=0)[
                "usage"]["completion_tokens"] for p in batch
        )  # fmt: skip

    run(prompts[:1])
    return timed(lambda: run(prompts))


def ideal_tok_s() -> tuple[float, float]:
    """(tokens/s if each token reads the weights once at the measured bandwidth, bandwidth GB/s)."""
    import numpy as np

    from instructkit.models.local_files import smollm2_gguf

    src = np.ones(64 << 20, dtype=np.float32)  # 256 MB, far beyond the caches
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t)
    bandwidth = 2 * src.nbytes / best  # read + write
    return bandwidth / smollm2_gguf().stat().st_size, bandwidth / 1e9


PATHS = ("today", "reference-transformers", "ours", "reference-llama-cpp-python")


def run_path(path: str, prompts: list[str], max_tokens: int, threads: int) -> list[tuple[str, str, tuple]]:
    """One path's rows, measured in this process (each path gets a fresh interpreter: torch and
    llama.cpp share one OpenMP runtime, and torch having run makes llama.cpp's 2-thread passes slower)."""
    options = {"threads": threads} if threads else {}  # else each engine's own default
    if path == "today":
        done = bench_llm("local", prompts, max_tokens, engine="transformers", **options)  # as before
        return [("today: transformers (LLM local)", k, v) for k, v in done.items()]
    if path == "reference-transformers":
        return [("reference: transformers generate", "one at a time", bench_bare_transformers(prompts, max_tokens))]
    if path == "ours":
        return [("ours: llama.cpp (LLM local)", k, v) for k, v in bench_llm("local", prompts, max_tokens, **options).items()]
    return [("reference: llama-cpp-python", "one at a time", bench_bare_llamacpp(prompts, max_tokens, threads))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=6, help="prompts (from examples/records.jsonl)")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=0, help="llama.cpp and torch threads (default: each one's own)")
    ap.add_argument("--path", choices=PATHS, help=argparse.SUPPRESS)  # one path, in a fresh interpreter
    args = ap.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    prompts = load_prompts(args.n)
    if args.path:
        print(json.dumps(run_path(args.path, prompts, args.max_tokens, args.threads)))
        return
    from instructkit.models.local.llamacpp import default_threads

    decode, prompt = (args.threads, args.threads) if args.threads else default_threads()
    print(f"{len(prompts)} prompts, {args.max_tokens} new tokens, greedy, torch threads {torch.get_num_threads()}, "
          f"llama.cpp threads chosen per pass from {sorted({decode, prompt})}, {os.cpu_count()} cores, "
          "each path in its own interpreter", flush=True)  # fmt: skip
    rows: list[tuple[str, str, tuple]] = []
    for path in PATHS:
        cmd = [sys.executable, __file__, "--path", path, "--n", str(args.n), "--max-tokens", str(args.max_tokens),
               "--threads", str(args.threads)]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        rows += [(name, mode, tuple(v)) for name, mode, v in json.loads(out)]
    ideal, gbs = ideal_tok_s()
    base = rows[0][2][0] / rows[0][2][1]
    print(f"\n{'path':<34}{'mode':<15}{'tokens':>7}{'tok/s':>9}{'tok/cpu-s':>11}{'vs today':>10}"
          f"{'vs recorded':>13}")  # fmt: skip
    for name, mode, (tokens, wall, cpu) in rows:
        rate = tokens / wall
        print(f"{name:<34}{mode:<15}{tokens:>7}{rate:>9.1f}{tokens / cpu:>11.1f}{rate / base:>9.1f}x"
              f"{rate / RECORDED_TODAY:>12.1f}x")  # fmt: skip
    print(f"{'ideal (weights once per token)':<34}{'one at a time':<15}{'':>7}{ideal:>9.1f}{'':>11}"
          f"{ideal / base:>9.1f}x{ideal / RECORDED_TODAY:>12.1f}x   ({gbs:.1f} GB/s measured, Q4_1 file)")  # fmt: skip
    print(f"vs today: this run's transformers path one at a time; vs recorded: the {RECORDED_TODAY} tok/s issue 11 "
          "measured for it (target 5x)")


if __name__ == "__main__":
    main()
