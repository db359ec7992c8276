"""DEITA score-first, diversity-aware selection (Liu et al. 2023, "What Makes Good Data for Alignment", 2312.15685).

Rows are visited by score (descending; ties by original index, where the official pandas quicksort is
unstable), and a row is accepted when its cosine similarity to every already accepted row is at most
`tau` (default 0.9), until the budget. This is the official `IterativeFilter` with batch size 1, the
semantics of the released sets. Deviation: instead of re-uploading the selected set for every
candidate we process candidates in blocks: one matmul of the block against the selected set, then a
sequential pass inside the block using the block's own Gram matrix. The accepted list is identical
to batch-size-1 (the official batch>1 mode, which also rejects rows similar to *rejected* batch
mates, is not reproduced). Memory is O(budget * d + block^2), never N x N. float32 by default
(float64 input stays float64); a similarity within float32 rounding of tau may flip. tau = 0.9 was
tuned on the last-token state of a causal LM (Mistral-7B) over the vicuna_v1.1 conversation
(`-o preset official`); with another embedder (the default: MiniLM on the joined fields) the run
warns, since the same tau is then another operating point.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from instructkit.registry import method

from .common import (
    EmbeddingOptions,
    Matmul,
    PageBudget,
    as_indices,
    compute_dtype,
    score_column,
    stable_order,
    take,
)
from .embed import load_embeddings


def greedy_similarity_filter(
    emb: np.ndarray,
    order: np.ndarray | None = None,
    tau: float = 0.9,
    budget: int | None = None,
    normalize: bool = True,
    block: int = 4096,
    device: str | None = "auto",
) -> np.ndarray:
    """Visit rows in `order` and accept a row iff max cosine similarity to the accepted ones is <= tau.

    Returns accepted indices in visiting order (at most `budget`). Shared by DEITA and embedding dedup.
    """
    n, d = emb.shape
    order = np.arange(n, dtype=np.int64) if order is None else as_indices(order)
    budget = len(order) if budget is None else min(int(budget), len(order))
    dtype = compute_dtype(emb)
    mm = Matmul(device)
    pages = PageBudget(emb)
    sel_vecs = np.empty((max(budget, 1), d), dtype=dtype)
    chosen: list[int] = []
    pos = 0
    # selected rows per product: bounds the [block, chunk] similarity tile
    sel_chunk = max(1024, (256 << 20) // max(1, 4 * block))
    while len(chosen) < budget and pos < len(order):
        need = budget - len(chosen)
        width = int(min(block, max(256, need)))
        cand = order[pos : pos + width]
        pos += len(cand)
        x = np.asarray(emb[cand], dtype=dtype)
        pages.took(len(cand))
        if normalize:
            norms = np.sqrt(np.einsum("ij,ij->i", x, x))
            norms[norms == 0] = 1
            x = x / norms[:, None]
        max_sim = np.full(len(cand), -np.inf, dtype=dtype)
        xt = mm.to_dev(x)
        for lo in range(0, len(chosen), sel_chunk):
            hi = min(len(chosen), lo + sel_chunk)
            np.maximum(max_sim, mm.abt(xt, sel_vecs[lo:hi]).max(axis=1), out=max_sim)
        alive = np.flatnonzero(max_sim <= tau)
        if len(alive) == 0:
            continue
        xa = x[alive]
        gram = mm.abt(xa, xa)
        in_block = np.full(len(alive), -np.inf, dtype=dtype)
        for j in range(len(alive)):
            if in_block[j] > tau:
                continue
            sel_vecs[len(chosen)] = xa[j]
            chosen.append(int(cand[alive[j]]))
            if len(chosen) == budget:
                break
            np.maximum(in_block, gram[j], out=in_block)
    return np.asarray(chosen, dtype=np.int64)


def deita_select(
    emb: np.ndarray,
    scores: np.ndarray,
    budget: int,
    tau: float = 0.9,
    normalize: bool = True,
    block: int = 4096,
    device: str | None = "auto",
) -> np.ndarray:
    """DEITA repr filter: indices in score order (highest first, ties by index, NaN last)."""
    return greedy_similarity_filter(emb, stable_order(scores), tau, budget, normalize, block, device)


def evol_scores(records: list[dict], complexity: str, quality: str) -> np.ndarray:
    """DEITA evol score per row: sum over turns of complexity_t * quality_t (scalars: the product)."""
    out = np.full(len(records), np.nan)
    for i, rec in enumerate(records):
        c, q = rec.get(complexity), rec.get(quality)
        if isinstance(c, (int, float)) and isinstance(q, (int, float)):
            out[i] = float(c) * float(q)
        elif isinstance(c, list) and isinstance(q, list) and c and len(c) == len(q):
            out[i] = float(sum(float(a) * float(b) for a, b in zip(c, q)))
    return out


@dataclass
class DeitaOptions(EmbeddingOptions):
    budget: int = 1000
    tau: float = 0.9  # reject when cosine similarity to an accepted row is > tau
    score: str = "deita_score"  # used when complexity/quality are not both given
    complexity: str | None = None  # columns for the evol score sum(c_t * q_t)
    quality: str | None = None
    device: str = "auto"

    # `examples/pipelines/embed_datasets.py` + `combined_filter.py`: the last-token state of the vicuna_v1.1
    # conversation from a causal LM (Mistral-7B-v0.1: -o encoder causal:FOLDER) in bf16 with the slow
    # tokenizer (`Embedder`: torch_dtype bfloat16 with --bfloat16, use_fast=False), 2048 tokens, tau 0.9
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "official": {"text_template": "vicuna_v1.1", "encoder_pooling": "last", "encoder_max_length": 2048,
                     "encoder_dtype": "bfloat16", "encoder_slow_tokenizer": True, "tau": 0.9}
    }


TAU_TUNED_ON = "a causal LM's last-token state of the vicuna_v1.1 conversation (Mistral-7B-v0.1)"


def tau_warning(o: DeitaOptions) -> str | None:
    """Why tau may not mean here what it meant in the paper: it was tuned on one embedder, and cosine
    similarities of another (e.g. MiniLM on joined fields) sit at another level. None when the vectors
    come from a file (we cannot tell) or from the official embedding."""
    if o.embeddings:
        return None
    from instructkit.models.embeddings import CAUSAL_POOLINGS, split_pooling

    spec = o.encoder or "local"
    if spec.startswith("causal:"):
        pooling = split_pooling(spec[len("causal:") :], CAUSAL_POOLINGS, o.encoder_pooling)[1]
        if pooling == "last" and o.text_template == "vicuna_v1.1":
            return None
    return (
        f"tau={o.tau} was tuned on {TAU_TUNED_ON}; with encoder {spec!r} similarities sit at another level, "
        "so check how many rows pass (or tune tau); -o preset official -o encoder causal:FOLDER embeds as DEITA did"
    )


@method("select", "deita", options=DeitaOptions, needs_model=False)
def deita(records: list[dict], ctx) -> list[dict]:
    """DEITA: best score first, skip rows with cosine > tau to an accepted row, until the budget."""
    o = ctx.options or DeitaOptions()
    if o.complexity and o.quality:
        scores = evol_scores(records, o.complexity, o.quality)
    else:
        scores = score_column(records, o.score)
    warning = tau_warning(o)
    if warning:
        print(f"[deita] warning: {warning}", file=sys.stderr)
    emb = load_embeddings(records, ctx, o)
    return take(records, deita_select(emb, scores, o.budget, o.tau, device=o.device))
