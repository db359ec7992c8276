"""Prompt uncertainty (Active Instruction Tuning, Kung et al. 2023, 2311.00288), at example level.

The paper scores *tasks*: k copies of the task definition with each word dropped with probability p
(`random.uniform(0, 1) > p` keeps a word, as `random_drop_word`), the likelihood P(y | prompt) =
exp(-mean token CE) of the model's own prediction y under the original prompt, and the uncertainty
mean_i |P(y|prompt_i) - P(y|prompt_0)|. Deviation (the port the spec describes, said here): the unit
is one example; its instruction (and with `perturb_input` its input) is perturbed, the label is the
gold response by default or the model's greedy answer (`label=greedy`, generated through the run's
chat model); drop masks are seeded per row, so scores are reproducible.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass
from typing import Any

from instructkit.data.io import INSTRUCTION_FIELD, RESPONSE_FIELD
from instructkit.registry import method
from instructkit.run.runner import RunContext

from .common import LocalModelOptions, SpanBatcher, finish, local_backend, map_sorted, mean_loss, row_items
from .ifd import get_template, official_span


def drop_words(text: str, p: float, rng: random.Random) -> str:
    """Each whitespace-separated word kept when `rng.uniform(0, 1) > p` (Active-IT's rule)."""
    return " ".join(w for w in text.split() if rng.uniform(0, 1) > p)


def perturbations(
    instruction: str, input: str, k: int, p: float, seed: int, perturb_input: bool = False
) -> list[tuple[str, str]]:
    """The original (instruction, input) then k perturbed copies, from a per-row seeded generator."""
    key = hashlib.sha256(f"{seed}\0{instruction}\0{input}".encode()).hexdigest()
    rng = random.Random(key)
    out = [(instruction, input)]
    for _ in range(k):
        ins = drop_words(instruction, p, rng)
        out.append((ins, drop_words(input, p, rng) if perturb_input and input else input))
    return out


def uncertainty_of(likelihoods: list[float]) -> float:
    """mean_i |P_i - P_0| over the perturbed prompts i = 1..k ("abs-bald")."""
    p0 = likelihoods[0]
    return sum(abs(p - p0) for p in likelihoods[1:]) / max(1, len(likelihoods) - 1)


@dataclass
class UncertaintyOptions(LocalModelOptions):
    k: int = 10
    p: float = 0.2
    label: str = "gold"  # gold | greedy (the model's own answer under the original prompt)
    perturb_input: bool = False
    template: str = "alpaca"
    template_path: str | None = None
    max_length: int = 1024
    max_tokens: int = 128  # for label=greedy
    seed: int | None = None  # default: the run's random_state
    column: str = "uncertainty"


def score_uncertainty(
    records: list[dict], ctx: RunContext, opts: UncertaintyOptions, backend: Any | None = None
) -> list[dict]:
    """Columns `<c>` (mean |dP|) and `<c>_p0` (likelihood under the original prompt)."""
    backend = backend or local_backend(ctx, opts)
    tok = backend.tokenizer
    tpl = get_template(opts.template, opts.template_path)
    batcher = SpanBatcher(backend, opts)
    seed = ctx.random_state if opts.seed is None else opts.seed
    c = opts.column
    tpl_id = hashlib.sha256(tpl.source.encode()).hexdigest()[:16]

    async def one(item: dict) -> dict:
        variants = perturbations(item["instruction"], item["input"], opts.k, opts.p, seed, opts.perturb_input)
        y = item["output"]
        if opts.label == "greedy":
            if ctx.llm is None:
                raise ValueError("label=greedy needs a chat model (--model)")
            y = (
                await ctx.llm.achat(tpl.prompt(*variants[0]), temperature=0, max_tokens=opts.max_tokens)
            ).text
        pairs = [official_span(tok, tpl.prompt(ins, inp) + y, y, opts.max_length) for ins, inp in variants]
        losses = [mean_loss(s.token_logprobs) for s in await batcher.score(pairs)]
        if any(v is None for v in losses):
            return {c: None, f"{c}_p0": None}
        probs = [math.exp(-v) for v in losses]
        return {c: uncertainty_of(probs), f"{c}_p0": probs[0]}

    items, lengths = row_items(records, model=backend.model_id, tpl=tpl_id, seed=seed)
    return finish(
        records, map_sorted(ctx, items, one, "uncertainty", lengths), "uncertainty", c, [c, f"{c}_p0"]
    )


@method("score", "uncertainty", options=UncertaintyOptions, reads=(INSTRUCTION_FIELD, RESPONSE_FIELD))
def uncertainty(records: list[dict], ctx: RunContext) -> list[dict]:
    """Prompt uncertainty (Active IT): likelihood disagreement under k word-dropped instructions."""
    return score_uncertainty(records, ctx, ctx.options or UncertaintyOptions())
