"""Exact ROUGE-L F (as `rouge_score.RougeScorer(["rougeL"], use_stemmer=False)`) and a fast novelty index.

Tokenisation is rouge_score's default: lowercase, every run of characters outside `[a-z0-9]` becomes a
space, split; no stemming (Self-Instruct's setting). Scores are computed with the same formula and the
same floating-point operations as rouge_score, so a threshold decides exactly as it does there.

`NoveltyIndex` answers "is any pooled text more similar than t?" against tens of thousands of texts
without scoring each pair: an exact upper bound (LCS <= the token-multiset overlap, which is <= the
shorter length; F = 2*LCS/(n+m)) computed for the whole pool from inverted postings discards almost
everything, and the few survivors get the exact LCS by a bit-parallel algorithm (numpy uint64 lanes
for texts up to 64 tokens, Python integers beyond). Decisions are identical to scoring every pair.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

_NON_ALNUM = re.compile(r"[^a-z0-9]+")
_EPS = 1e-9  # slack on upper bounds so float rounding never prunes a pair that scores above a threshold


def tokenize(text: str) -> list[str]:
    """rouge_score's default tokens (no stemming): lowercase alphanumeric runs."""
    return [t for t in _NON_ALNUM.sub(" ", text.lower()).split() if t]


def lcs_length(a: Sequence, b: Sequence) -> int:
    """Length of the longest common subsequence (bit-parallel; any hashable tokens)."""
    if not a or not b:
        return 0
    if len(a) < len(b):
        a, b = b, a
    masks: dict = {}
    for i, tok in enumerate(b):
        masks[tok] = masks.get(tok, 0) | (1 << i)
    return _lcs_bits(masks, len(b), a)


def _lcs_bits(masks: dict, n: int, other: Iterable) -> int:
    """LCS of the pattern described by `masks` (length n) with `other` (Allison-Dix / Hyyro)."""
    full = (1 << n) - 1
    s = full
    for tok in other:
        m = masks.get(tok)
        if m:
            u = s & m
            s = ((s + u) | (s - u)) & full
    return n - s.bit_count() if hasattr(s, "bit_count") else n - bin(s).count("1")


def score_tokens(target: Sequence, prediction: Sequence) -> tuple[float, float, float]:
    """(precision, recall, fmeasure) exactly as rouge_score's `_score_lcs`."""
    if not target or not prediction:
        return 0.0, 0.0, 0.0
    lcs = lcs_length(target, prediction)
    return _prf(lcs, len(target), len(prediction))


def _prf(lcs: int, n_target: int, n_prediction: int) -> tuple[float, float, float]:
    precision = lcs / n_prediction
    recall = lcs / n_target
    f = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return precision, recall, f


def rouge_l(target: str, prediction: str) -> float:
    """ROUGE-L F-measure between two texts (symmetric)."""
    return score_tokens(tokenize(target), tokenize(prediction))[2]


@dataclass
class Match:
    """One pooled text and its ROUGE-L F against a query."""

    index: int
    score: float


