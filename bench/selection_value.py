"""Does selection help? Train SmolLM2-135M on N rows picked four ways and compare held-out answer loss.

From the 17,970-row Alpaca sample: hold out `--heldout` rows (seeded), draw a candidate pool of `--pool`
rows from the rest, and select N (`--n`) of the pool with
- DEITA: `judge deita` (direct 1-6 complexity and quality prompts, expected scores) then `select deita`
  (score-first, cosine > tau to an accepted row skipped) on the default encoder;
- Cherry IFD: `score ifd -o top_k N` (instruction-following difficulty from the base model itself);
- AlpaGasus: `judge alpagasus` (0-5 accuracy, score first, 16 tokens) then `select topk`;
- random: `select random` with seeds 0, 1, 2.
Each selection runs as an instructkit pipeline ending in a `train:` step (TRL's SFTTrainer, the same
settings and training seed for every method), so this measures the product as a user runs it. Every
model's held-out loss (token-weighted NLL of the held-out answers, instructkit.training.heldout_loss)
is printed beside the base model's; with `--judge MODEL` also the pairwise judge's win rate of each
model's answers against random seed 0's on the first `--judge-rows` held-out prompts.

The judge and scorer is the embedded SmolLM2-135M-Instruct itself (`--scorer` to change): a weak judge,
so the selections are what such a judge picks, not what the papers' GPT-4/ChatGPT judges would pick.

Defaults are sized for a 2-core CPU to finish in under 30 minutes (N 100 from a pool of 300, training rows cut at 192 tokens, one epoch);
`--n 8 --pool 16 --heldout 16` checks the plumbing in a few minutes. Pipelines keep their outputs and
the response cache, so a second run reuses every score and trained model.

    python bench/selection_value.py [--n 100] [--pool 300] [--heldout 100] [--judge local] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "alpaca_sample_17970.json"


def pipelines(n: int, pool: Path, train: dict, scorer: str) -> dict[str, tuple[int, list[dict]]]:
    """Method -> (pipeline seed, steps before the train step)."""
    steps = {
        "deita": [{"name": "scored", "judge": "deita", "input": str(pool)},
                  {"name": "picked", "select": "deita", "options": {"budget": n}}],
        "cherry_ifd": [{"name": "picked", "score": "ifd", "input": str(pool), "options": {"top_k": n}}],
        "alpagasus": [{"name": "scored", "judge": "alpagasus", "input": str(pool), "options": {"max_tokens": 16}},
                      {"name": "picked", "select": "topk", "options": {"k": n, "score": "alpagasus_score"}}],
    }  # fmt: skip
    out = {name: (0, s) for name, s in steps.items()}
    for seed in (0, 1, 2):
        out[f"random_{seed}"] = (seed, [{"name": "picked", "select": "random", "input": str(pool), "options": {"k": n}}])
    return {name: (seed, [*s, {"name": "model", "train": "local", "options": train}]) for name, (seed, s) in out.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--n", type=int, default=100, help="rows selected per method (default 100)")
    ap.add_argument("--pool", type=int, default=300, help="candidate rows the selectors choose from (default 300)")
    ap.add_argument("--heldout", type=int, default=100, help="held-out rows (default 100)")
    ap.add_argument("--scorer", default="local", help="model that judges and scores the pool (default local)")
    ap.add_argument("--judge", default=None, help="pairwise judge for win rates against random seed 0 (off by default)")
    ap.add_argument("--judge-rows", type=int, default=50, help="held-out prompts the judge compares (default 50)")
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=192, help="tokens per training row (default 192)")
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--lora", action="store_true")
    ap.add_argument("--seed", type=int, default=0, help="held-out and pool draw")
    ap.add_argument("--out", type=Path, default=Path("selection_value.out"))
    args = ap.parse_args()
    if not args.data.is_file():
        print(f"skipped: {args.data} is absent (the shared benchmark data folder is not here)")
        return 0
    import yaml

    from instructkit.evaluation import win_rate
    from instructkit.run.pipeline import Pipeline
    from instructkit.training import heldout_loss

    every = json.loads(args.data.read_text())
    # Rows with an instruction and an answer: a judge refuses an empty one (the sample has a few)
    rows = [r for r in every if str(r.get("instruction") or "").strip() and str(r.get("output") or "").strip()]
    order = list(range(len(rows)))
    random.Random(args.seed).shuffle(order)
    held = [rows[i] for i in order[: args.heldout]]
    pool = [rows[i] for i in order[args.heldout : args.heldout + args.pool]]
    args.out.mkdir(parents=True, exist_ok=True)
    pool_path, held_path = args.out / "pool.jsonl", args.out / "heldout.jsonl"
    for path, part in ((pool_path, pool), (held_path, held)):
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in part), encoding="utf-8")
    train = {"epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size, "max_length": args.max_length,
             "seed": 0, "lora": args.lora, **({"max_steps": args.max_steps} if args.max_steps else {})}  # fmt: skip
    print(f"# {len(rows)} of {len(every)} rows with an instruction and an answer: {len(held)} held out, pool {len(pool)}, N {args.n}; scorer {args.scorer}; "
          f"train {json.dumps(train)}", flush=True)  # fmt: skip
    start = time.monotonic()
    base = heldout_loss("local", held_path)
    print(f"# base model held-out loss {base.loss:.4f} over {base.tokens} answer tokens "
          f"({time.monotonic() - start:.0f}s)", flush=True)  # fmt: skip
    results: dict[str, dict] = {}
    for name, (seed, steps) in pipelines(args.n, pool_path, train, args.scorer).items():
        spec = {"name": f"selection_value_{name}", "model": args.scorer, "out": str(args.out / name), "seed": seed,
                "steps": steps}  # fmt: skip
        path = args.out / f"{name}.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
        t = time.monotonic()
        manifest = Pipeline.from_yaml(path).run(progress=False)
        wall = time.monotonic() - t
        trained = manifest["steps"][-1]
        select_s = sum(float(s.get("wall_s") or 0) for s in manifest["steps"][:-1])
        t = time.monotonic()
        loss = heldout_loss(trained["model_path"], held_path)
        results[name] = {"rows": trained["rows"], "steps": trained["steps"], "loss": loss.loss,
                         "select_s": select_s, "train_s": float(trained["wall_s"]), "eval_s": time.monotonic() - t,
                         "wall_s": wall, "model": trained["model_path"], "settings": trained["settings"]}  # fmt: skip
        print(f"# {name:12} {trained['rows']:4} rows, {trained['steps']:3} steps, held-out loss {loss.loss:.4f}  "
              f"({wall:.0f}s)", flush=True)  # fmt: skip
    if args.judge:
        for name, r in results.items():
            if name != "random_0":
                r["judge"] = win_rate(r["model"], results["random_0"]["model"], held[: args.judge_rows], args.judge,
                                      max_tokens=128, work_dir=args.out / "judge" / name)  # fmt: skip
    randoms = [r["loss"] for k, r in results.items() if k.startswith("random_")]
    mean_r = sum(randoms) / len(randoms)
    print(f"\nheld-out: {len(held)} rows, {base.tokens} answer tokens; base SmolLM2-135M-Instruct loss {base.loss:.4f}; "
          f"random mean {mean_r:.4f} (spread {max(randoms) - min(randoms):.4f})")  # fmt: skip
    print("| method | rows | steps | held-out loss | vs random mean | win rate vs random_0 | select+score s | train s | eval s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        j = r.get("judge")
        rate = "-" if not j or j["win_rate"] is None else f"{j['win_rate']:.3f} ({j['wins']}/{j['ties']}/{j['losses']})"
        print(f"| {name} | {r['rows']} | {r['steps']} | {r['loss']:.4f} | {r['loss'] - mean_r:+.4f} | {rate} | "
              f"{r['select_s']:.0f} | {r['train_s']:.0f} | {r['eval_s']:.0f} |")  # fmt: skip
    s = next(iter(results.values()))["settings"]
    print(f"\nsettings: {json.dumps({k: s[k] for k in ('epochs', 'lr', 'batch_size', 'max_length', 'seed', 'lora', 'loss', 'device')})}; "
          f"versions {json.dumps(s['versions'])}; total {time.monotonic() - start:.0f}s")  # fmt: skip
    (args.out / "results.json").write_text(json.dumps({"base": base.loss, "results": results}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
