"""Plain data types shared by every model backend: requests, completions, usage."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypedDict, runtime_checkable

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class GenParams:
    """Generation options (names follow the OpenAI chat API and the `llm` CLI)."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int | None = None
    logprobs: bool = False
    top_logprobs: int = 0
    json_schema: dict | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    # Where the reader uses the top alternatives ("all", or "labels": score and verdict tokens, see
    # models/logprobs.py): never sent; the cache keeps alternatives only there (part of the key).
    logprobs_at: str = "all"

    def canonical(self) -> dict[str, Any]:
        """Stable dict form used in cache keys (shallow: callers serialise it at once). Options added
        after the first release are left out at their defaults, so existing cache keys stay valid."""
        data = {name: getattr(self, name) for name in _GEN_FIELDS}
        data["stop"] = list(self.stop)
        for name in _LATER_FIELDS:
            if data[name] == _DEFAULTS[name]:
                del data[name]
        return data

    def replace(self, **changes: Any) -> GenParams:
        stop = changes.get("stop")
        if isinstance(stop, (list, str)):
            changes["stop"] = (stop,) if isinstance(stop, str) else tuple(stop)
        return dataclasses.replace(self, **changes)

    @classmethod
    def of(cls, params: GenParams | None = None, options: GenOptions | None = None) -> GenParams:
        """The one GenParams of a call, built at the facade's entry: `params` (or the defaults) with the
        keyword `options` over it. An unknown option name is a TypeError, as for any keyword."""
        if not options:
            return params if params is not None else _DEFAULT_PARAMS
        if params is None:  # the common case, a method's keywords: one object per distinct set, reused
            try:
                return _from_options(tuple((name, type(value), value) for name, value in options.items()))
            except TypeError:  # an unhashable value (a stop list, a schema dict): built anew
                pass
        return (params if params is not None else _DEFAULT_PARAMS).replace(**options)

    def for_sample(self, index: int) -> GenParams:
        """The options of sample `index` of a request: seed, seed+1, ... (the one sampling-seed rule,
        shared by every backend and the cache key of each sample)."""
        return self if index == 0 or self.seed is None else dataclasses.replace(self, seed=self.seed + index)


class GenOptions(TypedDict, total=False):
    """`GenParams`' fields as keyword options (`LLM.achat(msgs, max_tokens=8)`): typed at every call
    site (`**options: Unpack[GenOptions]`), turned into one `GenParams` at the facade's entry."""

    temperature: float
    top_p: float
    max_tokens: int
    stop: tuple[str, ...] | list[str] | str
    seed: int | None
    logprobs: bool
    top_logprobs: int
    json_schema: dict | None
    presence_penalty: float
    frequency_penalty: float
    logprobs_at: str


_DEFAULT_PARAMS = GenParams()


@functools.lru_cache(maxsize=4096)
def _from_options(items: tuple[tuple[str, type, Any], ...]) -> GenParams:
    """`GenParams.of` for hashable keyword values (keyed by their types too: 0 and 0.0 differ in cache keys)."""
    return _DEFAULT_PARAMS.replace(**{name: value for name, _, value in items})


def to_messages(messages: list[dict] | str, system: str | None = None) -> list[dict]:
    """A chat request: a bare string as one user message, `system` first where given."""
    msgs = [{"role": "user", "content": messages}] if isinstance(messages, str) else list(messages)
    if system:
        msgs = [{"role": "system", "content": system}, *msgs]
    return msgs
_GEN_FIELDS = tuple(f.name for f in dataclasses.fields(GenParams))
_LATER_FIELDS = ("presence_penalty", "frequency_penalty", "logprobs_at")
PENALTIES = ("presence_penalty", "frequency_penalty")  # OpenAI's definitions; see `apply_penalties`
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(GenParams)}


@dataclass
class TokenLogprob:
    """One generated token with its log-probability and the top alternatives."""

    token: str
    logprob: float
    # The alternatives (a list, or a `logprobs.LazyTop` read on first use); None (and the logprob NaN)
    # where a cache entry kept for `GenParams.logprobs_at` left them out (a position its reader never uses).
    top: Sequence[tuple[str, float]] | None = field(default_factory=list)


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class Completion:
    """One sampled answer. `cached` is set by the cache layer, never stored."""

    text: str
    finish_reason: str = "stop"
    logprobs: list[TokenLogprob] | None = None
    usage: Usage = field(default_factory=Usage)
    cost: float = 0.0
    cached: bool = False

    def to_json(self, logprobs_at: str = "all") -> dict[str, Any]:
        """The cache's form. With `logprobs_at="labels"`, what its reader uses only: every token, and
        the logprob and alternatives at the positions `logprobs.label_positions` names
        (`{"tokens": [...], "at": [[i, logprob, alternatives], ...]}`)."""
        lps = self.logprobs
        stored: Any = None
        if lps is not None and logprobs_at != "all":
            from .logprobs import label_positions

            tokens = [t.token for t in lps]
            at = sorted(label_positions(tokens))
            stored = {"tokens": tokens, "at": [[i, lps[i].logprob, None if lps[i].top is None else list(lps[i].top)]
                                               for i in at]}  # fmt: skip
        elif lps is not None:  # (token, logprob) pairs: JSON arrays
            stored = [[t.token, t.logprob, None if t.top is None else list(t.top)] for t in lps]
        return {
            "text": self.text,
            "finish_reason": self.finish_reason,
            "logprobs": stored,
            "usage": [self.usage.prompt_tokens, self.usage.completion_tokens],
            "cost": self.cost,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], cached: bool = False) -> Completion:
        lps = data.get("logprobs")
        logprobs: list[TokenLogprob] | None = None
        if isinstance(lps, dict):  # kept for a reader of some positions: the others have no figures
            logprobs = [TokenLogprob(t, math.nan, None) for t in lps["tokens"]]
            for i, lp, top in lps["at"]:
                logprobs[i] = TokenLogprob(logprobs[i].token, lp, None if top is None else [(a, b) for a, b in top])
        elif lps is not None:
            logprobs = [TokenLogprob(t, lp, None if top is None else [(a, b) for a, b in top]) for t, lp, top in lps]
        return cls(
            text=data["text"],
            finish_reason=data.get("finish_reason", "stop"),
            logprobs=logprobs,
            usage=Usage(*data.get("usage", [0, 0])),
            cost=data.get("cost", 0.0),
            cached=cached,
        )

    def json(self) -> Any:
        """The text parsed as JSON (raises ValueError when it is not JSON)."""
        return json.loads(self.text)


