"""IFD throughput on the Alpaca sample: ours (fp32, bf16) against a straightforward per-row loop.

The loop is what the official code does: one row at a time, two forward passes with full logits and
the HF masked loss (labels -100 before the answer). Ours: the same two passes per row in length-sorted
padded batches with the LM head only at answer positions. Values are compared on the rows both score.

    python bench/ifd.py [--rows 2000] [--loop-rows 200] [--batch-size 16] [--data PATH]

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


def loop_ifd(backend, rows: list[dict], max_length: int = 512) -> tuple[list[float | None], int]:
    """Per-row reference: full logits, HF masked loss, Cherry's spans and filters."""
    import torch
    from instructkit.judge.scores.ifd import get_template, prefix_token_count

    tok, model = backend.tokenizer, backend.model
    tpl = get_template("alpaca")
    k = prefix_token_count(tok, tpl.direct_prefix)
    out, tokens = [], 0

    def part(text: str, target: str, limit: int) -> tuple[float | None, int, int]:
        ids = tok.encode(text, return_tensors="pt", truncation=True, max_length=limit)
        start = len(tok.encode(text[: text.rfind(target)]))
        if ids.shape[1] - start <= 0:
            return None, 0, 0
        labels = ids.clone()
        labels[0, :start] = -100
        with torch.no_grad():
            loss = float(model(ids.to(backend.device), labels=labels.to(backend.device)).loss)
        return loss, ids.shape[1] - start, ids.shape[1]

    for r in rows:
        prompt = tpl.prompt(r["instruction"], r.get("input", ""))
        instruct_len = len(tok.encode(prompt, truncation=True, max_length=max_length))
        if max_length - instruct_len <= 0:
            out.append(None)
            continue
        ld, nd, td = part(tpl.direct_prefix + r["output"], r["output"], max_length - instruct_len + k)
        lc, nc, tc = part(prompt + r["output"], r["output"], max_length)
        tokens += td + tc
        ok = ld is not None and lc is not None and nd > 0 and nc > 0 and instruct_len + nd <= max_length
        out.append(lc / ld if ok and ld else None)
    return out, tokens


def ours_ifd(backend, rows: list[dict], batch_size: int) -> tuple[list[float | None], int]:
    from instructkit.judge.scores.ifd import (
        IFDOptions,
        get_template,
        ifd_spans,
        prefix_token_count,
        score_ifd,
    )

    from instructkit.runner import RunContext

    opts = IFDOptions(batch_size=batch_size)
    ctx = RunContext(llm=None, options=opts, method="ifd", progress=False)
    scored = score_ifd(rows, ctx, opts, backend)
    tpl = get_template("alpaca")
    k = prefix_token_count(backend.tokenizer, tpl.direct_prefix)
    tokens = 0
    for r in rows:
        s = ifd_spans(backend.tokenizer, r["instruction"], r.get("input", ""), r["output"], tpl, 512, k)
        if s.status == "ok":
            tokens += sum(len(p) + len(a) for p, a in (s.cond, s.direct))
    return [r["ifd"] for r in scored], tokens


def compare(a: list[float | None], b: list[float | None]) -> tuple[float, float, int]:
    """(max |a-b|, Spearman rho, rows compared) over rows where both have a value."""
    import numpy as np
    from scipy.stats import spearmanr

    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
    if not pairs:
        return math.nan, math.nan, 0
    x, y = np.array(pairs).T
    return float(np.abs(x - y).max()), float(spearmanr(x, y).statistic), len(pairs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--loop-rows", type=int, default=200, help="rows for the slow per-row loop")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--device", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--chunk", type=int, default=20, help="rows per interleaved round")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    path = Path(args.data)
    if not path.is_file():
        print(f"skip: {path} not found (the benchmark data lives in ../shared/data)")
        return 0
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from instructkit.judge.scores.common import auto_device

    from instructkit.models.local import load_local_backend

    data = json.loads(path.read_text())
    rows = random.Random(args.seed).sample(data, min(args.rows, len(data)))
    loop_n = min(args.loop_rows, len(rows))
    device = auto_device(args.device)
    fp32 = load_local_backend("local", dtype="float32", device=device)
    bf16 = load_local_backend("local", dtype="bfloat16", device=device)
    import torch

    print(
        f"rows {len(rows)} (loop on the first {loop_n}); device {device}; torch threads {torch.get_num_threads()}; "
        f"load {os.getloadavg()[0]:.1f}"
    )

    # Interleaved in chunks, so that every method sees the same machine load (the CI box is shared).
    chunk = max(1, args.chunk)
    names = ["loop fp32 (per row, full logits)", "ours fp32 (same rows)", "ours fp32", "ours bf16"]
    secs = dict.fromkeys(names, 0.0)
    toks = dict.fromkeys(names, 0)
    vals: dict[str, list] = {n: [] for n in names}
    for start in range(0, len(rows), chunk):
        part = rows[start : start + chunk]
        jobs = [
            ("ours fp32", lambda p=part: ours_ifd(fp32, p, args.batch_size)),
            ("ours bf16", lambda p=part: ours_ifd(bf16, p, args.batch_size)),
        ]
        if start < loop_n:
            sub = rows[start : min(start + chunk, loop_n)]
            jobs = [
                ("loop fp32 (per row, full logits)", lambda p=sub: loop_ifd(fp32, p)),
                ("ours fp32 (same rows)", lambda p=sub: ours_ifd(fp32, p, args.batch_size)),
            ] + jobs
        for name, fn in jobs:
            t0 = time.perf_counter()
            values, tokens = fn()
            secs[name] += time.perf_counter() - t0
            toks[name] += tokens
            vals[name] += values
        print(f"  {start + len(part)}/{len(rows)} rows, load {os.getloadavg()[0]:.1f}", file=sys.stderr)

    print("\n| method | rows | tokens | seconds | tokens/s | rows/s |\n|---|---:|---:|---:|---:|---:|")
    for name in names:
        n = len(vals[name])
        print(
            f"| {name} | {n} | {toks[name]} | {secs[name]:.1f} | {toks[name] / secs[name]:.0f} | {n / secs[name]:.2f} |"
        )
    speed = secs[names[0]] / secs[names[1]]
    print(f"\nspeed-up ours fp32 / loop on the same rows: {speed:.2f}x (goal >= 3x)")
    print(f"speed-up ours bf16 / ours fp32 (all rows): {secs['ours fp32'] / secs['ours bf16']:.2f}x")
    d, rho, n = compare(vals[names[0]], vals[names[1]])
    print(f"values ours fp32 vs loop: max |dIFD| {d:.2e}, Spearman {rho:.6f} over {n} rows")
    d, rho, n = compare(vals["ours fp32"], vals["ours bf16"])
    print(f"values ours bf16 vs fp32: max |dIFD| {d:.2e}, Spearman {rho:.6f} over {n} rows")
    agree = sum((a is None) == (b is None) for a, b in zip(vals[names[0]], vals[names[1]]))
    print(f"same skipped rows (loop vs ours): {agree}/{loop_n}; load at the end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
