"""Token log-probabilities at the price of what is read.

A judge asks for the top 20 alternatives at every token of a reply but reads them at one or two
positions (the score token). So the alternatives are parsed only where they are read: a reply's
tokens come with `LazyTop`, which turns a token's raw alternatives (the server's JSON objects)
into (token, logprob) pairs on first use. And a request that says which positions its reader uses
(`GenParams.logprobs_at`) is cached with the alternatives at those positions only: every token and
its logprob is kept (readers scan them to find a position), the alternatives elsewhere are not.

`logprobs_at="labels"`: the positions a score or verdict reader can use, as instructkit/shared/scores.py reads
them: the first token that is not blank, and every token that holds a digit or is a verdict label
(A, B, tie). The request sent is unchanged; the policy is part of the cache key only when it is not
the default "all" (so every existing key stays valid, and an entry kept for "labels" never answers
a reader that wants every position).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Sequence
from typing import Any

from .. import fastjson

KEEP_ALL = "all"
KEEP_LABELS = "labels"
POLICIES = (KEEP_ALL, KEEP_LABELS)
VERDICT_LABELS = frozenset({"A", "B", "C", "tie", "Tie"})


class LazyTop(Sequence[tuple[str, float]]):
    """One token's top alternatives as (token, logprob) pairs, converted from the server's objects
    (`{"token": ..., "logprob": ..., "bytes": ...}`), or parsed from their JSON text (`split_tops`),
    the first time they are read."""

    __slots__ = ("_raw", "_pairs")

    def __init__(self, raw: list[dict[str, Any]] | TopText | None):
        self._raw = raw or []
        self._pairs: list[tuple[str, float]] | None = None

    def _read(self) -> list[tuple[str, float]]:
        if self._pairs is None:
            raw = self._raw.parse() if isinstance(self._raw, TopText) else self._raw
            self._pairs = [(a["token"], float(a["logprob"])) for a in raw]
            self._raw = []
        return self._pairs

    def __len__(self) -> int:
        return len(self._read())

    def __getitem__(self, i: Any) -> Any:
        return self._read()[i]

    def __iter__(self) -> Iterator[tuple[str, float]]:
        return iter(self._read())

    def __eq__(self, other: object) -> bool:
        return list(self) == list(other) if isinstance(other, Sequence) else NotImplemented

    def __repr__(self) -> str:
        return f"LazyTop({self._read()!r})"


class TopText:
    """One token's `top_logprobs` array as JSON text cut from its body (`split_tops`). Should the cut
    not parse as a list (a body whose objects hold keys after `top_logprobs`), the whole body is
    parsed and the token's array taken from it: never a wrong value."""

    __slots__ = ("text", "body", "index")

    def __init__(self, text: bytes, body: bytes, index: int):
        self.text, self.body, self.index = text, body, index

    def parse(self) -> list[dict[str, Any]]:
        try:
            value = fastjson.loads(self.text, small_ints=True)
            if isinstance(value, list):
                return value
        except ValueError:
            pass
        whole = fastjson.loads(self.body, small_ints=True)
        tokens = [t for c in whole["choices"] for t in ((c.get("logprobs") or {}).get("content") or [])]
        return tokens[self.index].get("top_logprobs") or []


_TOP = re.compile(rb'"top_logprobs"\s*:\s*\[')
_BETWEEN = re.compile(rb"\s*\}\s*,\s*")  # from a token's top_logprobs array to the next token's object
_LAST_END = re.compile(rb"[\[}]\s*(\])\s*\}\s*\]")  # the last token's array, its object and the content list close


def split_tops(raw: bytes) -> tuple[bytes, list[bytes]] | None:
    """A chat-completions body with every token's `top_logprobs` array left empty, and those arrays'
    JSON text in order, so the body parses at the cost of its tokens and each array only where it is
    read (OpenAI's 20 alternatives a token are nine tenths of the bytes). None when the body is not
    of that shape (then it is parsed whole): `top_logprobs` last in each token's object. Each cut is
    found with byte searches (the next token's `"token"` key, which no string can hold unescaped,
    its `{`, the `]` before it) and checked: only `}` and `,` may lie between; the caller checks that
    the rest parses with one emptied array per token, and `TopText` that each cut is a list."""
    if b'"top_logprobs"' not in raw:
        return None
    starts = []
    at = raw.find(b'"top_logprobs"')
    while at >= 0:
        match = _TOP.match(raw, at)
        if match is None:
            return None
        starts.append(match.end() - 1)
        at = raw.find(b'"top_logprobs"', match.end())
    pieces: list[bytes] = []
    tops: list[bytes] = []
    pos = 0
    for k, start in enumerate(starts):
        if k + 1 < len(starts):
            key = raw.rfind(b'"token"', start, starts[k + 1])
            brace = raw.rfind(b"{", start, key)
            stop = raw.rfind(b"]", start, brace) + 1
            if key < 0 or brace < 0 or stop <= start or not _BETWEEN.fullmatch(raw, stop, brace):
                return None
        else:
            end = _LAST_END.search(raw, start)
            if end is None:
                return None
            stop = end.start(1) + 1
        top = raw[start:stop]
        pieces += (raw[pos:start], b"[]")
        tops.append(top)
        pos = stop
    pieces.append(raw[pos:])
    return b"".join(pieces), tops


@functools.lru_cache(maxsize=1 << 16)
def score_label(token: str) -> str:
    """A token as a score label (SentencePiece and byte-level space markers dropped); cached: every
    reply asks again for the same few tokens among its top alternatives. instructkit/shared/scores.py reads
    labels through this one function."""
    return token.replace("▁", " ").replace("Ġ", " ").strip()


@functools.lru_cache(maxsize=1 << 16)
def _kind(token: str) -> int:
    """0: blank (space markers only), 1: a word, 2: a score or verdict label (a digit, A / B / tie)."""
    label = score_label(token)
    if not label:
        return 0
    return 2 if label in VERDICT_LABELS or any(ch.isdigit() for ch in label) else 1


def label_positions(tokens: Sequence[str]) -> set[int]:
    """The positions a score or verdict reader can use (see the module docstring)."""
    kinds = [_kind(t) for t in tokens]
    keep = {i for i, k in enumerate(kinds) if k == 2}
    first = next((i for i, k in enumerate(kinds) if k), None)
    if first is not None:
        keep.add(first)
    return keep


def check_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise ValueError(f"logprobs_at must be one of {', '.join(POLICIES)}, not {policy!r}")
    return policy