class NoveltyIndex:
    """A growing pool of texts that finds, exactly, the pooled texts most ROUGE-L-similar to a query.

    `max_similarity`, `any_above` and `top_k` give the same answers as scoring the query against every
    pooled text with rouge_score (query as target, pooled text as prediction, as Self-Instruct does).
    """

    def __init__(self, texts: Iterable[str] = ()):
        self.texts: list[str] = []
        self._vocab: dict[str, int] = {}
        self._flat = np.zeros(1024, dtype=np.int32)  # all pooled token ids, concatenated
        self._flat_n = 0
        self._offsets = np.zeros(1024, dtype=np.int64)
        self._lengths = np.zeros(1024, dtype=np.int32)
        self._post_rows: dict[int, np.ndarray] = {}  # token id -> rows holding it (growable)
        self._post_cnts: dict[int, np.ndarray] = {}  # token id -> its count in that row
        self._post_n: dict[int, int] = {}
        for text in texts:
            self.add(text)

    def __len__(self) -> int:
        return len(self.texts)

    # ----- building ----------------------------------------------------------------------
    def _ids(self, tokens: list[str], grow: bool) -> list[int]:
        out = []
        for tok in tokens:
            tid = self._vocab.get(tok)
            if tid is None:
                if not grow:
                    tid = -2 - len(out)  # unseen token: matches nothing pooled, distinct per position
                else:
                    tid = self._vocab[tok] = len(self._vocab)
            out.append(tid)
        return out

    def add(self, text: str) -> int:
        """Append a text to the pool; returns its index."""
        ids = self._ids(tokenize(text), grow=True)
        row = len(self.texts)
        self.texts.append(text)
        if row >= len(self._lengths):
            self._offsets = _grow(self._offsets, row + 1)
            self._lengths = _grow(self._lengths, row + 1)
        if self._flat_n + len(ids) > len(self._flat):
            self._flat = _grow(self._flat, self._flat_n + len(ids))
        self._offsets[row] = self._flat_n
        self._lengths[row] = len(ids)
        self._flat[self._flat_n : self._flat_n + len(ids)] = ids
        self._flat_n += len(ids)
        for tid, cnt in Counter(ids).items():
            n = self._post_n.get(tid, 0)
            rows = self._post_rows.get(tid)
            if rows is None or n >= len(rows):
                self._post_rows[tid] = rows = _grow(
                    rows if rows is not None else np.zeros(4, np.int32), n + 1
                )
                self._post_cnts[tid] = _grow(self._post_cnts.get(tid, np.zeros(4, np.int32)), n + 1)
            rows[n] = row
            self._post_cnts[tid][n] = cnt
            self._post_n[tid] = n + 1
        return row

    def extend(self, texts: Iterable[str]) -> None:
        for text in texts:
            self.add(text)

    # ----- querying ----------------------------------------------------------------------
    def _bounds(self, ids: list[int]) -> np.ndarray:
        """Exact upper bound of F for every pooled text: 2 * overlap / (n + m)."""
        rows_n = len(self.texts)
        overlap = np.zeros(rows_n, dtype=np.int32)
        for tid, cnt in Counter(ids).items():
            n = self._post_n.get(tid, 0)
            if n:
                rows = self._post_rows[tid][:n]
                overlap[rows] += np.minimum(self._post_cnts[tid][:n], cnt)
        lengths = self._lengths[:rows_n]
        return 2.0 * overlap / np.maximum(len(ids) + lengths, 1)

    def _exact(self, ids: list[int], rows: np.ndarray) -> np.ndarray:
        """Exact ROUGE-L F (query as target) for the given pooled rows."""
        n = len(ids)
        out = np.zeros(len(rows), dtype=np.float64)
        if n == 0 or len(rows) == 0:
            return out
        lengths = self._lengths[rows].astype(np.int64)
        if n <= 64:
            lcs = self._lcs_lanes(ids, rows, lengths)
        else:
            masks: dict[int, int] = {}
            for i, tid in enumerate(ids):
                masks[tid] = masks.get(tid, 0) | (1 << i)
            lcs = np.array(
                [
                    _lcs_bits(
                        masks, n, self._flat[self._offsets[r] : self._offsets[r] + self._lengths[r]].tolist()
                    )
                    for r in rows
                ],
                dtype=np.int64,
            )
        # rouge_score's arithmetic, elementwise: p = lcs/m, r = lcs/n, f = 2*p*r/(p+r) (0 when lcs = 0)
        lcs_f = lcs.astype(np.float64)
        hit = lcs > 0
        p = np.divide(lcs_f, lengths, out=np.zeros_like(lcs_f), where=hit)
        r = lcs_f / n
        np.divide(2 * p * r, p + r, out=out, where=hit)
        return out

    def _lcs_lanes(self, ids: list[int], rows: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Bit-parallel LCS of the query (<= 64 tokens) with many rows at once, one uint64 lane per row."""
        n = len(ids)
        uniq = np.array(sorted(set(ids)), dtype=np.int64)
        umask = np.zeros(len(uniq), dtype=np.uint64)
        for i, tid in enumerate(ids):
            k = int(np.searchsorted(uniq, tid))
            umask[k] |= np.uint64(1) << np.uint64(i)
        full = np.uint64((1 << n) - 1) if n < 64 else np.uint64(0xFFFFFFFFFFFFFFFF)
        width = int(lengths.max()) if len(lengths) else 0
        s = np.full(len(rows), full, dtype=np.uint64)
        starts = self._offsets[rows]
        for j in range(width):
            live = lengths > j
            if not live.all():
                idx = np.nonzero(live)[0]
                toks = self._flat[starts[idx] + j].astype(np.int64)
            else:
                idx = None
                toks = self._flat[starts + j].astype(np.int64)
            pos = np.minimum(np.searchsorted(uniq, toks), len(uniq) - 1)
            m = np.where(uniq[pos] == toks, umask[pos], np.uint64(0))
            cur = s if idx is None else s[idx]
            u = cur & m
            with np.errstate(over="ignore"):
                new = ((cur + u) | (cur - u)) & full
            if idx is None:
                s = new
            else:
                s[idx] = new
        return n - np.bitwise_count(s).astype(np.int64)

    def scores(self, text: str) -> np.ndarray:
        """Exact F against every pooled text (no pruning; for checks and full statistics)."""
        ids = self._ids(tokenize(text), grow=False)
        return self._exact(ids, np.arange(len(self.texts)))

    def any_above(self, text: str, threshold: float) -> Match | None:
        """The first pooled text (by descending bound) whose F exceeds `threshold`, else None."""
        ids = self._ids(tokenize(text), grow=False)
        if not ids or not self.texts:
            return None
        bounds = self._bounds(ids)
        cand = np.nonzero(bounds > threshold - _EPS)[0]
        if len(cand) == 0:
            return None
        cand = cand[np.argsort(-bounds[cand], kind="stable")]
        start, size = 0, 64  # small first chunk (an early hit is common), then growing chunks
        while start < len(cand):
            chunk = cand[start : start + size]
            exact = self._exact(ids, chunk)
            hit = np.nonzero(exact > threshold)[0]
            if len(hit):
                return Match(int(chunk[hit[0]]), float(exact[hit[0]]))
            start, size = start + size, size * 4
        return None

    def top_k(self, text: str, k: int = 10) -> list[Match]:
        """The k most similar pooled texts, exact, best first (ties broken by pool order)."""
        ids = self._ids(tokenize(text), grow=False)
        if not self.texts or k <= 0:
            return []
        bounds = self._bounds(ids)
        order = np.argsort(-bounds, kind="stable")
        neg_sorted = -bounds[order]  # ascending
        best: list[tuple[float, int]] = []
        start, size = 0, max(64, 4 * k)
        while start < len(order):
            end = start + size
            if len(best) >= k:  # only texts whose bound can still reach the k-th best score
                end = min(end, int(np.searchsorted(neg_sorted, -(best[k - 1][0] - _EPS), side="right")))
                if end <= start:
                    break
            chunk = order[start:end]
            exact = self._exact(ids, chunk)
            best.extend(zip(exact.tolist(), chunk.tolist()))
            best.sort(key=lambda t: (-t[0], t[1]))
            del best[k:]
            start, size = end, size * 4
        return [Match(int(i), float(s)) for s, i in best]

    def max_similarity(self, text: str) -> Match | None:
        """The most similar pooled text, exact (None for an empty pool)."""
        top = self.top_k(text, 1)
        return top[0] if top else None

    def is_novel(self, text: str, threshold: float = 0.7) -> bool:
        """True when no pooled text has ROUGE-L F above `threshold` (Self-Instruct keeps exactly 0.7)."""
        return self.any_above(text, threshold) is None


def _grow(arr: np.ndarray, need: int) -> np.ndarray:
    size = max(len(arr), 4)
    while size < need:
        size *= 2
    if size == len(arr):
        return arr
    out = np.zeros(size, dtype=arr.dtype)
    out[: len(arr)] = arr
    return out
