"""Local backend speed vs a bare transformers loop on the same model and inputs.

Generation: greedy, `--max-tokens` new tokens per prompt; bare = `model.generate` one prompt at a time.
Span scoring: log-probs of each answer given its instruction; bare = one full forward per pair with
full logits, log_softmax and gather. Ours runs one at a time (same work as bare) and batched.
Prompts come from ../shared/data/alpaca_sample_17970.json when present, else a built-in list.

    python bench/local_speed.py [--n 12] [--max-tokens 24] [--dtype float32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import torch

from instructkit.models.local import LocalBackend, load_local_backend
from instructkit.models.types import GenParams

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "alpaca_sample_17970.json"
BUILTIN = [
    ("Give three tips for staying healthy.", "Eat a balanced diet, exercise regularly and sleep well."),
    ("What is the capital of France?", "The capital of France is Paris."),
    ("Explain photosynthesis briefly.", "Plants turn light, water and carbon dioxide into sugar and oxygen."),
    (
        "Write a haiku about autumn.",
        "Red leaves drift slowly / the cool wind hums a soft song / trees prepare to sleep",
    ),
    ("Name two prime numbers.", "Two and three are prime numbers."),
    ("Translate 'good morning' into Spanish.", "Buenos días."),
    ("Summarise the water cycle.", "Water evaporates, condenses into clouds and falls back as rain."),
    ("Suggest a name for a bakery.", "Golden Crust Bakery."),
]


def load_pairs(n: int) -> list[tuple[str, str]]:
    if not DATA.is_file():
        print(f"({DATA} not found: using {len(BUILTIN)} built-in prompts)")
        return (BUILTIN * (n // len(BUILTIN) + 1))[:n]
    rows = json.loads(DATA.read_text())[:n]
    return [((r["instruction"] + ("\n\n" + r["input"] if r["input"] else "")), r["output"]) for r in rows]


def bench_generation(lm: LocalBackend, prompts: list[str], max_tokens: int) -> dict[str, float]:
    """Bare and ours alternate prompt by prompt, so load from other processes hits both alike."""
    msgs = [[{"role": "user", "content": p}] for p in prompts]
    params = GenParams(max_tokens=max_tokens)
    ids = [lm.prompt_ids(m) for m in msgs]

    def bare_one(p: list[int]) -> int:
        with torch.inference_mode():
            out = lm.model.generate(
                torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                max_new_tokens=max_tokens, do_sample=False, pad_token_id=lm.pad_id,
            )  # fmt: skip
        return len([x for x in out[0, len(p) :].tolist() if x not in lm.eos_ids])

    def ours_one(m: list[dict]) -> int:
        return asyncio.run(lm.chat(m, params))[0].usage.completion_tokens

    bare_one(ids[0]), ours_one(msgs[0])  # warm-up: the first generate call is slow
    bare_t = ours_t = 0.0
    bare_n = ours_n = 0
    for p, m in zip(ids, msgs):
        t = time.perf_counter()
        bare_n += bare_one(p)
        bare_t += time.perf_counter() - t
        t = time.perf_counter()
        ours_n += ours_one(m)
        ours_t += time.perf_counter() - t

    async def together() -> int:
        done = await asyncio.gather(*[lm.chat(m, params) for m in msgs])
        return sum(c[0].usage.completion_tokens for c in done)

    t = time.perf_counter()
    batched = asyncio.run(together()) / (time.perf_counter() - t)
    return {"bare": bare_n / bare_t, "ours one at a time": ours_n / ours_t, "ours micro-batched": batched}


def bench_scoring(lm: LocalBackend, pairs: list[tuple[str, str]]) -> dict[str, float]:
    """Same alternation as generation; then ours on all pairs in length-sorted batches of 8."""
    seqs = [lm.span_ids(p, a) for p, a in pairs]
    tokens = sum(len(p) + len(a) for p, a in seqs)

    def bare_one(p: list[int], a: list[int]) -> list[float]:
        with torch.inference_mode():
            full = torch.tensor([p + a])
            logp = torch.log_softmax(lm.model(full).logits[0].float(), dim=-1)
            return logp[torch.arange(len(p) - 1, full.shape[1] - 1), full[0, len(p) :]].tolist()

    bare_one(*seqs[0]), lm.span_scores(seqs[:1])  # warm-up
    bare_t = ours_t = 0.0
    for s in seqs:
        t = time.perf_counter()
        bare_one(*s)
        bare_t += time.perf_counter() - t
        t = time.perf_counter()
        lm.span_scores([s])
        ours_t += time.perf_counter() - t
    t = time.perf_counter()
    lm.span_scores(seqs, batch_size=8)
    batched = tokens / (time.perf_counter() - t)
    return {"bare": tokens / bare_t, "ours one at a time": tokens / ours_t, "ours batched (8)": batched}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=12, help="prompts for generation (scoring uses 3x)")
    ap.add_argument("--max-tokens", type=int, default=24)
    ap.add_argument("--dtype", default="float32")
    args = ap.parse_args()
    lm = load_local_backend("local", dtype=args.dtype)
    pairs = load_pairs(args.n * 3)
    print(f"model {lm.model_id}, torch threads {torch.get_num_threads()}", flush=True)
    gen = bench_generation(lm, [p for p, _ in pairs[: args.n]], args.max_tokens)
    score = bench_scoring(lm, [(p, a) for p, a in pairs if p])
    print(f"\n{'task':<22}{'variant':<22}{'tok/s':>10}{'vs bare':>9}")
    for task, res in (("generation", gen), ("span scoring", score)):
        for name, rate in res.items():
            print(f"{task:<22}{name:<22}{rate:>10.1f}{rate / res['bare']:>8.0%}")


if __name__ == "__main__":
    main()
