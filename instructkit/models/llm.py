"""`LLM`: the one interface every method calls, whatever the backend.

It adds to a backend what paid work needs, as one call chain that every operation (chat and
samples, raw completion, JSON, embeddings, choice log-probs, classifier logits) goes through:
the content-addressed cache (per sample index, per text) -> a cost ledger with a hard budget, or
the dry-run estimator -> retries with backoff that honour Retry-After -> per try, the RPM/TPM
limits, bounded concurrency and the provider's header limits -> the backend. An operation only
builds its cache keys and a `_Call` (what it sends, how it is priced and stood in for in a dry
run); each stage is written once. JSON-schema output adds parse-validate-repair on top of chat.

Every model of one run shares one `RunShared` (dry run, budget, rate limits, retry policy, batch
collector, statistics): a method that needs another model (a jury member) gets it from
`llm.derive(spec)`, never from a fresh `LLM(...)`.

A dry run walks every call: an uncached call is counted and answered by a placeholder completion
(`finish_reason="dry_run"`, text without any score or verdict, about as long as the estimated
reply), so a method goes on to its next call, stage, sample or member as in a real run; nothing
is cached or journaled. Estimates are calibrated per model from its earlier real calls
(`Calibration`); without any, a reply is counted at max_tokens (an upper bound).
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import dataclasses
import hashlib
import json
import math
import random
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from ..aio import run_sync
from ..credentials import environment_key, split_credentials
from .cache import ResponseCache, public_endpoint, request_key
from .config import LOCAL_OPTIONS, ModelConfig
from .limits import ProviderLimits, TokenBucket, estimate_tokens
from .logprobs import check_policy
from .pricing import cost_of, priced_name
from .providers import FAST, LITELLM, Route, litellm_reason, route
from .types import (
    PENALTIES,
    Backend,
    ClassifierBackend,
    Completion,
    CompletionBackend,
    EmbeddingBackend,
    GenParams,
    ModelBackend,
    ModelCallError,
    ScoringBackend,
    SpanScore,
    TokenCountingBackend,
    TransientError,
    Usage,
)

if TYPE_CHECKING:
    import numpy as np

# What a method may ask a model for, and the backend protocol that offers it (`LLM.supports`).
CAPABILITIES: dict[str, type] = {
    "chat": Backend,  # achat, asample, ajson (structured output over chat)
    "json_schema": Backend,  # constrained JSON (`supports_json_schema`)
    "complete": CompletionBackend,  # acomplete: raw text, no chat template
    "next_token_distribution": ScoringBackend,  # achoice_logprobs: the full next-token distribution
    "span_scores": ScoringBackend,  # span_scores / local_scorer: answer-token log-probs
    "count_tokens": TokenCountingBackend,  # count_tokens: the model's own tokenizer
    "embed": EmbeddingBackend,  # aembed
    "classify": ClassifierBackend,  # aclassify
}
LOCAL_CAPABILITIES = frozenset(CAPABILITIES) - {"embed", "classify"}  # a local chat model, known unloaded
IN_PROCESS_ONLY = frozenset({"next_token_distribution", "span_scores", "count_tokens"})  # no hosted API has them



# A request for at most this many tokens reads the next token's distribution by design (DEITA's scorer
# on a server): ending on the limit is its purpose, so it is neither counted as cut nor asked again.
SHORT_READ_TOKENS = 1


class BudgetExceeded(RuntimeError):
    """Raised before a call that would take spending past `max_cost`; the run stops cleanly."""


class DryRunSkip(RuntimeError):
    """Raised in place of an uncached call to skip its row (batch collect mode); the row is pending."""


DRY_RUN_FINISH = "dry_run"  # finish_reason of a dry run's placeholder completion
# The stage a call belongs to ("method:stage", set by RunContext.amap): dry-run estimates are
# calibrated per stage, since replies of one stage have similar lengths.
CALL_LABEL: contextvars.ContextVar[str] = contextvars.ContextVar("instructkit_call_label", default="")
# Set by the row runner to a one-item list per row; a dry-run placeholder marks it (the row was
# walked, not answered).
DRY_RUN_ROW: contextvars.ContextVar[list[bool] | None] = contextvars.ContextVar("instructkit_dry_row", default=None)


def is_placeholder(comp: Completion) -> bool:
    """True for a dry run's stand-in completion (never a model's answer)."""
    return comp.finish_reason == DRY_RUN_FINISH


def placeholder_text(tokens: int) -> str:
    """Filler of about `tokens` tokens by the 4-characters-a-token estimate, with no digit, score or
    verdict in it (parsers read it as no result), no apology and no stop words only (generators'
    filters let it through, so their later stages are walked)."""
    head = "[dry run placeholder]"
    words = max(0, (4 * max(tokens, 1) - len(head)) // len(" placeholder"))
    return head + " placeholder" * words


def _mark_dry_row() -> None:
    box = DRY_RUN_ROW.get()
    if box is not None:
        box[0] = True


@dataclass
class CallStats:
    calls: int = 0
    cache_hits: int = 0
    failures: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    estimated_calls: int = 0
    estimated_tokens: int = 0
    estimated_cost: float = 0.0
    # Calls sent without a penalty the backend cannot apply (warned once, never silent).
    dropped_presence_penalty: int = 0
    dropped_frequency_penalty: int = 0
    truncated: int = 0  # replies cut at max_tokens (finish_reason "length") that methods received
    length_retries: int = 0  # cut replies asked again with a larger max_tokens (retry_length)
    throttled: int = 0  # 429 replies
    limit_wait_s: float = 0.0  # wall time the provider's rate limits held requests back (not the first-reply probe)
    estimated_calibrated: int = 0  # estimated calls whose reply size came from earlier real calls

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class RunShared:
    """What every model of one run shares (`LLM.derive`): the dry-run switch, one cost budget, the
    rate limits, the retry policy, the batch collector and the call statistics."""

    dry_run: bool = False
    max_cost: float | None = None
    max_retries: int = 6
    retry_length: float = 0.0  # > 1: a reply cut at max_tokens is asked again with max_tokens x this
    rpm: TokenBucket | None = None
    tpm: TokenBucket | None = None
    stats: CallStats = field(default_factory=CallStats)
    reserved: float = 0.0  # estimated cost of calls in flight
    collector: Any = None  # batch mode (instructkit.run.batch): uncached chat requests go here
    members: dict[str, LLM] = field(default_factory=dict)  # derived models by spec
    dry_answers: dict[str, dict] = field(default_factory=dict)  # a dry run's placeholders by key, in memory only


T = TypeVar("T")
P = TypeVar("P")


class Shared(Generic[T]):
    """An `LLM` attribute that lives in the run's `RunShared` under the same name: reading or setting
    it on any model of the run reads or sets it for all of them (`LLM.derive`)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, objtype: type | None = None) -> Shared[T]: ...
    @overload
    def __get__(self, obj: LLM, objtype: type | None = None) -> T: ...
    def __get__(self, obj: LLM | None, objtype: type | None = None) -> T | Shared[T]:
        if obj is None:
            return self
        return getattr(obj.shared, self.name)

    def __set__(self, obj: LLM, value: T) -> None:
        setattr(obj.shared, self.name, value)


