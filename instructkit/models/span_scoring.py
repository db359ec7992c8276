"""Answer-token log-probs of many (prompt ids, answer ids) pairs with any transformers causal LM.

One implementation serves every local scorer (IFD, Superfiltering, perplexity, Nuggets, ...). It does
the least work that gives the same numbers as a full forward pass per pair:
- pairs whose prompts start with the same tokens (a shared template such as Alpaca's preamble) are
  grouped; the shared prefix runs once per group and its key/value cache is reused by every batch of
  the group, so the template's tokens are not recomputed for each row;
- batches are length-sorted and bounded by padded tokens as well as rows: on a CPU, small batches keep
  the element-wise work in cache (measured fastest near 512 tokens), on a GPU large ones fill the device;
- the LM head runs only at answer positions, in chunks, so no [tokens, vocab] tensor of a whole
  batch is ever built; the logit transforms some architectures apply after the head (Gemma 2's
  soft-capping, Cohere's and Granite's scaling) are applied too, and a model whose logits still differ
  from its own forward's (checked once per model) is scored through its whole forward instead.
The values agree with the straightforward per-pair loop within float round-off (tests hold them to 1e-5
in fp32 against full logits and the HF masked loss).
"""

from __future__ import annotations

import copy
import functools
import inspect
import weakref
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

HEAD_CHUNK = 256  # answer positions per LM-head matmul: bounds the [positions, vocab] logits memory
MIN_SHARED_PREFIX = 8  # shorter shared prefixes are not worth a separate pass
_MAX_SPLIT_DEPTH = 32  # how many times one keyed group may split where its prompts diverge
CPU_TOKEN_BUDGET = 512  # padded tokens per forward on CPU (bench/ifd.py: fastest between 256 and 512)
GPU_TOKEN_BUDGET = 32768


def default_token_budget(device: Any) -> int:
    """Padded tokens per forward pass for a device: small on CPU, large on accelerators."""
    return CPU_TOKEN_BUDGET if str(device).startswith("cpu") else GPU_TOKEN_BUDGET


FALLBACK_TOKEN_BUDGET = 4096  # with whole-model logits ([tokens, vocab] per batch), keep batches small


@functools.cache
def _cache_argument(forward_owner: type) -> str:
    """The key/value cache's name in a model's forward and output: `cache` from transformers 5.x (the
    old `past_key_values` there only warns that it is deprecated), `past_key_values` before."""
    return "cache" if "cache" in inspect.signature(forward_owner.forward).parameters else "past_key_values"


def with_cache(model: Any, cache: Any) -> dict[str, Any]:
    """Forward keyword arguments that pass `cache` to `model` under the name its version takes."""
    return {_cache_argument(type(model.base_model)): cache, "use_cache": True}


def cache_of(model: Any, output: Any) -> Any:
    """The key/value cache a forward of `model` returned."""
    return getattr(output, _cache_argument(type(model.base_model)))


