"""IFD throughput on the Alpaca sample: ours (fp32, bf16) against a straightforward per-row loop.

The loop is what the official code does: one row at a time, two forward passes with full logits and
the HF masked loss (labels -100 before the answer). Ours: `instructkit score ifd`'s path (shared
template prefixes run once, length-sorted batches bounded by padded tokens, the LM head only at answer
positions). Values are compared on the rows both score. The ideal is ours' matmul FLOPs (linear layers
and LM head) at this machine's measured matmul rate for the model's own shapes, with nothing else.

    python bench/ifd.py [--rows 2000] [--loop-rows 2000] [--batch-size 64] [--chunk 100] [--data PATH]

Skips with a message when the data file (../shared/data/alpaca_sample_17970.json) is absent.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "alpaca_sample_17970.json"


def loop_ifd(backend, rows: list[dict], max_length: int = 512) -> list[float | None]:
    """Per-row reference: full logits, HF masked loss, Cherry's spans and filters."""
    import torch
    from instructkit.scorers.ifd import get_template, prefix_token_count

    tok, model = backend.tokenizer, backend.model
    tpl = get_template("alpaca")
    k = prefix_token_count(tok, tpl.direct_prefix)
    out = []

    def part(text: str, target: str, limit: int) -> tuple[float | None, int]:
        ids = tok.encode(text, return_tensors="pt", truncation=True, max_length=limit)
        start = len(tok.encode(text[: text.rfind(target)]))
        if ids.shape[1] - start <= 0:
            return None, 0
        labels = ids.clone()
        labels[0, :start] = -100
        with torch.no_grad():
            loss = float(model(ids.to(backend.device), labels=labels.to(backend.device)).loss)
        return loss, ids.shape[1] - start

    for r in rows:
        prompt = tpl.prompt(r["instruction"], r.get("input", ""))
        instruct_len = len(tok.encode(prompt, truncation=True, max_length=max_length))
        if max_length - instruct_len <= 0:
            out.append(None)
            continue
        ld, nd = part(tpl.direct_prefix + r["output"], r["output"], max_length - instruct_len + k)
        lc, nc = part(prompt + r["output"], r["output"], max_length)
        ok = ld is not None and lc is not None and nd > 0 and nc > 0 and instruct_len + nd <= max_length
        out.append(lc / ld if ok and ld else None)
    return out


def ours_ifd(backend, rows: list[dict], batch_size: int) -> list[float | None]:
    """`instructkit score ifd`'s path (journal-free context), IFD per row."""
    from instructkit.scorers.ifd import IFDOptions, score_ifd

    from instructkit.run.runner import RunContext

    opts = IFDOptions(batch_size=batch_size)
    ctx = RunContext(llm=None, options=opts, method="ifd", progress=False)
    return [r["ifd"] for r in score_ifd(rows, ctx, opts, backend)]


def compare(a: list[float | None], b: list[float | None]) -> tuple[float, float, int]:
    """(max |a-b|, Spearman rho, rows compared) over rows where both have a value."""
    import numpy as np
    from scipy.stats import spearmanr

    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
    if not pairs:
        return math.nan, math.nan, 0
    x, y = np.array(pairs).T
    return float(np.abs(x - y).max()), float(spearmanr(x, y).statistic), len(pairs)


def spans_of(backend, rows: list[dict]) -> list[tuple[list[int], list[int]]]:
    """The (prompt ids, answer ids) pairs IFD scores for `rows` (conditioned and direct per scored row)."""
    from instructkit.scorers.ifd import get_template, ifd_spans, prefix_token_count

    tpl = get_template("alpaca")
    k = prefix_token_count(backend.tokenizer, tpl.direct_prefix)
    out = []
    for r in rows:
        s = ifd_spans(backend.tokenizer, r["instruction"], r.get("input", ""), r["output"], tpl, 512, k)
        if s.status == "ok":
            out += [s.cond, s.direct]
    return out


def matmul_work(backend, pairs: list[tuple[list[int], list[int]]], ours: bool) -> float:
    """FLOPs of the linear layers and the LM head for `pairs`: the loop runs every token through both;
    ours runs shared prefixes once (as `plan_groups` plans them) and the head at answer positions only.
    Attention score FLOPs are left out (a few percent at these lengths)."""
    import torch

    from instructkit.models.span_scoring import plan_groups

    head = backend.model.get_output_embeddings()
    body = sum(m.weight.numel() for m in backend.model.base_model.modules() if isinstance(m, torch.nn.Linear))
    n_head = head.weight.numel()
    tokens = sum(len(p) + len(a) for p, a in pairs)
    if not ours:
        return 2.0 * tokens * (body + n_head)
    saved = sum((len(g.members) - 1) * len(g.prefix) for g in plan_groups([p for p, _ in pairs]))
    answers = sum(len(a) - (0 if p else 1) for p, a in pairs)
    return 2.0 * ((tokens - saved) * body + answers * n_head)


