"""Token log-probabilities at the price of what is read.

A judge asks for the top 20 alternatives at every token of a reply but reads them at one or two
positions (the score token). So the alternatives are parsed only where they are read: a reply's
tokens come with `LazyTop`, which turns a token's raw alternatives (the server's JSON objects)
into (token, logprob) pairs on first use. And a request that says which positions its reader uses
(`GenParams.logprobs_at`) is cached with the alternatives at those positions only: every token and
its logprob is kept (readers scan them to find a position), the alternatives elsewhere are not.

`logprobs_at="labels"`: the positions a score or verdict reader can use, as judge/parsing.py reads
them: the first token that is not blank, and every token that holds a digit or is a verdict label
(A, B, tie). The request sent is unchanged; the policy is part of the cache key only when it is not
the default "all" (so every existing key stays valid, and an entry kept for "labels" never answers
a reader that wants every position).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

KEEP_ALL = "all"
KEEP_LABELS = "labels"
POLICIES = (KEEP_ALL, KEEP_LABELS)
VERDICT_LABELS = frozenset({"A", "B", "C", "tie", "Tie"})


class LazyTop(Sequence[tuple[str, float]]):
    """One token's top alternatives as (token, logprob) pairs, converted from the server's objects
    (`{"token": ..., "logprob": ..., "bytes": ...}`) the first time they are read."""

    __slots__ = ("_raw", "_pairs")

    def __init__(self, raw: list[dict[str, Any]] | None):
        self._raw = raw or []
        self._pairs: list[tuple[str, float]] | None = None

    def _read(self) -> list[tuple[str, float]]:
        if self._pairs is None:
            self._pairs = [(a["token"], float(a["logprob"])) for a in self._raw]
            self._raw = []
        return self._pairs

    def __len__(self) -> int:
        return len(self._pairs) if self._pairs is not None else len(self._raw)

    def __getitem__(self, i: Any) -> Any:
        return self._read()[i]

    def __iter__(self) -> Iterator[tuple[str, float]]:
        return iter(self._read())

    def __eq__(self, other: object) -> bool:
        return list(self) == list(other) if isinstance(other, Sequence) else NotImplemented

    def __repr__(self) -> str:
        return f"LazyTop({self._read()!r})"


def _label(token: str) -> str:
    return token.replace("▁", " ").replace("Ġ", " ").strip()


def label_positions(tokens: Sequence[str]) -> set[int]:
    """The positions a score or verdict reader can use (see the module docstring)."""
    keep: set[int] = set()
    first = True
    for i, token in enumerate(tokens):
        label = _label(token)
        if not label:
            continue
        if first:
            keep.add(i)
            first = False
        if label in VERDICT_LABELS or any(ch.isdigit() for ch in label):
            keep.add(i)
    return keep


def check_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise ValueError(f"logprobs_at must be one of {', '.join(POLICIES)}, not {policy!r}")
    return policy
