"""Deduplication: exact, MinHash near-duplicate, ROUGE-L (Wang et al. 2022, "Self-Instruct", 2212.10560) and embedding near-duplicate.

Every mode keeps the first occurrence in dataset order and drops a later row that duplicates a row
already kept (so a chain a~b~c with a !~ c keeps a and c). Exact: text equal after casefold and
whitespace collapse (normalize=True). MinHash: word n-gram shingles (rouge tokenisation), datasketch
MinHash(num_perm, seed) and MinHashLSH at the threshold; an LSH candidate counts only if its
estimated Jaccard is >= threshold (LSH can miss pairs: `lsh=False` compares against every kept row,
exact for the estimate, O(N * kept)). ROUGE-L: drop when F > threshold (0.7 as Self-Instruct) against
a kept row, through `instructkit.rouge.NoveltyIndex` (exact, pruned). Embedding: drop when cosine >
threshold against a kept row: the DEITA filter visited in dataset order without budget.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from instructkit.registry import method

from .common import EmbeddingOptions, as_indices, record_text, take
from .deita import greedy_similarity_filter
from .embed import load_embeddings

_WS = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    return _WS.sub(" ", text.casefold()).strip()


def exact_dedup(texts: Sequence[str], normalize: bool = True) -> np.ndarray:
    """Indices of the first occurrence of each text (dataset order)."""
    seen: set[str] = set()
    keep = []
    for i, t in enumerate(texts):
        key = normalize_text(t) if normalize else t
        if key not in seen:
            seen.add(key)
            keep.append(i)
    return as_indices(keep)


def shingles(text: str, ngram: int = 3) -> set[str]:
    """Word n-grams of the rouge tokenisation (the whole token list when shorter than n)."""
    from instructkit.rouge import tokenize

    toks = tokenize(text)
    if len(toks) < ngram:
        return {" ".join(toks)} if toks else set()
    return {" ".join(toks[i : i + ngram]) for i in range(len(toks) - ngram + 1)}


def minhashes(texts: Sequence[str], num_perm: int = 128, ngram: int = 3, seed: int = 1) -> list:
    from datasketch import MinHash

    out = []
    for t in texts:
        m = MinHash(num_perm=num_perm, seed=seed)
        m.update_batch([s.encode("utf-8") for s in shingles(t, ngram)])
        out.append(m)
    return out


def minhash_dedup(
    texts: Sequence[str],
    threshold: float = 0.8,
    num_perm: int = 128,
    ngram: int = 3,
    seed: int = 1,
    lsh: bool = True,
) -> np.ndarray:
    """Indices kept: a row is dropped when a kept row's estimated Jaccard is >= threshold."""
    hashes = minhashes(texts, num_perm, ngram, seed)
    keep: list[int] = []
    if lsh:
        from datasketch import MinHashLSH

        index = MinHashLSH(threshold=threshold, num_perm=num_perm)
        for i, m in enumerate(hashes):
            if not any(hashes[j].jaccard(m) >= threshold for j in index.query(m)):
                index.insert(i, m)
                keep.append(i)
        return as_indices(keep)
    kept = np.empty((len(hashes), num_perm), dtype=np.uint64)
    for i, m in enumerate(hashes):
        if keep:
            est = (kept[: len(keep)] == m.hashvalues[None, :]).mean(axis=1)
            if (est >= threshold).any():
                continue
        kept[len(keep)] = m.hashvalues
        keep.append(i)
    return as_indices(keep)


def rouge_dedup(texts: Sequence[str], threshold: float = 0.7) -> np.ndarray:
    """Indices kept: a row is dropped when its ROUGE-L F with a kept row is > threshold."""
    from instructkit.rouge import NoveltyIndex

    index = NoveltyIndex()
    keep = []
    for i, t in enumerate(texts):
        if index.is_novel(t, threshold):
            index.add(t)
            keep.append(i)
    return as_indices(keep)


def embedding_dedup(emb: np.ndarray, threshold: float = 0.95, device: str | None = "auto") -> np.ndarray:
    """Indices kept (dataset order): a row is dropped when its cosine with a kept row is > threshold."""
    return greedy_similarity_filter(emb, None, tau=threshold, budget=None, device=device)


@dataclass
class DedupOptions(EmbeddingOptions):
    mode: str = "exact"  # exact, minhash, rouge or embedding
    threshold: float | None = None  # default per mode: minhash 0.8, rouge 0.7, embedding 0.95
    fields: list[str] = field(default_factory=lambda: ["instruction", "input"])
    normalize: bool = True  # exact mode: casefold and collapse whitespace
    num_perm: int = 128
    ngram: int = 3
    lsh: bool = True
    seed: int = 1


_DEFAULT_THRESHOLD = {"minhash": 0.8, "rouge": 0.7, "embedding": 0.95}


def dedup_indices(records: list[dict], opts: DedupOptions, ctx=None) -> np.ndarray:
    t = opts.threshold if opts.threshold is not None else _DEFAULT_THRESHOLD.get(opts.mode)
    if opts.mode == "embedding":
        return embedding_dedup(load_embeddings(records, ctx, opts), t)
    texts = [record_text(r, opts.fields) for r in records]
    if opts.mode == "exact":
        return exact_dedup(texts, opts.normalize)
    if opts.mode == "minhash":
        return minhash_dedup(texts, t, opts.num_perm, opts.ngram, opts.seed, opts.lsh)
    if opts.mode == "rouge":
        return rouge_dedup(texts, t)
    raise ValueError(f"mode must be exact, minhash, rouge or embedding, not {opts.mode!r}")


@method("select", "dedup", options=DedupOptions, needs_model=False)
def dedup(records: list[dict], ctx) -> list[dict]:
    """Drop duplicates (exact, MinHash, ROUGE-L or embedding), keeping first occurrences."""
    return take(records, dedup_indices(records, ctx.options or DedupOptions(), ctx))