def matmul_peak(backend, rows: int = 512, seconds: float = 2.0) -> float:
    """Measured FLOP/s of this machine's matmuls at the model's own layer shapes and dtype (the ideal)."""
    import torch

    shapes = {tuple(m.weight.shape) for m in backend.model.modules() if isinstance(m, torch.nn.Linear)}
    weights = [torch.randn(s, dtype=backend.model.dtype, device=backend.device) for s in sorted(shapes)]
    xs = [
        torch.randn(rows if w.shape[0] < 10000 else 256, w.shape[1], dtype=w.dtype, device=w.device)
        for w in weights
    ]
    flops, spent = 0.0, 0.0
    with torch.inference_mode():
        for x, w in zip(xs, weights):
            torch.nn.functional.linear(x, w)
            reps = 0
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < seconds / len(weights):
                torch.nn.functional.linear(x, w)
                reps += 1
            if backend.device.startswith("cuda"):
                torch.cuda.synchronize()
            spent += time.perf_counter() - t0
            flops += 2.0 * reps * x.shape[0] * w.shape[0] * w.shape[1]
    return flops / spent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--loop-rows", type=int, default=2000, help="rows for the per-row loop (first ones)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--device", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--chunk", type=int, default=100, help="rows per interleaved round")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    path = Path(args.data)
    if not path.is_file():
        print(f"skip: {path} not found (the benchmark data lives in ../shared/data)")
        return 0
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from instructkit.scorers.common import auto_device

    from instructkit.models.local import load_local_backend

    data = json.loads(path.read_text())
    rows = random.Random(args.seed).sample(data, min(args.rows, len(data)))
    chunk = max(1, args.chunk)
    loop_n = min(len(rows), -(-min(args.loop_rows, len(rows)) // chunk) * chunk)
    device = auto_device(args.device)
    fp32 = load_local_backend("local", dtype="float32", device=device)
    bf16 = load_local_backend("local", dtype="bfloat16", device=device)
    peak = {"float32": matmul_peak(fp32), "bfloat16": matmul_peak(bf16)}
    print(
        f"rows {len(rows)} (loop on the first {loop_n}); device {device}; torch threads "
        f"{torch.get_num_threads()}; load {os.getloadavg()[0]:.1f}; matmul peak at the model's shapes: "
        f"fp32 {peak['float32'] / 1e9:.0f} GFLOP/s, bf16 {peak['bfloat16'] / 1e9:.0f} GFLOP/s"
    )

    # Interleaved in chunks, so that every method sees the same machine load.
    loop, same, o32, o16 = (
        "loop fp32 (per row, full logits)",
        "ours fp32 (the loop's rows)",
        "ours fp32",
        "ours bf16",
    )
    names = [loop, same, o32, o16]
    secs, toks, work = dict.fromkeys(names, 0.0), dict.fromkeys(names, 0), dict.fromkeys(names, 0.0)
    vals: dict[str, list] = {n: [] for n in names}
    dtype_of = {loop: "float32", same: "float32", o32: "float32", o16: "bfloat16"}
    for start in range(0, len(rows), chunk):
        part = rows[start : start + chunk]
        pairs = spans_of(fp32, part)  # outside the timers: tokens and matmul work of this chunk
        tokens = sum(len(p) + len(a) for p, a in pairs)
        flops = {False: matmul_work(fp32, pairs, ours=False), True: matmul_work(fp32, pairs, ours=True)}
        jobs = [(o32, lambda p=part: ours_ifd(fp32, p, args.batch_size))]
        if start < loop_n:
            jobs.insert(0, (loop, lambda p=part: loop_ifd(fp32, p)))
        jobs.append((o16, lambda p=part: ours_ifd(bf16, p, args.batch_size)))
        for name, fn in jobs:
            t0 = time.perf_counter()
            values = fn()
            dt = time.perf_counter() - t0
            for n in [name] + ([same] if name == o32 and start < loop_n else []):
                secs[n] += dt
                toks[n] += tokens
                vals[n] += values
                work[n] += flops[n != loop]
        print(f"  {start + len(part)}/{len(rows)} rows, load {os.getloadavg()[0]:.1f}", file=sys.stderr)

    print(
        "\n| method | rows | tokens | seconds | tokens/s | rows/s | vs loop | matmul TFLOP | GFLOP/s | % of peak |"
        "\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    base = secs[loop] / max(1, len(vals[loop]))
    for name in names:
        n = len(vals[name])
        if not n:
            continue
        rate = work[name] / secs[name]
        print(
            f"| {name} | {n} | {toks[name]} | {secs[name]:.1f} | {toks[name] / secs[name]:.0f} | "
            f"{n / secs[name]:.2f} | {base / (secs[name] / n):.2f}x | {work[name] / 1e12:.2f} | "
            f"{rate / 1e9:.0f} | {100 * rate / peak[dtype_of[name]]:.0f}% |"
        )
    if vals[loop]:
        ideal = work[same] / peak["float32"]
        print(
            f"| ideal fp32: ours' matmuls at peak, nothing else | {len(vals[same])} | {toks[same]} | {ideal:.1f} | "
            f"{toks[same] / ideal:.0f} | {len(vals[same]) / ideal:.2f} | {secs[loop] / ideal:.2f}x | "
            f"{work[same] / 1e12:.2f} | {peak['float32'] / 1e9:.0f} | 100% |"
        )
        print(f"\nspeed-up ours fp32 / loop on the same rows: {secs[loop] / secs[same]:.2f}x (goal >= 3x)")
        d, rho, n = compare(vals[loop], vals[same])
        print(f"values ours fp32 vs loop: max |dIFD| {d:.2e}, Spearman {rho:.6f} over {n} rows")
        agree = sum((a is None) == (b is None) for a, b in zip(vals[loop], vals[same]))
        print(f"same skipped rows (loop vs ours): {agree}/{len(vals[loop])}")
    print(f"speed-up ours bf16 / ours fp32 (all rows): {secs[o32] / secs[o16]:.2f}x")
    d, rho, n = compare(vals[o32], vals[o16])
    print(f"values ours bf16 vs fp32: max |dIFD| {d:.2e}, Spearman {rho:.6f} over {n} rows")
    print(f"load at the end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
