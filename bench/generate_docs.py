"""Bonito-style synthesis from PubMedQA abstracts on a model (default: the local SmolLM2-135M-Instruct).

Reads ../shared/data/pubmedqa_documents_1000.jsonl (skips with a message when absent), takes the first
passage of the first N documents, assigns task types round-robin over a seeded shuffle of the chosen
types (`--types-per-doc`), and prints the valid-task rate per task type with the main invalid reasons,
completion tokens per second and wall time.

    python bench/generate_docs.py [--docs 20] [--types-per-doc 1] [--max-tokens 128] [--mode instruct]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from instructkit.generators.bonito import TASK_TYPES, BonitoOptions, bonito

from instructkit.models import LLM
from instructkit.run.runner import RunContext

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "pubmedqa_documents_1000.jsonl"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=20)
    ap.add_argument("--types", default=",".join(TASK_TYPES), help="comma-separated task type codes")
    ap.add_argument("--types-per-doc", type=int, default=1)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--max-passage-tokens", type=int, default=256)
    ap.add_argument("--mode", default="instruct", choices=["instruct", "native"])
    ap.add_argument("--model", default="local")
    ap.add_argument("--api-base")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work-dir", help="journals, invalid rows and the manifest (default: a temp dir)")
    ap.add_argument("--no-cache", action="store_true", help="do not reuse cached answers (true timings)")
    args = ap.parse_args()
    if not DATA.exists():
        print(f"skip: {DATA} not found (benchmark data lives outside the repository)")
        return 0
    docs = []
    with DATA.open(encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            docs.append({"doc_id": row["doc_id"], "text": row["text"]})
            if len(docs) >= args.docs:
                break
    llm = LLM(args.model, api_base=args.api_base, cache=False if args.no_cache else None)
    opts = BonitoOptions(mode=args.mode, task_types=args.types.split(","), types_per_passage=args.types_per_doc,
                         passages_per_doc=1, max_tokens=args.max_tokens, max_passage_tokens=args.max_passage_tokens)  # fmt: skip
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="bench_generate_docs_"))
    ctx = RunContext(
        llm=llm, options=opts, method="bonito", work_dir=work, random_state=args.seed, progress=False
    )
    start = time.perf_counter()
    out = bonito(docs, ctx)
    wall = time.perf_counter() - start
    counts = ctx.extras["generate_summary"]["bonito"]
    s = llm.stats
    print(f"model {llm.identity['model']}  mode {args.mode}  docs {len(docs)}  passages {counts['passages']}  "
          f"max_tokens {args.max_tokens}")  # fmt: skip
    print(f"{'type':14} {'tried':>5} {'valid':>5} {'rate':>6}  main invalid reasons")
    for code, st in counts["per_type"].items():
        if not st["attempted"]:
            continue
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(st["invalid"].items(), key=lambda kv: -kv[1])[:3])
        print(
            f"{code:14} {st['attempted']:5d} {st['valid']:5d} {st['valid'] / st['attempted']:6.0%}  {reasons}"
        )
    total = counts["attempted"]
    print(f"{'all':14} {total:5d} {len(out):5d} {len(out) / max(total, 1):6.0%}")
    print(f"calls {s.calls} (cache hits {s.cache_hits})  prompt tokens {s.prompt_tokens:,}  completion tokens "
          f"{s.completion_tokens:,}  wall {wall:.1f}s  completion tok/s {s.completion_tokens / wall:.1f}  "
          f"total tok/s {(s.prompt_tokens + s.completion_tokens) / wall:.1f}")  # fmt: skip
    print(f"work dir: {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
