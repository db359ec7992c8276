"""Token ids of score choices ("1".."6", "A"/"B") as a model writes them right after its prompt.

Encoding a choice on its own and taking the first id is wrong on SentencePiece tokenizers (LLaMA,
Mistral): "1" encodes as ["▁", "1"], so every choice gets the id of "▁". Here each choice is encoded
after the real prompt text, the tokens all choices share are split off as context (the "▁", or a
prompt token that merges with the choice), and the first token where the choices differ is the
score token. The ids must be distinct, or the choices cannot be scored from one next-token
distribution and a clear error says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ScoreTokens:
    """`context_ids`: the prompt's tokens plus any tokens every choice starts with (read the next-token
    distribution after them); `ids`: one distinct token id per choice, in the choices' order."""

    context_ids: list[int]
    ids: list[int]


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False).input_ids) if text else []


def score_token_ids(tokenizer: Any, choices: Sequence[str], context: str = "") -> ScoreTokens:
    """Where the choices part ways after `context` (the prompt text exactly as the model sees it,
    chat template included; "" for choices at the start of a text). Raises ValueError naming the
    choices when two of them begin with the same token there (e.g. "1" and "10" on a tokenizer
    that splits digits) or when a choice adds no token."""
    choices = list(choices)
    if not choices:
        raise ValueError("no score choices given")
    fulls = [_encode(tokenizer, context + c) for c in choices]
    if len(fulls) == 1:  # one choice: it begins where its encoding leaves the context's
        base = _encode(tokenizer, context)
        shared = _common_prefix([base, fulls[0]])
    else:
        shared = _common_prefix(fulls)
    ids, missing = [], []
    for choice, full in zip(choices, fulls):
        if len(full) <= len(shared):
            missing.append(choice)
        else:
            ids.append(full[len(shared)])
    if missing:
        raise ValueError(
            f"score choices {missing} add no token of their own after the prompt: "
            f"they cannot be told apart from {choices} by one next-token distribution"
        )
    if len(set(ids)) != len(ids):
        texts = [tokenizer.convert_ids_to_tokens(i) for i in ids]
        raise ValueError(
            f"score choices {choices} do not begin with distinct tokens after the prompt "
            f"(first differing tokens {texts}): their probabilities cannot be read from one position"
        )
    return ScoreTokens(list(shared), ids)


def _common_prefix(seqs: list[list[int]]) -> list[int]:
    first = seqs[0]
    n = min(len(s) for s in seqs)
    k = 0
    while k < n and all(s[k] == first[k] for s in seqs):
        k += 1
    return first[:k]
