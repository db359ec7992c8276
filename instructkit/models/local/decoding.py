"""Decoding rules both local engines share (transformers on torch tensors, llama.cpp on numpy arrays):
the samples of a request and their seeds, greedy / temperature / top-p sampling, OpenAI's presence and
frequency penalties, stop strings and trimming a completion at one, and handing a result back from
an engine's worker thread to the caller's event loop. One rule each, so both engines decode alike."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..types import GenParams, TokenLogprob


# ----- samples and seeds ------------------------------------------------------------------------
def samples(params: GenParams, n: int) -> list[GenParams]:
    """The options of each of a request's `n` samples (seeds seed, seed+1, ...: `GenParams.for_sample`)."""
    return [params.for_sample(i) for i in range(n)]


def torch_generator(seed: int | None) -> Any:
    """A torch generator for one sampled row, seeded by its sample's seed (a fresh random one without)."""
    import torch

    g = torch.Generator()
    g.manual_seed(seed if seed is not None else random.getrandbits(63))
    return g


def numpy_generator(seed: int | None) -> np.random.Generator:
    """A numpy generator for one sampled sequence, seeded by its sample's seed (fresh entropy without)."""
    return np.random.default_rng(seed)


# ----- penalties ----------------------------------------------------------------------------------
def apply_penalties(logits: Any, counts: Any, presence: Any, frequency: Any) -> Any:
    """OpenAI's presence and frequency penalties on next-token logits [rows, vocab]: each token's logit
    minus count x frequency, minus presence when count > 0, counting the tokens generated so far
    (not the prompt's), one penalty pair per row."""
    return logits - counts * frequency[:, None] - (counts > 0).to(logits.dtype) * presence[:, None]


def penalised(logits: np.ndarray, counts: dict[int, int], params: GenParams) -> np.ndarray:
    """`apply_penalties` for one sequence's logits [vocab] with its token counts as a dict (a copy;
    `logits` itself when nothing is penalised)."""
    if not counts or not (params.presence_penalty or params.frequency_penalty):
        return logits
    scores = logits.copy()
    ids = np.fromiter(counts.keys(), dtype=np.intp, count=len(counts))
    cnt = np.fromiter(counts.values(), dtype=np.float32, count=len(counts))
    scores[ids] -= cnt * params.frequency_penalty + params.presence_penalty
    return scores


# ----- sampling -----------------------------------------------------------------------------------
def choose_rows(logits: Any, p: GenParams, gens: list[Any]) -> Any:
    """Next tokens of a batch (torch logits [rows, vocab]): greedy argmax at temperature 0, else
    temperature + top-p (the smallest prefix of tokens reaching top_p), one generator per row."""
    import torch

    if p.temperature <= 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits / p.temperature, dim=-1)
    if p.top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        drop = sorted_p.cumsum(-1) - sorted_p > p.top_p  # keep the smallest prefix reaching top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    return torch.cat([torch.multinomial(probs[j], 1, generator=g) for j, g in enumerate(gens)])


def choose_one(scores: np.ndarray, p: GenParams, rng: np.random.Generator | None) -> int:
    """Next token of one sequence (numpy scores [vocab]), by the rule of `choose_rows`. The nucleus is
    found among the top k tokens, k widened until it holds top_p of the mass (no full sort)."""
    if p.temperature <= 0:
        return int(scores.argmax())
    assert rng is not None, "a sampled sequence needs its generator"
    x = scores.astype(np.float64) / p.temperature
    x = np.exp(x - x.max())
    if p.top_p < 1.0:
        k = 64
        while True:  # the nucleus lies in the top k: widen k until it does
            k = min(k, x.size)
            top = np.argpartition(-x, k - 1)[:k] if k < x.size else np.arange(x.size)
            top = top[np.argsort(-x[top], kind="stable")]
            cum = np.cumsum(x[top])
            total = x.sum()
            if cum[-1] >= p.top_p * total or k == x.size:
                keep = int(np.searchsorted(cum, p.top_p * total)) + 1
                top = top[:keep]
                break
            k *= 8
        w = x[top]
        return int(top[min(int(np.searchsorted(np.cumsum(w), rng.random() * w.sum(), side="right")), keep - 1)])
    cum = np.cumsum(x)
    return int(min(np.searchsorted(cum, rng.random() * cum[-1], side="right"), x.size - 1))


# ----- stop strings -------------------------------------------------------------------------------
def find_stop(text: str, stops: Sequence[str]) -> int:
    """Index of the earliest stop string in `text`, or -1."""
    hits = [i for s in stops if s and (i := text.find(s)) >= 0]
    return min(hits) if hits else -1


def tokens_before_stop(n_tokens: int, stop_at: int, prefix_text: Callable[[int], str]) -> int:
    """How many of `n_tokens` generated tokens a completion cut at character `stop_at` keeps: those
    not lying wholly inside or after the stop string (`prefix_text(k)`: the text of the first k)."""
    while n_tokens and len(prefix_text(n_tokens - 1)) >= stop_at:
        n_tokens -= 1
    return n_tokens


# ----- results ------------------------------------------------------------------------------------
def deliver(loop: asyncio.AbstractEventLoop, future: asyncio.Future, result: Any) -> None:
    """Hand `result` (a Completion or an exception) from a worker thread to `future` on its loop; a
    closed loop means nobody is waiting."""
    try:
        loop.call_soon_threadsafe(_resolve, future, result)
    except RuntimeError:  # the caller's event loop is closed
        pass


def _resolve(future: asyncio.Future, result: Any) -> None:
    if future.done():
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


def token_logprob(logits: np.ndarray, tok: int, top: int, text_of: Callable[[int], str]) -> TokenLogprob:
    """The log-probability of `tok` under the raw distribution `logits` [vocab] (before penalties and
    grammar), with its `top` most likely alternatives, best first (ties by token id)."""
    raw = logits.astype(np.float64)
    lse = float(raw.max() + np.log(np.exp(raw - raw.max()).sum()))
    alts: list[tuple[str, float]] = []
    if top > 0:
        k = min(top, raw.size)
        best = np.argpartition(-raw, k - 1)[:k]
        best = best[np.argsort(-raw[best], kind="stable")]
        alts = [(text_of(int(t)), float(raw[t] - lse)) for t in best]
    return TokenLogprob(text_of(tok), float(raw[tok] - lse), alts)
