"""`instructkit train` and `instructkit evaluate`: the commands around `training.py`.

`evaluate` reports a trained model's held-out answer loss on a test split and, when a baseline and a judge
model are given, the project's pairwise judge's win rate of its answers against the baseline's (both
answer every test prompt greedily; the judge sees each pair in both orders, `judge/pairwise.py`). Win
rate = (wins + ties / 2) / pairs decided; pairs the judge could not read are counted apart, and a pair with
an empty answer is decided without the judge (the empty one loses; both empty: a tie), counted too.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

from .credentials import redact
from .training import (
    TrainOptions,
    chat_of,
    heldout_loss,
    load_rows,
    make_train_options,
    resolve_base,
    train_sft,
)


def add_train_args(p: argparse.ArgumentParser) -> None:
    """`instructkit train` flags: one per TrainOptions field (`--max-steps`, `--lora`, ...)."""
    p.add_argument("data", help="rows to train on: a records file or an export folder (read with datasets)")
    p.add_argument("--base", default="local", help="model to fine-tune: local, hf:PATH, a folder or a .gguf (default local)")
    p.add_argument("--out", required=True, help="run folder: the model goes to OUT/model, the manifest to OUT/train.manifest.json")
    p.add_argument("--split", default="train", help="the export folder's split to train on (default train)")
    p.add_argument("--verbose", action="store_true", help="show TRL's progress and logs")
    for f in dataclasses.fields(TrainOptions):
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=f"(default {f.default})")
        else:
            p.add_argument(flag, default=None, metavar=f.name.upper(), help=f"(default {f.default})")


def train_command(args: argparse.Namespace) -> int:
    from .run.manifest import write_manifest

    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainOptions) if getattr(args, f.name) is not None}
    opts = make_train_options(values)  # a bad value is refused before anything loads
    out = Path(args.out)
    result = train_sft(args.data, args.base, out, opts, split=args.split, quiet=not args.verbose)
    write_manifest(out / "train.manifest.json", command="train", data=str(args.data), split=args.split,
                   **result.as_dict())  # fmt: skip
    first, last = (f"{result.losses[0]:.4f}", f"{result.losses[-1]:.4f}") if result.losses else ("-", "-")
    print(f"train: {result.rows} rows, {result.steps} steps, loss {first} -> {last} | model -> {result.model_path} "
          f"| {result.wall_s:.1f}s", file=sys.stderr)  # fmt: skip
    return 0


def add_evaluate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="the trained model: a run's OUT/model folder, hf:PATH, a .gguf, or local")
    p.add_argument("--data", required=True, help="test rows: a records file or an export folder")
    p.add_argument("--split", default="test", help="the export folder's split to evaluate on (default test)")
    p.add_argument("--baseline", help="a second model whose answers the judge compares against")
    p.add_argument("--judge", help="the judge model (any -m spec: local, provider/model, NAME@URL)")
    p.add_argument("--max-tokens", type=int, default=256, help="answers: most tokens each (default 256)")
    p.add_argument("--limit", type=int, default=None, help="judge only the first N test rows")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write the figures as JSON here")


async def _answers(spec: str, prompts: list[list[dict]], max_tokens: int, seed: int) -> list[str]:
    from .models import LLM

    llm = LLM(spec, engine="transformers")
    try:
        done = await asyncio.gather(*(llm.achat(p, temperature=0.0, max_tokens=max_tokens, seed=seed) for p in prompts))
        return [c.text for c in done]
    finally:
        await llm.aclose()


def model_spec(model: str) -> str:
    """An `LLM` spec for a model argument: specs as they are, a folder or .gguf as `hf:PATH`."""
    return model if model == "local" or model.startswith(("local:", "hf:")) else f"hf:{resolve_base(model)}"


def win_rate(model: str, baseline: str, rows: list[dict], judge: str, *, max_tokens: int = 256, seed: int = 0,
             work_dir: str | Path = "evaluate.work") -> dict[str, Any]:
    """The pairwise judge's win rate of `model`'s answers (A) against `baseline`'s (B) on `rows`' prompts."""
    from . import registry
    from .models.config import ModelConfig
    from .run.steps import MethodStep, Models, method_options, run_step

    chats = [c for c in (chat_of(r) for r in rows) if c is not None]
    prompts = [c[:-1] for c in chats]
    ours = asyncio.run(_answers(model_spec(model), prompts, max_tokens, seed))
    theirs = asyncio.run(_answers(model_spec(baseline), prompts, max_tokens, seed))
    pairs = [{"instruction": p[-1]["content"], "input": "", "response_a": a, "response_b": b}
             for p, a, b in zip(prompts, ours, theirs)]  # fmt: skip
    # An empty answer loses without a judge (both empty: a tie); the judge reads only pairs of two answers.
    by_rule = {i: ("tie" if not a.strip() and not b.strip() else "B" if not a.strip() else "A")
               for i, (a, b) in enumerate(zip(ours, theirs)) if not a.strip() or not b.strip()}  # fmt: skip
    to_judge = [r for i, r in enumerate(pairs) if i not in by_rule]
    judged_rows: list[dict] = []
    if to_judge:
        info = registry.get("judge", "pairwise")
        options, turns = method_options(info, {})
        with Models() as models:
            judged_rows = run_step(MethodStep(info, to_judge, options, ModelConfig.from_options(judge, {}),
                                              Path(work_dir), seed=seed, turns=turns, progress=False),
                                   models, None).rows  # fmt: skip
    winners = [r.get("pairwise_winner") for r in judged_rows] + list(by_rule.values())
    wins, losses, ties = winners.count("A"), winners.count("B"), winners.count("tie")
    decided = wins + losses + ties
    return {"win_rate": (wins + ties / 2) / decided if decided else None, "wins": wins, "losses": losses,
            "ties": ties, "unjudged": len(winners) - decided, "pairs": len(winners), "empty_answer_pairs": len(by_rule),
            "judge": redact(judge), "baseline": redact(baseline), "max_tokens": max_tokens}  # fmt: skip


def evaluate_command(args: argparse.Namespace) -> int:
    if bool(args.baseline) != bool(args.judge):
        raise ValueError("evaluate: give --baseline and --judge together (or neither)")
    start = time.monotonic()
    loss = heldout_loss(args.model, args.data, split=args.split)
    figures: dict[str, Any] = {"model": args.model, "data": str(args.data), "split": args.split,
                               "heldout_loss": loss.loss, "perplexity": loss.perplexity, "answer_tokens": loss.tokens,
                               "rows": loss.rows, "rows_without_answer": loss.rows_without_answer}  # fmt: skip
    line = f"evaluate: held-out loss {loss.loss:.4f} (ppl {loss.perplexity:.2f}) over {loss.tokens} answer tokens, {loss.rows} rows"
    if args.baseline:
        rows = load_rows(args.data, args.split)[: args.limit]
        work = Path(args.out).with_suffix(".work") if args.out else Path("evaluate.work")
        figures["judge"] = win_rate(args.model, args.baseline, rows, args.judge, max_tokens=args.max_tokens,
                                    seed=args.seed, work_dir=work)  # fmt: skip
        j = figures["judge"]
        rate = "n/a" if j["win_rate"] is None else f"{j['win_rate']:.3f}"
        line += f" | win rate vs baseline {rate} ({j['wins']} W / {j['ties']} T / {j['losses']} L, {j['unjudged']} unjudged)"
    figures["wall_s"] = round(time.monotonic() - start, 3)
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=1), encoding="utf-8")
    print(json.dumps(figures, indent=1))
    print(line + f" | {figures['wall_s']:.1f}s", file=sys.stderr)
    return 0
