"""llama.cpp's JSON Schema constraint: the schema as a GBNF grammar (llama-cpp-python's converter, after
spelling bounded integers as enums), one grammar sampler per sequence, and choosing a token under it."""

from __future__ import annotations

import ctypes
import json
from typing import Any

import numpy as np

from ..types import GenParams, ModelCallError
from .decoding import choose_one

_TOKEN_DATA = np.dtype([("id", np.intc), ("logit", np.single), ("p", np.single)], align=True)


class GrammarSampler:
    """Grammars of one llama.cpp vocabulary: converted once per schema, masked on a reused buffer."""

    def __init__(self, ll: Any, vocab: Any, n_vocab: int):
        self._ll, self._vocab, self.n_vocab = ll, vocab, n_vocab
        self._grammars: dict[str, str] = {}
        self._candidates = np.zeros(n_vocab, dtype=_TOKEN_DATA)
        self._candidates["id"] = np.arange(n_vocab, dtype=np.intc)
        self._cand_array = ll.llama_token_data_array(
            data=self._candidates.ctypes.data_as(ll.llama_token_data_p), size=n_vocab, selected=-1, sorted=False
        )

    def text(self, schema: dict) -> str:
        """The GBNF grammar of `schema` (cached per schema)."""
        key = json.dumps(schema, sort_keys=True)
        text = self._grammars.get(key)
        if text is None:
            from llama_cpp.llama_grammar import json_schema_to_gbnf

            try:
                text = json_schema_to_gbnf(json.dumps(_bounded_integers_as_enums(schema)))
            except Exception as exc:  # the converter names what it cannot express
                raise ModelCallError(f"json_schema cannot be turned into a grammar: {exc}", retryable=False) from exc
            self._grammars[key] = text
        return text

    def sampler(self, grammar: str) -> Any:
        """A fresh grammar sampler (llama_sampler pointer) for one sequence; the caller frees it."""
        sampler = self._ll.llama_sampler_init_grammar(self._vocab, grammar.encode(), b"root")
        if not sampler:
            raise ModelCallError("llama.cpp rejected the grammar built from json_schema", retryable=False)
        return sampler

    def choose(self, grammar: Any, scores: np.ndarray, p: GenParams, rng: np.random.Generator | None) -> int:
        """`decoding.choose_one`, under `grammar` when there is one (it then accepts the token).
        A grammar masks what it forbids first; without top-p, a token drawn unmasked that the grammar
        allows is kept (the same distribution: accepting an allowed draw and redrawing from the mask
        otherwise gives p(t)/Z), so the full-vocabulary mask is only built when that draw is refused."""
        if grammar is None:
            return choose_one(scores, p, rng)
        tok = -1
        if p.top_p >= 1.0:  # a draw the grammar allows is a draw from the masked distribution
            tok = choose_one(scores, p, rng)
            if not self._allowed(grammar, tok):
                tok = -1
        if tok < 0:
            tok = choose_one(self._masked(grammar, scores), p, rng)
        self._ll.llama_sampler_accept(grammar, tok)
        return tok

    def _allowed(self, grammar: Any, tok: int) -> bool:
        one = np.zeros(1, dtype=_TOKEN_DATA)
        one["id"], one["logit"] = tok, 1.0
        arr = self._ll.llama_token_data_array(
            data=one.ctypes.data_as(self._ll.llama_token_data_p), size=1, selected=-1, sorted=False
        )
        self._ll.llama_sampler_apply(grammar, ctypes.byref(arr))
        return bool(np.isfinite(one["logit"][0]))

    def _masked(self, grammar: Any, scores: np.ndarray) -> np.ndarray:
        cand = self._candidates
        cand["logit"] = scores
        cand["p"] = 0.0
        self._cand_array.size, self._cand_array.selected, self._cand_array.sorted = self.n_vocab, -1, False
        self._ll.llama_sampler_apply(grammar, ctypes.byref(self._cand_array))
        order = cand["id"]
        masked = np.full(self.n_vocab, -np.inf, dtype=np.float32)
        n = self._cand_array.size
        masked[order[:n]] = cand["logit"][:n]
        if not np.isfinite(masked).any():
            raise RuntimeError("the grammar allows no token here")
        cand["id"] = np.arange(self.n_vocab, dtype=np.intc)  # the sampler may have reordered them
        return masked


def _bounded_integers_as_enums(schema: Any, limit: int = 1000) -> Any:
    """`schema` with every integer bounded on both sides (at most `limit` values) spelled as an enum:
    llama-cpp-python's converter ignores minimum/maximum, and a score scale is exactly such a range."""
    if isinstance(schema, list):
        return [_bounded_integers_as_enums(s, limit) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _bounded_integers_as_enums(v, limit) for k, v in schema.items()}
    if out.get("type") == "integer" and "enum" not in out:
        lo = out.get("minimum", out["exclusiveMinimum"] + 1 if "exclusiveMinimum" in out else None)
        hi = out.get("maximum", out["exclusiveMaximum"] - 1 if "exclusiveMaximum" in out else None)
        if isinstance(lo, int) and isinstance(hi, int) and 0 <= hi - lo < limit:
            for key in ("type", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
                out.pop(key, None)
            out["enum"] = list(range(lo, hi + 1))
    return out