@dataclass
class Calibration:
    """What one model's real calls looked like, so a dry run estimates what a real run will count.

    Prompt tokens: the ratio of the tokens the backend counted to our 4-characters estimate (chat
    templates, tokenizers). Reply tokens: the mean per stage label and max_tokens, and per max_tokens
    over all stages. Kept beside the response cache (`notes/`), under a hash of the model's identity
    (never a key); a reply size with no figure to go by is estimated at max_tokens, an upper bound."""

    prompt_estimated: int = 0
    prompt_counted: int = 0
    replies: dict[str, list[int]] = field(default_factory=dict)  # "label|max_tokens" -> [samples, tokens]

    def add(self, other: Calibration) -> None:
        self.prompt_estimated += other.prompt_estimated
        self.prompt_counted += other.prompt_counted
        for k, (n, t) in other.replies.items():
            mine = self.replies.setdefault(k, [0, 0])
            mine[0] += n
            mine[1] += t

    def record(self, label: str, max_tokens: int, prompt_estimated: int, comps: list[Completion]) -> None:
        counted = sum(c.usage.prompt_tokens for c in comps)
        if counted > 0:
            self.prompt_estimated += prompt_estimated
            self.prompt_counted += counted
        for comp in comps:
            if comp.usage.completion_tokens <= 0 and comp.text:
                continue  # a backend that reports no usage teaches nothing
            for key in (f"{label}|{max_tokens}", f"|{max_tokens}"):
                entry = self.replies.setdefault(key, [0, 0])
                entry[0] += 1
                entry[1] += comp.usage.completion_tokens

    def prompt_tokens(self, estimated: int) -> int:
        if self.prompt_estimated <= 0:
            return estimated
        return round(estimated * self.prompt_counted / self.prompt_estimated)

    def reply_tokens(self, label: str, max_tokens: int) -> int | None:
        """Mean reply size of this stage at this max_tokens, else of any stage at it; None without data."""
        for key in (f"{label}|{max_tokens}", f"|{max_tokens}"):
            n, total = self.replies.get(key, (0, 0))
            if n > 0:
                return min(max_tokens, round(total / n))
        return None

    def to_json(self) -> dict[str, Any]:
        return {"prompt": [self.prompt_estimated, self.prompt_counted], "replies": self.replies}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Calibration:
        if not data:
            return cls()
        est, counted = data.get("prompt", [0, 0])
        return cls(int(est), int(counted), {k: [int(a), int(b)] for k, (a, b) in data.get("replies", {}).items()})


@dataclass
class ModelRef:
    """What a spec string resolved to."""

    family: str  # "openai-compatible" | "litellm" | "local"
    model: str
    api_base: str | None = None
    via: str = "http"  # for openai-compatible: "http" (fast path) or "litellm"
    options: dict[str, Any] = field(default_factory=dict)
    path: str = "local"  # what sends it: "local" | providers.FAST | providers.LITELLM
    why: str = "in process"  # why that path (`models check`, the run summary)
    route: Route | None = None  # a named hosted provider's (providers.py)


def parse_spec(spec: str, api_base: str | None = None, via: str | None = None) -> ModelRef:
    """Resolve a model spec: `local`, `hf:PATH`, `MODEL@URL`, `provider/model` (a named provider of
    providers.py on its fast path, else litellm)."""
    spec = spec.strip()
    if spec == "local" or spec.startswith("local:") or spec.startswith("hf:"):
        return ModelRef("local", spec)
    if "@http" in spec:
        spec, api_base = spec.split("@", 1)
        why = "MODEL@URL"
    else:
        why = "--api-base"
    if api_base:
        model = spec.removeprefix("openai/")
        fast = (via or "http") == "http"
        return ModelRef("openai-compatible", model, api_base.rstrip("/"), via or "http", path=FAST if fast else LITELLM,
                        why=f"{why}: OpenAI-compatible server" if fast else "--via litellm")  # fmt: skip
    found = route(spec, via)
    if found is None:
        return ModelRef("litellm", spec, None, "litellm", path=LITELLM, why=litellm_reason(spec))
    # The family stays "litellm" (a provider/model spec) on both paths, so cache keys do not depend on the path.
    return ModelRef("litellm", spec, found.api_base or None, "http" if found.path == FAST else "litellm",
                    path=found.path, why=found.why, route=found)  # fmt: skip


