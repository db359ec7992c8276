"""Self-Instruct novelty filter: our exact NoveltyIndex against a plain rouge_score loop.

Pool: Alpaca instructions from ../shared/data (plus recombined halves of them to reach the pool
size); queries: held-out instructions, half of them lightly edited copies of pooled ones so the
reject path (ROUGE-L F > 0.7) is exercised. Reports per-query latency of the index (decision and
top-10) and of rouge_score, and checks that the decisions and top-1 scores agree.

    python bench/self_instruct_novelty.py [--pool 50000] [--queries 200] [--baseline 3]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

from instructkit.rouge import NoveltyIndex

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "alpaca_sample_17970.json"


def build(pool_size: int, n_queries: int, seed: int = 0) -> tuple[list[str], list[str]]:
    rows = json.loads(DATA.read_text(encoding="utf-8"))
    texts = sorted({r["instruction"].strip() for r in rows if r.get("instruction", "").strip()})
    rnd = random.Random(seed)
    rnd.shuffle(texts)
    held, base = texts[: n_queries // 2], texts[n_queries // 2 :]
    pool = list(base)
    while len(pool) < pool_size:  # recombine halves of two real instructions
        a, b = rnd.choice(base).split(), rnd.choice(base).split()
        pool.append(" ".join(a[: max(1, len(a) // 2)] + b[len(b) // 2 :]))
    pool = pool[:pool_size]
    edited = []
    for text in rnd.sample(base, n_queries - len(held)):
        words = text.split()
        if len(words) > 4:
            words[rnd.randrange(len(words))] = "quickly"
        edited.append(" ".join(words))
    return pool, held + edited


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pool", type=int, default=50_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--baseline", type=int, default=3, help="queries also scored by a rouge_score loop")
    ap.add_argument("--threshold", type=float, default=0.7)
    args = ap.parse_args()
    if not DATA.exists():
        print(f"skip: {DATA} not found (benchmark data lives outside the repository)")
        return 0
    pool, queries = build(args.pool, args.queries)
    t0 = time.perf_counter()
    index = NoveltyIndex(pool)
    build_s = time.perf_counter() - t0

    decide, topk, rejects = [], [], 0
    for q in queries:
        t = time.perf_counter()
        hit = index.any_above(q, args.threshold)
        decide.append(time.perf_counter() - t)
        rejects += hit is not None
        t = time.perf_counter()
        index.top_k(q, 10)
        topk.append(time.perf_counter() - t)

    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    base_s, agree = [], 0
    for q in queries[: args.baseline // 2] + queries[-(args.baseline - args.baseline // 2) :]:
        t = time.perf_counter()
        scores = [scorer.score(q, p)["rougeL"].fmeasure for p in pool]
        base_s.append(time.perf_counter() - t)
        best = max(scores)
        ours = index.max_similarity(q)
        same = (best > args.threshold) == (index.any_above(q, args.threshold) is not None)
        agree += same and ours is not None and ours.score == best

    def ms(xs: list[float]) -> str:
        xs = sorted(xs)
        return f"{1000 * statistics.mean(xs):8.2f} {1000 * xs[len(xs) // 2]:8.2f} {1000 * xs[int(0.95 * (len(xs) - 1))]:8.2f}"

    print(
        f"pool {len(pool):,} texts, built in {build_s:.1f}s; {len(queries)} queries, {rejects} rejected (F > {args.threshold})"
    )
    print(f"{'method':34} {'mean ms':>8} {'p50 ms':>8} {'p95 ms':>8}")
    print(f"{'NoveltyIndex.any_above (decision)':34} {ms(decide)}")
    print(f"{'NoveltyIndex.top_k(10)':34} {ms(topk)}")
    print(f"{'rouge_score loop (all pairs)':34} {ms(base_s)}")
    print(f"baseline agreement (decision and max score): {agree}/{len(base_s)}")
    return 0 if agree == len(base_s) else 1


if __name__ == "__main__":
    sys.exit(main())