def lm_logits(model: Any, hidden: Any) -> Any:
    """The model's logits for final hidden states: its LM head, then the transforms some architectures
    apply after it (Gemma 2's final soft-capping, Cohere's `logit_scale`, Granite's `logits_scaling`)."""
    import torch

    logits = model.get_output_embeddings()(hidden)
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    if getattr(cfg, "logit_scale", None):
        logits = logits * cfg.logit_scale
    if getattr(cfg, "logits_scaling", None):
        logits = logits / cfg.logits_scaling
    cap = getattr(cfg, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


_HEAD_CHECKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def head_is_exact(model: Any, device: Any = "cpu") -> bool:
    """Whether `lm_logits` on the body's output reproduces the model's own logits (checked once per
    model on a few tokens); architectures with an unknown logit transform fail and are scored through
    the whole model instead."""
    import torch

    if model not in _HEAD_CHECKED:
        vocab = model.get_output_embeddings().weight.shape[0]
        ids = (torch.arange(1, 9, device=device) % vocab)[None]
        with torch.inference_mode():
            want = model(input_ids=ids).logits.float()
            got = lm_logits(model, model.base_model(input_ids=ids).last_hidden_state).float()
        tol = 1e-4 if model.dtype == torch.float32 else 2e-2
        _HEAD_CHECKED[model] = bool(torch.allclose(want, got, rtol=tol, atol=tol))
    return _HEAD_CHECKED[model]


@dataclass
class _Group:
    """Pairs (by index) that share `prefix`, the tokens run once for all of them (may be empty)."""

    prefix: list[int]
    members: list[int]


def plan_groups(prompts: Sequence[Sequence[int]], min_prefix: int = MIN_SHARED_PREFIX) -> list[_Group]:
    """Group pairs so that shared prompt prefixes run once. Pairs are keyed by their first `min_prefix`
    prompt tokens; a keyed set is split where its prompts diverge (Alpaca's two preambles share their
    first words) whenever the parts save more recomputed tokens than the whole. A prefix stays at least
    one token short of each member's prompt: the position before the first answer token must run with
    the batch, since its output predicts that token. Prompts too short to share, and pairs left alone,
    go to a group with an empty prefix."""
    keyed: dict[tuple[int, ...], list[int]] = {}
    plain: list[int] = []
    for i, p in enumerate(prompts):
        if min_prefix > 0 and len(p) > min_prefix:
            keyed.setdefault(tuple(p[:min_prefix]), []).append(i)
        else:
            plain.append(i)
    groups: list[_Group] = []
    for members in keyed.values():
        found = _best_split(prompts, members, min_prefix, _MAX_SPLIT_DEPTH) if len(members) > 1 else []
        groups.extend(found)
        grouped = {i for g in found for i in g.members}
        plain.extend(i for i in members if i not in grouped)
    if plain:
        groups.append(_Group([], sorted(plain)))
    return groups


def _saved(groups: list[_Group]) -> int:
    """Prompt tokens not recomputed thanks to `groups`."""
    return sum((len(g.members) - 1) * len(g.prefix) for g in groups)


def _best_split(
    prompts: Sequence[Sequence[int]], members: list[int], depth: int, levels: int
) -> list[_Group]:
    """Groups for `members`, which share their first `depth` prompt tokens: one group with their longest
    common prefix, or the groups of the subsets that continue with each next token, whichever saves more."""
    first = prompts[members[0]]
    limit = min(len(prompts[i]) for i in members) - 1
    n = depth
    while n < limit and all(prompts[i][n] == first[n] for i in members):
        n += 1
    whole = [_Group(list(first[:n]), sorted(members))]
    if levels <= 0:
        return whole
    parts: dict[int, list[int]] = {}
    for i in members:
        if len(prompts[i]) - 1 > n:  # can share at least one more token
            parts.setdefault(prompts[i][n], []).append(i)
    split = [
        g for part in parts.values() if len(part) > 1 for g in _best_split(prompts, part, n + 1, levels - 1)
    ]
    return split if _saved(split) > _saved(whole) else whole


def length_batches(
    lengths: Mapping[int, int] | Sequence[int], members: Iterable[int], max_rows: int, token_budget: int
) -> list[list[int]]:
    """Members sorted by (length, index), cut into batches of at most `max_rows` rows and
    `token_budget` padded tokens (a single longer row still forms a batch)."""
    order = sorted(members, key=lambda i: (lengths[i], i))
    batches: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        if cur and (len(cur) >= max_rows or (len(cur) + 1) * lengths[i] > token_budget):
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches


def score_spans(
    model: Any,
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
    *,
    pad_id: int,
    device: Any = "cpu",
    max_rows: int = 64,
    token_budget: int | None = None,
    reuse_prefix: bool = True,
    lock: AbstractContextManager | None = None,
) -> list[list[float]]:
    """Log-prob of each answer token given everything before it, per pair, in input order. With an
    empty prompt the first answer token has no context and is not scored (as the HF causal-LM loss)."""
    import torch

    with lock or nullcontext(), torch.inference_mode():
        exact = head_is_exact(model, device)
        budget = token_budget or default_token_budget(device)
        work = _Work(
            model=model,
            prompts=[list(p) for p, _ in pairs],
            full=[list(p) + list(a) for p, a in pairs],
            pad_id=pad_id,
            device=device,
            max_rows=max_rows,
            budget=budget if exact else min(budget, FALLBACK_TOKEN_BUDGET),
            head_only=exact,
            out=[[] for _ in pairs],
        )
        for group in plan_groups(work.prompts, MIN_SHARED_PREFIX if reuse_prefix else 0):
            try:
                _run_group(work, group, group.prefix)
            except (TypeError, AttributeError, NotImplementedError, ValueError):
                if not group.prefix:
                    raise
                # an architecture whose cache cannot be reused this way: the same group without reuse
                for i in group.members:
                    work.out[i] = []
                _run_group(work, group, [])
    return work.out


@dataclass
class _Work:
    """One `score_spans` call: the model, the pairs as token lists, batching limits, and the results."""

    model: Any
    prompts: list[list[int]]
    full: list[list[int]]
    pad_id: int
    device: Any
    max_rows: int
    budget: int
    head_only: bool  # LM head at answer positions (else whole-model logits: unknown logit transforms)
    out: list[list[float]]


def _run_group(work: _Work, group: _Group, prefix: list[int]) -> None:
    """Score a group's pairs: `prefix` once (its key/value cache kept), then its members in batches."""
    import torch

    cut = len(prefix)
    prefix_cache = None
    if cut:
        ids = torch.tensor([prefix], device=work.device)
        prefix_cache = cache_of(work.model, work.model.base_model(input_ids=ids, use_cache=True))
    lengths = {i: len(work.full[i]) - cut for i in group.members}
    for batch in length_batches(lengths, group.members, work.max_rows, work.budget):
        _score_batch(work, batch, cut, prefix_cache)


def _score_batch(work: _Work, batch: list[int], cut: int, prefix_cache: Any) -> None:
    """One right-padded forward of the batch's suffixes (after `cut` cached prefix tokens), then the
    logits at its answer positions only; appends each pair's log-probs to `work.out`."""
    import torch

    full = work.full
    rows, cols, targets = [], [], []
    for r, i in enumerate(batch):
        for t in range(max(len(work.prompts[i]), 1), len(full[i])):
            rows.append(r)
            cols.append(t - 1 - cut)
            targets.append(full[i][t])
    if not targets:
        return
    width = max(len(full[i]) - cut for i in batch)
    ids = torch.full((len(batch), width), work.pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), cut + width), dtype=torch.long)
    for r, i in enumerate(batch):
        n = len(full[i]) - cut
        ids[r, :n] = torch.tensor(full[i][cut:], dtype=torch.long)
        mask[r, : cut + n] = 1
    kwargs: dict[str, Any] = {"use_cache": False}
    if prefix_cache is not None:
        cache = copy.deepcopy(prefix_cache)
        cache.batch_repeat_interleave(len(batch))
        kwargs = with_cache(work.model, cache)
    inputs = {"input_ids": ids.to(work.device), "attention_mask": mask.to(work.device), **kwargs}
    if work.head_only:
        states = work.model.base_model(**inputs).last_hidden_state
    else:
        states = work.model(**inputs).logits
    at = states[torch.tensor(rows, device=states.device), torch.tensor(cols, device=states.device)]
    tgt = torch.tensor(targets, device=at.device)
    picked = []
    for s in range(0, len(targets), HEAD_CHUNK):
        logits = lm_logits(work.model, at[s : s + HEAD_CHUNK]) if work.head_only else at[s : s + HEAD_CHUNK]
        picked.append(
            torch.log_softmax(logits.float(), dim=-1).gather(-1, tgt[s : s + HEAD_CHUNK, None]).squeeze(-1)
        )
    for r, v in zip(rows, torch.cat(picked).tolist()):
        work.out[batch[r]].append(v)
