"""Every selector at budget 1,000 on the 17,970-row Alpaca sample, with the diversity report for each and for random.

Embeddings: the default encoder (all-MiniLM-L6-v2, mean pooling, L2 norm) of instruction+input+output
(--fields), cached as .npy (by content) under --cache. There are no judge scores in this file, so the score-driven
selectors use a PROXY quality score (stated in the output): log1p(#output words) + 0.5 *
log1p(#instruction words), i.e. longer answers to longer instructions rank first. InsTag uses proxy
tags (the instruction's content words: lowercase alphabetic tokens of 4+ letters minus a stopword
list), Cherry uses the proxy score as its "confidence", and MoDS keeps the upper half by proxy
score as "high quality" and stops after the k-center seeds (no model to answer, so no necessity
stage). The report uses the same MiniLM vectors for every selection, a fixed KMeans(100, seed 0)
of the pool for cluster coverage, responses for distinct-n, and the proxy score for the distribution.

    python bench/selection_alpaca.py [--data PATH] [--budget 1000] [--cache DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "alpaca_sample_17970.json"
STOP = set(
    "that this with from what which your their have will would could should about into there these those "
    "than then them they were been being also following given each other more most some such only very "
    "write create make give provide find describe explain list name generate come using used".split()
)


def proxy_score(rec: dict) -> float:
    words_out = len(str(rec.get("output", "")).split())
    words_in = len((str(rec.get("instruction", "")) + " " + str(rec.get("input", ""))).split())
    return math.log1p(words_out) + 0.5 * math.log1p(words_in)


def proxy_tags(rec: dict) -> list[str]:
    toks = re.findall(r"[a-z]{4,}", str(rec.get("instruction", "")).lower())
    return sorted({t for t in toks if t not in STOP})


def car_at_budget(scores: np.ndarray, labels: np.ndarray, budget: int) -> np.ndarray:
    """CaR with n1 chosen so that top-n1 plus the cluster representatives is exactly `budget` rows."""
    from instructkit.selection.car import car_combine

    n1 = max(0, budget - len(np.unique(labels)))
    while True:
        idx = car_combine(scores, labels, n1, 1)
        if len(idx) >= budget or n1 >= len(scores):
            return idx[:budget]
        n1 += budget - len(idx)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--budget", type=int, default=1000)
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "instructkit" / "selection_bench")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument(
        "--fields",
        nargs="+",
        default=["instruction", "input", "output"],
        help="row fields embedded (joined by newlines)",
    )
    args = ap.parse_args()
    if not args.data.is_file():
        print(f"skipped: {args.data} is absent (the shared benchmark data folder is not here)")
        return

    from instructkit.selection import (
        cherry_pre_select,
        deita_select,
        dq_select,
        embedding_dedup,
        exact_dedup,
        instag_select,
        kcenter_greedy,
        minhash_dedup,
        mods_seeds,
        random_select,
        rouge_dedup,
        topk_select,
    )
    from instructkit.selection.car import car_clusters
    from instructkit.selection.embed import embed_records, texts_of
    from instructkit.selection.report import cluster_labels, diversity_report, format_table

    records = json.loads(args.data.read_text())
    n, b = len(records), args.budget
    t = time.perf_counter()
    emb = embed_records(records, "local", fields=args.fields, cache_dir=args.cache)
    print(f"# {n} rows, embeddings of {'+'.join(args.fields)}: {emb.shape} {emb.dtype}")
    print(f"#   in {time.perf_counter() - t:.1f}s (cache {args.cache})")
    print(
        "# scores: PROXY log1p(#output words) + 0.5 log1p(#instruction words) (no judge scores in this file)"
    )
    scores = np.array([proxy_score(r) for r in records])
    tags = [proxy_tags(r) for r in records]
    outputs = [str(r.get("output", "")) for r in records]

    t = time.perf_counter()
    labels = cluster_labels(emb, 100, 0)
    print(f"# report clusters: KMeans(100, random_state=0) on the pool in {time.perf_counter() - t:.1f}s")

    selectors = {
        "random": lambda: random_select(n, b, 0),
        "topk": lambda: topk_select(scores, b),
        "deita": lambda: deita_select(emb, scores, b, 0.9),
        "car": lambda: car_at_budget(scores, car_clusters(emb), b),
        "kcenter": lambda: kcenter_greedy(emb, b, metric="cosine", random_state=0),
        "instag": lambda: instag_select(tags, b),
        "cherry": lambda: cherry_pre_select(emb, scores, 100, max(1, b // 100))[0],
        "mods": lambda: mods_seeds(emb, scores, b, float(np.median(scores)), random_state=0)[0],
        "dq": lambda: dq_select(emb, n_bins=10, random_state=0, budget=b),
    }
    reports, timing = {}, {}
    for name, fn in selectors.items():
        t = time.perf_counter()
        idx = fn()
        timing[name] = time.perf_counter() - t
        rep = diversity_report(emb, idx, scores=scores, tags=tags, texts=outputs, labels=labels)
        rep["select_s"] = round(timing[name], 2)
        reports[name] = rep
        print(f"# {name:8} {len(idx):5} rows in {timing[name]:6.1f}s", flush=True)
    print()
    print(format_table(reports))

    print(f"\n# dedup of {n} rows: text modes on instruction+input, embedding mode on the report vectors")
    texts = texts_of(records, ["instruction", "input"])
    for name, fn in {
        "exact": lambda: exact_dedup(texts),
        "minhash 0.8": lambda: minhash_dedup(texts, 0.8),
        "rouge-L 0.7": lambda: rouge_dedup(texts, 0.7),
        "embedding 0.95": lambda: embedding_dedup(emb, 0.95),
    }.items():
        t = time.perf_counter()
        kept = fn()
        print(
            f"{name:15} kept {len(kept):6}  dropped {n - len(kept):5}  {time.perf_counter() - t:6.1f}s",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(reports, indent=1, default=float))


if __name__ == "__main__":
    sys.exit(main())