class LLM:
    """A model behind the cache, limits, retries and budget. Async methods plus a sync facade."""

    def __init__(
        self,
        spec: str | ModelConfig = "local",
        *,
        cache: ResponseCache | bool | None = None,
        backend: ModelBackend | None = None,
        shared: RunShared | None = None,
        **options: Any,
    ):
        """`LLM(ModelConfig(...))` or `LLM(spec, **options)` with the options' names (`ModelConfig`:
        api_base, api_key, concurrency, rpm, max_cost, dry_run, dtype, ...). `cache` may also be a
        `ResponseCache` to share; `backend` replaces the one the spec names; `shared` joins a run."""
        config = spec if isinstance(spec, ModelConfig) else ModelConfig(model=str(spec))
        if isinstance(cache, bool):
            options["cache"] = cache
        if options:
            try:
                config = config.replace(**options)
            except ValueError as exc:
                raise TypeError(f"LLM(): {exc}") from None
        if isinstance(cache, ResponseCache):
            self.cache = cache
            config = config.replace(cache=cache.enabled, cache_dir=str(cache.directory))
        else:
            self.cache = ResponseCache(config.cache_dir, enabled=config.cache)
        self._config = config
        self.ref = parse_spec(config.model, config.api_base, config.via)
        # A key inside the URL goes into the Authorization header, never into a log or a file.
        self.ref.api_base, url_key = split_credentials(self.ref.api_base)
        if self.ref.route is not None and self.ref.route.api_base:
            # a named provider's URL (from OPENAI_BASE_URL & co.) is what its backend calls: stripped too
            route_base, route_key = split_credentials(self.ref.route.api_base)
            self.ref.route = dataclasses.replace(self.ref.route, api_base=route_base)
            url_key = url_key or route_key
        self.spec = config.model
        self.concurrency = config.concurrency
        if shared is None:
            shared = RunShared(dry_run=config.dry_run, max_cost=config.max_cost, max_retries=config.max_retries,
                               retry_length=config.retry_length, rpm=TokenBucket(config.rpm) if config.rpm else None,
                               tpm=TokenBucket(config.tpm) if config.tpm else None)
        self.shared = shared
        self._semaphores: dict[int, asyncio.Semaphore] = {}
        # The provider's own limits, read from its response headers (hosted and served models).
        self._provider_limits = ProviderLimits() if self.ref.family != "local" else None
        self._inflight: dict[str, asyncio.Future] = {}
        self._api_key = config.api_key or url_key
        self._timeout = config.timeout
        self._via = config.via
        self._backend_options = config.local_options()
        self._backend = backend
        self._custom_backend = backend is not None
        self._identity: dict[str, Any] | None = None
        self._calibration: Calibration | None = None  # stored figures, read on first need
        self._learned = Calibration()  # this process's real calls, not yet stored

    @property
    def config(self) -> ModelConfig:
        """What rebuilds this model in another process (`LLM(llm.config)`, Ray actors): every option
        as this run has it now, the cache's directory, no key (actors read theirs from the environment)
        and no custom backend."""
        return self._config.replace(
            api_key=None, concurrency=self.concurrency, cache=self.cache.enabled, cache_dir=str(self.cache.directory),
            dry_run=self.dry_run, max_cost=self.max_cost, max_retries=self.max_retries, retry_length=self.retry_length,
        )

    # ----- what the run's models share (RunShared) -------------------------------------------
    dry_run: Shared[bool] = Shared()
    max_cost: Shared[float | None] = Shared()
    max_retries: Shared[int] = Shared()
    retry_length: Shared[float] = Shared()
    stats: Shared[CallStats] = Shared()
    collector: Shared[Any] = Shared()

    def derive(self, spec: str, **backend_options: Any) -> LLM:
        """The model `spec` for this same run: its own endpoint, backend and cache identity, but this
        run's dry run, cost budget, rate limits, retry policy, batch collector and statistics (so a
        jury's members are estimated, budgeted and counted with the run). `spec` equal to this
        model's gives this model; the same spec twice gives the same object."""
        if spec == self.spec and not backend_options:
            return self
        key = json.dumps([spec, backend_options], sort_keys=True, default=str)
        member = self.shared.members.get(key)
        if member is None:
            ref = parse_spec(spec)
            same_endpoint = (ref.family == self.ref.family and ref.api_base == self.ref.api_base
                             and (ref.family != "litellm" or ref.model.partition("/")[0] == self.ref.model.partition("/")[0]))
            local = dict.fromkeys(LOCAL_OPTIONS)  # another local model: dtype and device carry over
            if ref.family == "local" and self.is_local:
                local.update(self._backend_options)
            config = self._config.replace(
                model=spec, api_base=None, api_key=self._api_key if same_endpoint else None,
                via=self._via if ref.family == "openai-compatible" or ref.route else None, concurrency=self.concurrency,
                **{**local, **backend_options},
            )  # fmt: skip
            member = LLM(config, cache=self.cache, shared=self.shared)
            self.shared.members[key] = member
        return member

    # ----- identity and backend -------------------------------------------------------------
    @property
    def backend(self) -> ModelBackend:
        """The backend, built on first use: what it can do beyond chat it states by the protocols of
        `models/types.py` it implements (`CompletionBackend`, `EmbeddingBackend`, `ScoringBackend`,
        `ClassifierBackend`), which the operations check."""
        if self._backend is None:
            ref = self.ref
            if ref.family == "local":
                from .local import load_local_model

                self._backend = load_local_model(ref.model, **self._backend_options)
            elif ref.route is not None:
                from .hosted import named_backend

                self._backend = named_backend(ref.model, ref.route, self._api_key, self._timeout)
            elif ref.family == "openai-compatible" and ref.via == "http":
                from .http_openai import OpenAICompatibleBackend

                self._backend = OpenAICompatibleBackend(ref.model, ref.api_base, self._server_key(), self._timeout)
            else:
                from .litellm_backend import LiteLLMBackend

                key = self._api_key
                if ref.family == "openai-compatible":
                    # Self-hosted servers need no key, but the OpenAI SDK under litellm insists on one.
                    key = self._server_key() or "EMPTY"
                model = f"openai/{ref.model}" if ref.family == "openai-compatible" else ref.model
                self._backend = LiteLLMBackend(model, ref.api_base, key, self._timeout)
        return self._backend

    def _server_key(self) -> str | None:
        return self._api_key or environment_key(self.ref.api_base)  # a provider's key only to its own host

    @property
    def identity(self) -> dict[str, Any]:
        """What identifies this model in cache keys: never a key or a credential (computed once)."""
        if self._identity is None:
            ref = self.ref
            if ref.family == "local" and self._custom_backend:
                self._identity = {"family": "local", "model": self._backend.model_id}
            elif ref.family == "local":  # without loading the model (a dry run never needs it)
                from .local import local_identity

                opts = self._backend_options
                self._identity = local_identity(ref.model, opts.get("dtype") or "float32", opts.get("engine", "auto"))
            else:  # a named provider at its documented URL: no endpoint (as before it had a fast path)
                endpoint = None if ref.route and ref.route.default_base else public_endpoint(ref.api_base)
                self._identity = {"family": ref.family, "model": ref.model, "endpoint": endpoint}
        return self._identity

    @property
    def is_local(self) -> bool:
        return self.ref.family == "local"

    @property
    def cost_model(self) -> str:
        """The name to price calls by ("": free), as `pricing.priced_name` says."""
        return priced_name(self.ref.family, self.ref.model)

    def _able(self, protocol: type[P], cannot: str) -> P:
        """The backend as `protocol` (a capability of `models/types.py`), else a final ModelCallError
        saying what it cannot do."""
        backend = self.backend
        if not isinstance(backend, protocol):
            raise ModelCallError(f"{self.spec} {cannot}", retryable=False)
        return backend

    @property
    def supports_json_schema(self) -> bool:
        backend = self.backend
        return isinstance(backend, Backend) and backend.supports_json_schema

    def _semaphore(self) -> asyncio.Semaphore:
        loop_id = id(asyncio.get_running_loop())
        sem = self._semaphores.get(loop_id)
        if sem is None:
            sem = self._semaphores[loop_id] = asyncio.Semaphore(self.concurrency)
        return sem

    # ----- operations: what each sends, and how it is cached and priced ----------------------
    # Every operation below only builds its cache keys and its `_Call`s; the stages they pass
    # through (`_lookup`/`_fill` -> `_run` -> `_retrying` -> `_attempt` -> backend) are written once,
    # further down.
    def chat_key(self, messages: list[dict], params: GenParams, sample_index: int = 0) -> str:
        return self._request_key("chat", messages, params, sample_index)

    def complete_key(self, prompt: str, params: GenParams, sample_index: int = 0) -> str:
        return self._request_key("complete", prompt, params, sample_index)

    def _request_key(self, op: str, request: list[dict] | str, params: GenParams, sample_index: int) -> str:
        body = {"messages": request} if op == "chat" else {"prompt": request}
        return request_key({"op": op, **self.identity, **body, "params": params.canonical(), "i": sample_index})

    async def asample(
        self, messages: list[dict] | str, n: int = 1, *, system: str | None = None, **params: Any
    ) -> list[Completion]:
        """`n` samples for one prompt; samples already cached (by index) are not paid again."""
        return await self._sample("chat", to_messages(messages, system), n, params)

    async def achat(self, messages: list[dict] | str, *, system: str | None = None, **params: Any) -> Completion:
        return (await self.asample(messages, 1, system=system, **params))[0]

    async def acomplete(self, prompt: str, **params: Any) -> Completion:
        """A raw-text completion: `prompt` reaches the model as it is, with no chat template
        (`/v1/completions`; a local model's own tokenizer, BOS as it adds one), for released weights
        trained on raw formats (DEITA's scorers, Bonito). Cached under its own op, and budgeted,
        limited, retried and dry-run like chat. Raw completions are never sent through a batch API."""
        if not isinstance(prompt, str):
            raise TypeError(f"acomplete takes the raw prompt text, not {type(prompt).__name__}")
        if params.get("json_schema") is not None:
            raise ValueError("json_schema is not supported for raw completions; use achat or ajson")
        return (await self._sample("complete", prompt, 1, params))[0]

    async def _sample(self, op: str, request: list[dict] | str, n: int, params: dict[str, Any]) -> list[Completion]:
        """`n` samples of one request. Replies cut at max_tokens are counted (`stats.truncated`); with
        `retry_length` > 1 each is asked again once with max_tokens times that factor (a request of
        its own, cached as such)."""
        results = await self._cached_samples(op, request, n, params)
        limit = params.get("max_tokens", GenParams.max_tokens)
        if limit <= SHORT_READ_TOKENS:  # a score-token read: reaching the limit is the point
            return results
        cut = [i for i, c in enumerate(results) if c.finish_reason == "length"]
        if cut and self.retry_length > 1:
            longer = {**params, "max_tokens": math.ceil(limit * self.retry_length)}
            again = await self._cached_samples(op, request, max(cut) + 1, longer)  # samples by index
            self.stats.length_retries += len(cut)
            for i in cut:
                results[i] = again[i]
        self.stats.truncated += sum(c.finish_reason == "length" for c in results)
        return results

    async def _cached_samples(
        self, op: str, request: list[dict] | str, n: int, params: dict[str, Any]
    ) -> list[Completion]:
        """`n` samples of one request through the cache (one key per sample index), with batch
        collection (chat only) between the lookup and the calls."""
        gen = GenParams().replace(**params) if params else GenParams()
        if gen.logprobs_at != "all":
            check_policy(gen.logprobs_at)
        keys = [self._request_key(op, request, gen, i) for i in range(n)]
        results, missing = self._lookup(keys, _completion_of)
        collector = self.collector if op == "chat" else None
        if collector is not None:  # answers the batch paid for in this run count as calls, not hits
            self.stats.cache_hits -= collector.fresh(keys, results)
        if not missing:
            return results
        if collector is not None and not self.dry_run:
            collector.collect(self, request, gen, [(i, keys[i]) for i in missing])  # raises
        encode = Completion.to_json if gen.logprobs_at == "all" else lambda c: c.to_json(gen.logprobs_at)
        return await self._fill(keys, results, missing, lambda todo: self._call_missing(op, request, gen, todo),
                                encode, _completion_of, dry=self.dry_run)  # fmt: skip

    async def _call_missing(
        self, op: str, request: list[dict] | str, gen: GenParams, missing: list[int]
    ) -> list[Completion]:
        if self.is_local and self._backend is None:  # known without loading it (a dry run never does)
            from .local import LocalBackend

            supports_n = LocalBackend.supports_n
        else:
            supports_n = self.backend.supports_n

        def params_for(i: int) -> GenParams:
            params = gen.for_sample(i)
            if self.is_local and gen.temperature > 0:
                params = params.replace(seed=(gen.seed or 0) + i)
            return params

        got: list[Completion] = []
        if supports_n and len(missing) > 1 and gen.temperature > 0:
            got = (await self._call(op, request, gen, len(missing)))[: len(missing)]
            if len(got) == len(missing):
                return got
            # A server that ignores `n` (llama.cpp's answers one choice): the rest one at a time.
        # Concurrently, so a local micro-batcher takes all samples in one batch.
        rest = missing[len(got) :]
        if len(rest) == 1:  # one sample (nearly every call): awaited in this task, no task of its own
            return got + await self._call(op, request, params_for(rest[0]), 1)
        calls = await asyncio.gather(*(self._call(op, request, params_for(i), 1) for i in rest))
        return got + [comp for call in calls for comp in call]

    async def _call(self, op: str, request: list[dict] | str, gen: GenParams, n: int) -> list[Completion]:
        """One chat or raw-completion request of `n` samples down the chain."""
        if not self.dry_run:
            if op == "complete":
                self._able(CompletionBackend, "takes chat messages only, not raw prompts")
            gen = self._honoured(gen)
        sent = gen

        async def send(backend: Any) -> list[Completion]:
            if op == "chat":
                return await backend.chat(request, sent, n)
            return await backend.complete(request, sent, n)

        prompt_tokens = estimate_tokens(_as_messages(request))

        def settle(comps: list[Completion]) -> float:
            self._learned.record(CALL_LABEL.get(), gen.max_tokens, prompt_tokens, comps)
            for comp in comps:
                comp.cost = self._price(comp.usage.prompt_tokens, comp.usage.completion_tokens)
                self.stats.prompt_tokens += comp.usage.prompt_tokens
                self.stats.completion_tokens += comp.usage.completion_tokens
            return sum(comp.cost for comp in comps)

        def placeholder(prompt: int, reply: int) -> list[Completion]:
            each = reply // max(n, 1)
            return [Completion(placeholder_text(each), DRY_RUN_FINISH, usage=Usage(prompt if i == 0 else 0, each),
                               cost=0.0) for i in range(n)]  # fmt: skip

        return await self._run(_Call(send, prompt_tokens, gen.max_tokens * n, placeholder=placeholder,
                                     estimate=lambda: self.estimate_call(request, gen, n), settle=settle))  # fmt: skip

    async def ajson(
        self,
        messages: list[dict] | str,
        schema: dict | type,
        *,
        system: str | None = None,
        repairs: int = 2,
        constrained: bool | None = None,
        **params: Any,
    ) -> tuple[Any, Completion]:
        """JSON that validates against `schema`, a JSON Schema dict or a pydantic model class (then a
        validated instance is returned). Constrained where the backend can (grammar on llama.cpp and
        transformers, `response_format` on servers; `constrained=False` never asks for it), else, and
        as the fallback, parse, validate and ask again with the error (each repair is its own cached
        request). Raises ValueError carrying the last raw text when no attempt validates."""
        import jsonschema

        model_cls, json_schema = schema_of(schema)
        msgs = to_messages(messages, system)
        if constrained is not False and self.supports_json_schema:
            params = {**params, "json_schema": json_schema}
        comp: Completion | None = None
        error = ""
        for _ in range(repairs + 1):
            comp = await self.achat(msgs, **params)
            try:
                value = extract_json(comp.text)
                if model_cls is not None:
                    return model_cls.model_validate(value), comp  # pydantic's ValidationError is a ValueError
                jsonschema.validate(value, json_schema)
                return value, comp
            except (ValueError, jsonschema.ValidationError) as exc:
                error = str(exc).splitlines()[0][:300]
                msgs = msgs + [
                    {"role": "assistant", "content": comp.text},
                    {
                        "role": "user",
                        "content": f"That reply is not valid JSON for the required schema ({error}). "
                        "Reply again with only the corrected JSON.",
                    },
                ]
        raise ValueError(f"no valid JSON after {repairs + 1} attempts: {error}; raw: {comp.text if comp else ''!r}")

    async def aembed(self, texts: list[str], batch_size: int = 256) -> np.ndarray:
        """Embeddings (float32, one row per text), cached per text; uncached texts are sent in batches
        of `batch_size`, each one call (budgeted at its estimated prompt tokens, limited, retried). In a
        dry run a hosted model's batches are counted and answered by placeholder unit vectors; a local
        encoder computes the real ones (it costs nothing)."""
        import numpy as np

        keys = [request_key({"op": "embed", **self.identity, "text": t}) for t in texts]
        results, missing = self._lookup(keys, _vector_of)
        dry = self.dry_run and not self.is_local
        dim = next((len(v) for v in results if v is not None), 8)

        async def batch(chunk: list[int]) -> None:
            """One batch through the chain, stored as soon as it is answered (a later batch's failure
            keeps it)."""
            sub = [keys[i] for i in chunk]
            call = self._embed_call([texts[i] for i in chunk], sub, dim, dry)

            async def vectors(todo: list[int]) -> list[np.ndarray]:
                return [np.asarray(v, dtype=np.float32) for v in await self._run(call)]

            got = await self._fill(sub, [None] * len(sub), list(range(len(sub))), vectors, _vector_json, _vector_of,
                                   dry=dry)  # fmt: skip
            for i, vec in zip(chunk, got):
                results[i] = vec

        await asyncio.gather(*(batch(missing[s : s + batch_size]) for s in range(0, len(missing), batch_size)))
        if not results:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack(results).astype(np.float32, copy=False)

    def _embed_call(self, texts: list[str], keys: list[str], dim: int, dry: bool) -> _Call:
        import numpy as np

        def placeholder(prompt: int, reply: int) -> list[np.ndarray]:
            """Unit vectors seeded by each text's key (the same text gets the same one)."""
            vecs = [np.random.default_rng(int(key[:8], 16)).standard_normal(dim).astype(np.float32) for key in keys]
            return [v / np.linalg.norm(v) for v in vecs]

        async def send(backend: Any) -> Any:
            embedding = self._able(EmbeddingBackend, "does not embed: use instructkit.models.embeddings."
                                   "embedder('local') for sentence embeddings, or embedder('causal:SPEC:mean') "
                                   "for a causal LM's hidden states")  # fmt: skip
            return await embedding.embed(texts)

        prompt = estimate_tokens([{"content": t} for t in texts])
        return _Call(send, prompt, placeholder=placeholder if dry else None)

    async def achoice_logprobs(
        self, messages: list[dict] | str, choices: list[str], *, system: str | None = None, raw: bool = False
    ) -> list[float]:
        """Log-probability of each choice as the first answer token, from the full next-token
        distribution (local backends only; hosted ones give top_logprobs through `achat`). Cached;
        each uncached read is one call under the concurrency limit (a forward pass in a thread).
        `raw=True` reads it right after the text `messages` as the tokenizer encodes it by default (its
        BOS included, no chat template): how scorers trained on a raw format (DEITA's) are read."""
        if not self.is_local:
            raise ModelCallError(f"{self.spec}: choice log-probabilities need a local model")
        if raw and (not isinstance(messages, str) or system):
            raise ValueError("raw=True takes the prompt text alone (no messages, no system)")
        request: dict[str, Any] = {"prompt": messages} if raw else {"messages": to_messages(messages, system)}
        # "in-context": score tokens found after the prompt (score_tokens.py), not from each choice alone.
        key = request_key(
            {"op": "choices-raw" if raw else "choices", "tokens": "in-context", **self.identity, **request,
             "choices": list(choices)}
        )  # fmt: skip
        (hit,), missing = self._lookup([key], _logprobs_of)
        if not missing:
            return hit

        async def send(backend: Any) -> list[float]:
            scorer = self._able(ScoringBackend, "cannot read next-token distributions")
            if raw:
                return await asyncio.to_thread(scorer.next_token_logprobs, messages, choices, True)
            return await asyncio.to_thread(scorer.choice_logprobs, request["messages"], choices)

        # A forward pass, no tokens counted either way (a dry run counts the call, like the real one).
        call = _Call(send, 0, placeholder=lambda prompt, reply: [0.0] * len(choices))

        async def compute(todo: list[int]) -> list[list[float]]:
            return [await self._run(call)]

        (values,) = await self._fill([key], [None], [0], compute, _logprobs_json, _logprobs_of, dry=self.dry_run)
        return values

    async def aclassify(self, inputs: list[tuple[str, str | None]]) -> list[float]:
        """The logit a classifier backend (`models.classifier`: reward models, trained quality scorers)
        gives each (text, text_pair or None), cached per input; the uncached ones are one call (the
        backend batches them). A local classifier runs even in a dry run (it costs nothing)."""
        keys = [request_key({"op": "classify", **self.identity, "text": t, "pair": p}) for t, p in inputs]
        results, missing = self._lookup(keys, _logit_of)
        if not missing:
            return results

        async def send(backend: Any) -> list[float]:
            model = self._able(ClassifierBackend, "is not a classifier")
            return await asyncio.to_thread(model.classify, [inputs[i] for i in missing])

        return await self._fill(keys, results, missing, lambda todo: self._run(_Call(send, 0)),
                                _logit_json, _logit_of, dry=False)  # fmt: skip

    def span_scores(self, pairs: list[tuple[str, str]], **options: Any) -> list[SpanScore]:
        """Log-probabilities of each answer's tokens given its prompt (local backends only). Synchronous
        and uncached: scorers batch rows through `SpanBatcher` and journal the results per row."""
        if not self.is_local:
            raise ModelCallError(f"{self.spec}: span log-likelihoods need a local model (local or hf:PATH)")
        scorer = self._able(ScoringBackend, "cannot score spans")
        self.stats.calls += 1
        return scorer.span_scores(pairs, **options)

    # ----- capabilities: what a method may ask a model for (docs/DEVELOPING.md, "One door") --------
    def supports(self, capability: str) -> bool:
        """Whether this model offers `capability` (one of `CAPABILITIES`): known without loading a local
        model or building a hosted backend where that decides it, else read off the protocols its
        backend implements."""
        if capability not in CAPABILITIES:
            raise ValueError(f"unknown capability {capability!r}: one of {', '.join(CAPABILITIES)}")
        if capability == "json_schema":
            return self.supports_json_schema
        if self._backend is None and self.is_local:
            return capability in LOCAL_CAPABILITIES
        if self._backend is None and capability in IN_PROCESS_ONLY:  # no hosted backend built to learn it
            return False
        return isinstance(self.backend, CAPABILITIES[capability])

    def count_tokens(self, text: str, pair: str | None = None) -> int:
        """Tokens of `text` (and `pair`, for a classifier) as this model's own tokenizer reads them."""
        counter = self._able(TokenCountingBackend, "cannot count tokens")
        return counter.count_tokens(text) if pair is None else counter.count_tokens(text, pair)

    @property
    def max_input_tokens(self) -> int | None:
        """The longest input the model reads (a classifier's positions), None where not known."""
        return getattr(self.backend, "max_positions", None)

    def local_scorer(
        self, spec: str | None = None, *, dtype: str | None = None, device: str | None = None, shared: bool = True
    ) -> Any:
        """The in-process transformers engine of this local model (or of the local `spec`), with
        `dtype`/`device` (default: this model's), for scorers that work on its tokens: `span_scores`,
        `span_ids`, `hidden_states`, `tokenizer`, `model_id`, `device`. Hosted models have none.
        `shared=False`: an engine of the caller's own, freed when it drops it (one model per round)."""
        target = self if spec is None else self.derive(spec)
        if not target.is_local:
            raise ModelCallError(f"{target.spec}: token-level scoring needs a local model (local or hf:PATH)",
                                 retryable=False)  # fmt: skip
        from .local import LocalBackend, load_local_backend, resolve_local

        opts = target._backend_options
        dtype, device = dtype or opts.get("dtype") or "float32", device or opts.get("device")
        if not shared:
            return LocalBackend(*resolve_local(target.ref.model, dtype), device or "cpu")
        return load_local_backend(target.ref.model, dtype=dtype, device=device)

    # ----- the chain: cache -> budget and dry run -> limits -> retry -> backend -------------------
    def _lookup(self, keys: list[str], decode: Callable[[dict], Any]) -> tuple[list[Any], list[int]]:
        """Cache stage, first half: the stored answer of each key (decoded, or None) and the indices of
        the missing ones. In a dry run an answer walked earlier in the same dry run counts as a hit
        (a real run would find it cached)."""
        results: list[Any] = []
        for key in keys:
            hit = self.cache.get(key)
            if hit is None and self.dry_run:
                hit = self.shared.dry_answers.get(key)
                if hit is not None:
                    _mark_dry_row()
            results.append(None if hit is None else decode(hit))
        missing = [i for i, r in enumerate(results) if r is None]
        self.stats.cache_hits += len(keys) - len(missing)
        return results, missing

    async def _fill(
        self,
        keys: list[str],
        results: list[Any],
        missing: list[int],
        compute: Callable[[list[int]], Awaitable[list[Any]]],
        encode: Callable[[Any], dict],
        decode: Callable[[dict], Any],
        *,
        dry: bool,
    ) -> list[Any]:
        """Cache stage, second half: `compute(missing)` (the calls) once, shared with the same request
        already in flight (another row asking the same thing), and each answer stored under its key.
        `dry`: the answers are a dry run's placeholders, never stored, only remembered for this dry run."""
        flight_key = keys[missing[0]] + f":{len(missing)}"
        if len(missing) > 1:
            flight_key = hashlib.sha1("".join(keys[i] for i in missing).encode()).hexdigest()
        pending = self._inflight.get(flight_key)
        if pending is not None:
            fresh = [decode(encode(v)) for v in await asyncio.shield(pending)]
            self.stats.cache_hits += len(missing)
        else:
            future = asyncio.get_running_loop().create_future()
            self._inflight[flight_key] = future
            try:
                fresh = await compute(missing)
                store = self.shared.dry_answers.__setitem__ if dry else self.cache.set
                for i, value in zip(missing, fresh):
                    store(keys[i], encode(value))
                future.set_result(fresh)
            except BaseException as exc:
                future.set_exception(exc)
                future.exception()  # mark retrieved: waiters re-raise it themselves
                raise
            finally:
                self._inflight.pop(flight_key, None)
        for i, value in zip(missing, fresh):
            results[i] = value
        if dry:
            _mark_dry_row()
        return results

    async def _run(self, call: _Call) -> Any:
        """Budget and dry-run stage. A dry run counts the call (calibrated estimate) and answers with its
        placeholder; a real call reserves its most expensive outcome against `max_cost` (so concurrent
        calls never pass it together), goes on to `_retrying`, and then books what it really cost."""
        stats = self.stats
        if self.dry_run and call.placeholder is not None:
            if call.estimate is not None:
                prompt, reply, cost, calibrated = call.estimate()
            else:
                prompt, reply = self.calibration.prompt_tokens(call.prompt_tokens), call.reply_tokens
                cost, calibrated = self._price(prompt, reply), False
            stats.estimated_calls += 1
            stats.estimated_calibrated += calibrated
            stats.estimated_tokens += prompt + reply
            stats.estimated_cost += cost
            return call.placeholder(prompt, reply)
        shared = self.shared
        reserve = self._price(call.prompt_tokens, call.reply_tokens)
        if shared.max_cost is not None and shared.stats.cost + shared.reserved + reserve > shared.max_cost:
            raise BudgetExceeded(
                f"--max-cost {shared.max_cost:.4f} reached (spent {shared.stats.cost:.4f}); stopping before the next call"
            )
        shared.reserved += reserve
        try:
            value = await self._retrying(call)
        except ModelCallError:
            stats.failures += 1
            raise
        finally:
            shared.reserved -= reserve
        if call.settle is not None:
            stats.cost += call.settle(value)
        else:  # no usage reported (embeddings): booked at the estimate
            stats.prompt_tokens += call.prompt_tokens
            stats.cost += reserve
        return value

    async def _retrying(self, call: _Call) -> Any:
        """Retry stage: `TransientError`s are tried again up to `max_retries` times, after exactly the
        server's Retry-After, else exponential backoff with jitter. A 429 while the provider answered
        other requests since this one's last try is its limit at work, not a failure: it waits and
        goes again without spending a retry (a provider that answers nobody, an exhausted quota,
        still fails after `max_retries`). (Retries run outside the except block, so later errors do
        not chain the first one, whose cause may quote a credential, into logged tracebacks.)"""
        gate = self._provider_limits
        spent = 0
        answered = gate.successes if gate is not None else 0
        while True:
            try:
                return await self._attempt(call)
            except TransientError as exc:
                error = exc
            if not (error.status == 429 and gate is not None and gate.successes > answered):
                spent += 1
                if spent > self.max_retries:
                    raise error
            answered = gate.successes if gate is not None else 0
            self.stats.retries += 1
            await asyncio.sleep(_retry_delay(error, spent))

    async def _attempt(self, call: _Call) -> Any:
        """Limits stage, one try: the user's RPM/TPM, then a concurrency slot and the provider's own
        limits (the adaptive gate, `limits.ProviderLimits`, for hosted and served models; a fixed
        semaphore for local ones), then the backend."""
        tokens = call.prompt_tokens + call.reply_tokens
        if self.shared.rpm:
            await self.shared.rpm.take(1)
        if self.shared.tpm:
            await self.shared.tpm.take(tokens)
        backend = self.backend
        gate = self._provider_limits
        if gate is None:
            async with self._semaphore():
                self.stats.calls += 1
                return await call.send(backend)
        ticket = await gate.acquire({"requests": 1, "tokens": tokens, "input_tokens": call.prompt_tokens,
                                     "output_tokens": call.reply_tokens}, self.concurrency)  # fmt: skip
        self.stats.limit_wait_s += ticket.waited_s
        self.stats.calls += 1
        try:
            value = await call.send(backend)
        except ModelCallError as exc:
            gate.settle(ticket, exc.status or 0, getattr(exc, "retry_after", None))
            self.stats.throttled += int(exc.status == 429)
            raise
        except BaseException:
            gate.settle(ticket, 0)
            raise
        gate.settle(ticket)
        return value

    @property
    def limiter(self) -> ProviderLimits | None:
        """The provider's adaptive gate (hosted and served models; None for local ones): what it
        believes is shown in the progress line and kept in the summary (`ProviderLimits.state`)."""
        return self._provider_limits

    def _honoured(self, gen: GenParams) -> GenParams:
        """`gen` without the penalties a backend cannot apply: dropped loudly (a warning once per
        option, a count in `stats.dropped_<option>`), never silently. The cache key keeps what was asked."""
        asked = [name for name in PENALTIES if getattr(gen, name)]
        if not asked or self.backend.supports_penalties:
            return gen
        for name in asked:
            count = getattr(self.stats, f"dropped_{name}")
            if not count:
                print(
                    f"[model] warning: {self.spec} cannot apply {name}; calls are sent without it "
                    f"(counted as dropped_{name} in the run's call stats)",
                    file=sys.stderr,
                )
            setattr(self.stats, f"dropped_{name}", count + 1)
        return gen.replace(**{name: 0.0 for name in asked})

    # ----- prices and dry-run estimates --------------------------------------------------------
    def _price(self, prompt_tokens: int, completion_tokens: int, batch: bool = False) -> float:
        """What this model charges for these tokens (`pricing.cost_of`; 0 for free models)."""
        return cost_of(self.cost_model, prompt_tokens, completion_tokens, batch=batch) if self.cost_model else 0.0

    def _estimate(self, request: list[dict] | str, gen: GenParams, n: int, batch: bool = False) -> tuple[int, float]:
        """(tokens, cost) of a call at most: the prompt estimate plus max_tokens per sample (`batch`:
        priced as a batch API request). The budget reserves this upper bound, so concurrent calls never
        pass `max_cost` together."""
        prompt_tokens = estimate_tokens(_as_messages(request))
        return prompt_tokens + gen.max_tokens * n, self._price(prompt_tokens, gen.max_tokens * n, batch)

    @property
    def calibration(self) -> Calibration:
        """This model's stored figures plus what this process learned (read from the cache once)."""
        if self._calibration is None:
            self._calibration = Calibration.from_json(self.cache.read_note(self._calibration_key()))
        merged = Calibration()
        merged.add(self._calibration)
        merged.add(self._learned)
        return merged

    def _calibration_key(self) -> str:
        return request_key({"op": "calibration", **self.identity})

    def save_calibration(self) -> None:
        """Add what this process's real calls taught to the stored figures (this model and the models
        derived from it); called after every stage and on close."""
        for llm in [self, *self.shared.members.values()]:
            if not llm._learned.replies and not llm._learned.prompt_counted:
                continue
            stored = Calibration.from_json(llm.cache.read_note(llm._calibration_key()))
            stored.add(llm._learned)
            llm.cache.write_note(llm._calibration_key(), stored.to_json())
            llm._calibration, llm._learned = stored, Calibration()

    def estimate_call(self, request: list[dict] | str, gen: GenParams, n: int) -> tuple[int, int, float, bool]:
        """What a dry run counts for one call: (prompt tokens, reply tokens for all n samples, cost,
        calibrated). Calibrated from this model's earlier real calls where there are any; a reply of
        unknown size counts max_tokens."""
        cal = self.calibration
        prompt = cal.prompt_tokens(estimate_tokens(_as_messages(request)))
        per_reply = cal.reply_tokens(CALL_LABEL.get(), gen.max_tokens)
        calibrated = per_reply is not None
        reply = (per_reply if calibrated else gen.max_tokens) * n
        return prompt, reply, self._price(prompt, reply), calibrated

    # ----- sync facade --------------------------------------------------------------------
    def chat(self, messages: list[dict] | str, **params: Any) -> Completion:
        return run_sync(self.achat(messages, **params))

    def sample(self, messages: list[dict] | str, n: int = 1, **params: Any) -> list[Completion]:
        return run_sync(self.asample(messages, n, **params))

    def complete(self, prompt: str, **params: Any) -> Completion:
        return run_sync(self.acomplete(prompt, **params))

    def json(self, messages: list[dict] | str, schema: dict | type, **params: Any) -> tuple[Any, Completion]:
        return run_sync(self.ajson(messages, schema, **params))

    def embed(self, texts: list[str], batch_size: int = 256) -> np.ndarray:
        return run_sync(self.aembed(texts, batch_size))

    def classify(self, inputs: list[tuple[str, str | None]]) -> list[float]:
        return run_sync(self.aclassify(inputs))

    async def aclose(self) -> None:
        """Close this model's backend (HTTP sessions) and every model derived from it; store calibration."""
        try:
            self.save_calibration()
        except Exception:  # a cache problem must not keep sessions open
            pass
        for llm in [self, *self.shared.members.values()]:
            if llm._backend is not None:
                await llm._backend.aclose()

    def close(self) -> None:
        run_sync(self.aclose())