@dataclass
class SpanScore:
    """Log-probabilities of the tokens of `answer` given `prompt` (local backends)."""

    token_logprobs: list[float]
    n_prompt_tokens: int

    @property
    def n_tokens(self) -> int:
        return len(self.token_logprobs)

    @property
    def mean_loss(self) -> float:
        """Mean negative log-likelihood per answer token (the HF causal-LM loss)."""
        if not self.token_logprobs:
            return float("nan")
        return -sum(self.token_logprobs) / len(self.token_logprobs)


class ModelCallError(RuntimeError):
    """A call that failed for good (after retries). `retryable` says whether a later run may succeed."""

    def __init__(self, message: str, *, retryable: bool = True, status: int | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.status = status


class TransientError(ModelCallError):
    """A failure worth retrying now: 429, 5xx, timeout, dropped connection, broken body."""

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None):
        super().__init__(message, retryable=True, status=status)
        self.retry_after = retry_after


@runtime_checkable
class ModelBackend(Protocol):
    """What every backend behind `LLM` has: an identity for cache keys and a way to release itself.

    `LLM` owns everything around a call (cache, budget, dry run, limits, retries, statistics); a
    backend only turns one request into an answer, raising `TransientError` for what is worth
    retrying and `ModelCallError` for what is not. What a backend can do it states by the protocols
    below that its class lists as bases; `LLM` checks those (isinstance), never probes with getattr.
    """

    model_id: str  # identity used in cache keys: weights digest or model name, never a credential

    async def aclose(self) -> None:
        """Release sessions and workers; safe to call twice."""
        ...


@runtime_checkable
class Backend(ModelBackend, Protocol):
    """A chat model behind `LLM` (HTTP server, litellm, transformers, llama.cpp): what the chat call can
    do is said by its flags."""

    supports_n: bool  # one request returns n samples
    supports_json_schema: bool  # honours GenParams.json_schema (grammar or response_format)
    supports_penalties: bool  # honours presence/frequency penalty (else LLM drops them, warns and counts)

    async def chat(self, messages: list[dict], params: GenParams, n: int = 1) -> list[Completion]:
        """`n` completions of a chat conversation."""
        ...


@runtime_checkable
class CompletionBackend(Protocol):
    """A backend that also takes a raw prompt with no chat template (`/v1/completions`, a local
    model's tokenizer without `apply_chat_template`): for released weights trained on raw formats."""

    async def complete(self, prompt: str, params: GenParams, n: int = 1) -> list[Completion]: ...


@runtime_checkable
class EmbeddingBackend(ModelBackend, Protocol):
    """A model that turns texts into vectors (`/v1/embeddings`, litellm, a local encoder, a causal
    LM's hidden states). `LLM.aembed` caches them per text and budgets, limits and retries the call."""

    async def embed(self, texts: list[str]) -> list[list[float]] | np.ndarray:
        """One vector per text, in order."""
        ...


@runtime_checkable
class ScoringBackend(Protocol):
    """An in-process model whose full next-token distribution and hidden states are readable."""

    def span_scores(self, pairs: list[tuple[str, str]], **options: Any) -> list[SpanScore]: ...

    def choice_logprobs(self, messages: list[dict], choices: Any) -> list[float]: ...

    def next_token_logprobs(self, prompt: str, choices: Any, special_tokens: bool = False) -> list[float]: ...


@runtime_checkable
class TokenCountingBackend(Protocol):
    """A model whose own tokenizer counts tokens here (chunking documents to a model's token budget)."""

    def count_tokens(self, text: str) -> int:
        """Tokens in `text` as the model reads it, special tokens left out."""
        ...


@runtime_checkable
class ClassifierBackend(ModelBackend, Protocol):
    """A sequence-classification model in this process (a reward model, a trained quality scorer):
    one logit per text or (text, text_pair). `LLM.aclassify` caches the logits per input."""

    def classify(self, inputs: list[tuple[str, str | None]]) -> list[float]:
        """The chosen logit of each input, in order (the caller's thread; may batch internally)."""
        ...
