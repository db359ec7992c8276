"""One local GGUF model behind two engines: llama.cpp generates, transformers scores.

Each engine loads on first use, and only through the named methods below, so a protocol check
(`isinstance(backend, EmbeddingBackend)`) or an identity read never loads a model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..local_files import generation_gguf
from ..types import (
    Backend,
    Completion,
    CompletionBackend,
    GenParams,
    ScoringBackend,
    SpanScore,
    TokenCountingBackend,
)
from .specs import local_model_id, parse_local_spec
from .transformers import LocalBackend, load_local_backend


class SplitLocalBackend(Backend, CompletionBackend, ScoringBackend, TokenCountingBackend):
    """llama.cpp generates (chat, raw completion, grammar-constrained JSON, token counts); transformers
    scores (span log-probs, the full next-token distribution, hidden states), where exact
    full-vocabulary logits are needed (docs/DEVELOPING.md)."""

    kind = "local"
    supports_n = False
    supports_json_schema = True
    supports_penalties = True

    def __init__(self, spec: str, scorer_options: dict[str, Any], generator_options: dict[str, Any]):
        self.spec = spec
        self._scorer_options = scorer_options
        self._generator_options = generator_options
        self._scorer: LocalBackend | None = None
        self._generator: Any = None
        self.model_id = local_model_id(spec, scorer_options.get("dtype") or "float32")

    @property
    def generator(self) -> Any:
        """The llama.cpp engine (`LlamaCppBackend`), loaded on first use."""
        if self._generator is None:
            from .llamacpp import load_llamacpp_backend

            source, _ = parse_local_spec(self.spec, convert=False)
            self._generator = load_llamacpp_backend(generation_gguf(source), **self._generator_options)
        return self._generator

    @property
    def scorer(self) -> LocalBackend:
        """The transformers engine, loaded on first use."""
        if self._scorer is None:
            self._scorer = load_local_backend(self.spec, **self._scorer_options)
        return self._scorer

    # ----- generation: llama.cpp ------------------------------------------------------------------
    async def chat(self, messages: list[dict], params: GenParams, n: int = 1) -> list[Completion]:
        return await self.generator.chat(messages, params, n)

    async def complete(self, prompt: str, params: GenParams, n: int = 1) -> list[Completion]:
        return await self.generator.complete(prompt, params, n)

    def count_tokens(self, text: str) -> int:
        """Tokens in `text` (llama.cpp's tokenizer of the same GGUF: no transformers load for chunking)."""
        return len(self.generator.tokenize(text))

    # ----- scoring: transformers ------------------------------------------------------------------
    def span_scores(self, pairs: Any, **options: Any) -> list[SpanScore]:
        return self.scorer.span_scores(pairs, **options)

    def choice_logprobs(self, messages: list[dict], choices: Sequence[str]) -> list[float]:
        return self.scorer.choice_logprobs(messages, choices)

    def next_token_logprobs(self, prompt: str, choices: Sequence[str], special_tokens: bool = False) -> list[float]:
        return self.scorer.next_token_logprobs(prompt, choices, special_tokens)

    def hidden_states(self, texts: list[str], pooling: str = "mean", **options: Any) -> np.ndarray:
        return self.scorer.hidden_states(texts, pooling, **options)

    def span_ids(self, prompt: str, answer: str, chat: bool = False) -> tuple[list[int], list[int]]:
        return self.scorer.span_ids(prompt, answer, chat)

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        """The chat-templated prompt as the scorer tokenizes it (scores line up with its ids)."""
        return self.scorer.prompt_ids(messages)

    def raw_prompt_ids(self, prompt: str) -> list[int]:
        return self.scorer.raw_prompt_ids(prompt)

    def bos_prefix(self, prompt: str) -> list[int]:
        return self.scorer.bos_prefix(prompt)

    @property
    def tokenizer(self) -> Any:
        """The scorer's transformers tokenizer."""
        return self.scorer.tokenizer

    @property
    def device(self) -> str:
        return self.scorer.device

    async def aclose(self) -> None:
        """Both engines are shared by the process; nothing per caller to release."""