def _as_messages(request: list[dict] | str) -> list[dict]:
    """A chat request as it is, a raw completion prompt as one message (for token estimates)."""
    return request if isinstance(request, list) else [{"content": request}]


def to_messages(messages: list[dict] | str, system: str | None = None) -> list[dict]:
    msgs = [{"role": "user", "content": messages}] if isinstance(messages, str) else list(messages)
    if system:
        msgs = [{"role": "system", "content": system}, *msgs]
    return msgs


@dataclass
class _Call:
    """One request down the chain (`LLM._run`): what it sends and how it is counted, priced and faked.
    An operation builds it; the stages treat every operation alike."""

    send: Callable[[Any], Awaitable[Any]]  # the backend call, given the backend
    prompt_tokens: int  # estimated (4 characters a token): rate limits, the budget's reservation
    reply_tokens: int = 0  # the most reply tokens it may cost (max_tokens per sample)
    # A dry run's answer, given the counted (prompt, reply) tokens; None: sent even in a dry run.
    placeholder: Callable[[int, int], Any] | None = None
    # What a dry run counts: (prompt, reply, cost, calibrated); None: the calibrated prompt estimate.
    estimate: Callable[[], tuple[int, int, float, bool]] | None = None
    # Books the answer's usage and returns what it cost; None: booked at the estimate (no usage reported).
    settle: Callable[[Any], float] | None = None


def _completion_of(stored: dict) -> Completion:
    return Completion.from_json(stored, cached=True)


def _vector_of(stored: dict) -> np.ndarray:
    import numpy as np

    return np.frombuffer(base64.b64decode(stored["b64"]), dtype=np.float32)


def _vector_json(vector: np.ndarray) -> dict:
    return {"b64": base64.b64encode(vector.tobytes()).decode("ascii")}


def _logprobs_of(stored: dict) -> list[float]:
    return list(stored["logprobs"])


def _logprobs_json(values: list[float]) -> dict:
    return {"logprobs": values}


def _logit_of(stored: dict) -> float:
    return float(stored["logit"])


def _logit_json(value: float) -> dict:
    return {"logit": value}


def _retry_delay(exc: BaseException | None, attempt_number: int) -> float:
    """The server's Retry-After when it sent one (exactly: no longer), else exponential backoff with
    full jitter."""
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        return min(float(retry_after), 600.0)
    base = min(30.0, 0.25 * 2 ** (attempt_number - 1))
    return random.uniform(base / 2, base)


def schema_of(schema: dict | type) -> tuple[Any, dict]:
    """(pydantic model class or None, JSON Schema dict) for a schema given either way."""
    if isinstance(schema, dict):
        return None, schema
    if isinstance(schema, type) and hasattr(schema, "model_json_schema") and hasattr(schema, "model_validate"):
        return schema, schema.model_json_schema()
    raise TypeError(f"schema must be a JSON Schema dict or a pydantic model class, not {schema!r}")


def extract_json(text: str) -> Any:
    """The first JSON value in `text`, tolerating code fences and prose around it."""
    stripped = text.strip()
    if stripped.startswith("```"):
        stripped = stripped.split("\n", 1)[1] if "\n" in stripped else stripped[3:]
        stripped = stripped.rsplit("```", 1)[0]
    try:
        return json.loads(stripped)
    except ValueError:
        pass
    decoder = json.JSONDecoder()
    for i, ch in enumerate(text):
        if ch in "[{":
            try:
                return decoder.raw_decode(text[i:])[0]
            except ValueError:
                continue
    raise ValueError("no JSON value found in the reply")
