"""`LLM`: the one interface every method calls, whatever the backend.

A thin facade: an operation (chat and samples, raw completion, embeddings, choice log-probs,
classifier logits) builds its cache keys and calls the stages of `models/stages/` in sequence,
each with its own state: the cache (`Lookup`: hits, one request for identical ones in flight) ->
batch collection (`Batching`, chat in batch mode) -> the ledger (`Ledger`: a dry run's estimate and
placeholder, or the budget's reservation) -> `await retry.run(backend.chat, ...)` (`Retry`, which
takes the limits, `Limits`, per try) -> the ledger books what was spent -> the cache stores it.
What builds the backend is the registry of `spec.py`; structured output (`ajson`) is a layer over
this facade in `structured.py`.

Every model of one run shares one `RunShared` (dry run, budget, rate limits, retry policy, batch
collection, statistics): a method that needs another model (a jury member) gets it from
`llm.derive(spec)`, never from a fresh `LLM(...)`.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, Unpack, overload

from ..aio import run_sync
from . import capabilities
from .builtin_backends import Endpoint, endpoint_of
from .cache import ResponseCache, request_key
from .capabilities import Codec
from .config import LOCAL_OPTIONS, ModelConfig
from .limits import ProviderLimits, estimate_tokens
from .logprobs import check_policy
from .pricing import priced_name
from .spec import BackendSettings, ModelRef, backend_entry, identity_of, parse_spec, resolve
from .stages.batching import Batching
from .stages.ledger import (
    CALL_LABEL,
    DRY_RUN_FINISH,
    DRY_RUN_ROW,
    BudgetExceeded,
    Calibration,
    DryRunSkip,
    Ledger,
    Meter,
    as_messages,
    is_placeholder,
    mark_dry_row,
    placeholder_text,
    placeholders,
)
from .stages.limiting import Limits
from .stages.lookup import Lookup
from .stages.retry import Retry
from .stages.state import CallStats, RunShared
from .structured import ajson, extract_json, schema_of
from .types import (
    PENALTIES,
    Backend,
    Completion,
    CompletionBackend,
    GenOptions,
    GenParams,
    ModelBackend,
    ModelCallError,
    to_messages,
)

if TYPE_CHECKING:
    pass

__all__ = ["CALL_LABEL", "DRY_RUN_FINISH", "DRY_RUN_ROW", "LLM", "BudgetExceeded", "CallStats", "Calibration",
           "DryRunSkip", "ModelRef", "RunShared", "extract_json", "is_placeholder", "parse_spec", "placeholder_text",
           "schema_of", "to_messages"]  # fmt: skip

# A request for at most this many tokens reads the next token's distribution by design (DEITA's scorer
# on a server): ending on the limit is its purpose, so it is neither counted as cut nor asked again.
SHORT_READ_TOKENS = 1

T = TypeVar("T")
Args = ParamSpec("Args")
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
        return self if obj is None else getattr(obj.shared, self.name)

    def __set__(self, obj: LLM, value: T) -> None:
        setattr(obj.shared, self.name, value)


def _sync(method: Callable[Args, Awaitable[T]]) -> Callable[Args, T]:
    """The synchronous twin of an async method (`chat` of `achat`): the same typed parameters."""

    @functools.wraps(method)
    def run(*args: Args.args, **kwargs: Args.kwargs) -> T:
        return run_sync(method(*args, **kwargs))

    run.__name__ = run.__qualname__ = method.__name__.removeprefix("a")
    return run


class LLM:
    """A model behind the cache, limits, retries and budget. Async methods plus a sync facade."""

    def __init__(self, spec: str | ModelConfig = "local", *, cache: ResponseCache | bool | None = None,
                 backend: ModelBackend | None = None, shared: RunShared | None = None, **options: Any):  # fmt: skip
        """`LLM(ModelConfig(...))` or `LLM(spec, **ModelConfig's options)`; `cache`: also a `ResponseCache`
        to share; `backend` replaces the one the spec names; `shared` joins a run."""
        config, self.cache = _configure(spec, cache, options)
        self._config, self.spec = config, config.model
        ref, url_key = resolve(config.model, config.api_base, config.via)
        self.ref, self.entry = ref, backend_entry(ref.backend)
        self._settings = BackendSettings(config.api_key or url_key, config.timeout, config.local_options())
        self.shared = shared or RunShared.of(config)
        self._backend, self._custom_backend = backend, backend is not None
        self._identity: dict[str, Any] | None = None
        self.meter = Meter(self.entry.prices, priced_name(ref.family, ref.model), self.cache,
                           lambda: request_key({"op": "calibration", **self.identity}))
        # The stages, each given its state (the provider's header limits: hosted and served models).
        self.lookup, self.ledger = Lookup(self.cache, self.shared), Ledger(self.shared)
        self.limits = Limits(self.shared, None if self.entry.in_process else ProviderLimits(), config.concurrency)
        self.retry = Retry(self.shared, self.limits)

    @property
    def config(self) -> ModelConfig:
        """What rebuilds this model in another process (`LLM(llm.config)`, Ray actors): no key, no backend."""
        return self._config.replace(
            api_key=None, concurrency=self.concurrency, cache=self.cache.enabled, cache_dir=str(self.cache.directory),
            dry_run=self.dry_run, max_cost=self.max_cost, max_retries=self.max_retries, retry_length=self.retry_length,
        )  # fmt: skip

    # ----- what the run's models share (RunShared) -------------------------------------------
    dry_run: Shared[bool] = Shared()
    max_cost: Shared[float | None] = Shared()
    max_retries: Shared[int] = Shared()
    retry_length: Shared[float] = Shared()
    stats: Shared[CallStats] = Shared()
    batching: Shared[Batching] = Shared()  # batch mode: `llm.batching.collecting(collector)`

    collector = property(lambda self: self.shared.batching.collector,
                         doc="The batch collector of the pass in progress (`batching.collecting`), else None.")

    concurrency = property(lambda self: self.limits.concurrency, doc="Requests in flight at most (the limits stage's).")

    def derive(self, spec: str, **backend_options: Any) -> LLM:
        """The model `spec` for this same run: its own backend and identity, this run's `RunShared` (a
        jury's members are estimated, budgeted and counted with the run); the same spec, the same object."""
        if spec == self.spec and not backend_options:
            return self
        key = json.dumps([spec, backend_options], sort_keys=True, default=str)
        member = self.shared.members.get(key)
        if member is None:
            config = _member_config(self, spec, backend_options)
            member = self.shared.members[key] = LLM(config, cache=self.cache, shared=self.shared)
        return member

    # ----- identity, backend, prices ---------------------------------------------------------
    @property
    def backend(self) -> ModelBackend:
        """The backend, built on first use by its registered factory (`spec.register_backend`)."""
        if self._backend is None:
            self._backend = self.entry.factory(self.ref, self._settings)
        return self._backend

    @property
    def endpoint(self) -> Endpoint:
        """Where a served model's requests go: model name, base URL, key, timeout (batch mode)."""
        return endpoint_of(self.ref, self._settings)

    @property
    def identity(self) -> dict[str, Any]:
        """What identifies this model in cache keys: never a key or a credential (computed once)."""
        if self._identity is None:  # a custom local backend by its weights, else without building it
            custom = self.entry.in_process and self._custom_backend
            self._identity = {"family": "local", "model": self.backend.model_id} if custom else identity_of(
                self.ref, self._settings)
        return self._identity

    @property
    def is_local(self) -> bool:
        return self.ref.family == "local"

    @property
    def cost_model(self) -> str:
        """The name to price calls by ("": free, or priced by its registered backend's prices)."""
        return self.meter.cost_model

    def price(self, prompt_tokens: int, completion_tokens: int, batch: bool = False) -> float:
        """What this model charges for these tokens (`batch`: through a batch API)."""
        return self.meter.price(prompt_tokens, completion_tokens, batch)

    def estimate(self, request: list[dict] | str, gen: GenParams, n: int, batch: bool = False) -> tuple[int, float]:
        """(tokens, cost) of a call at most: what the budget reserves (`Meter.estimate`)."""
        return self.meter.estimate(request, gen, n, batch)

    _estimate = estimate  # the name tests/test_resume.py reads

    def estimate_call(self, request: list[dict] | str, gen: GenParams, n: int) -> tuple[int, int, float, bool]:
        """What a dry run counts for one call (`Meter.estimate_call`)."""
        return self.meter.estimate_call(request, gen, n)

    @property
    def calibration(self) -> Calibration:
        """This model's stored figures plus what this process learned (read from the cache once)."""
        return self.meter.calibrations.current()

    def save_calibration(self) -> None:
        """Store what this process's real calls taught (this model and those derived from it)."""
        for llm in [self, *self.shared.members.values()]:
            llm.meter.save()

    def able(self, protocol: type[P], cannot: str) -> P:
        """The backend as `protocol` (a capability of `models/types.py`), else a final ModelCallError."""
        backend = self.backend
        if not isinstance(backend, protocol):
            raise ModelCallError(f"{self.spec} {cannot}", retryable=False)
        return backend

    @property
    def supports_json_schema(self) -> bool:
        backend = self.backend
        return isinstance(backend, Backend) and backend.supports_json_schema

    limiter = property(lambda self: self.limits.gate, doc="The provider's adaptive gate (None: a local model).")

    # ----- operations: each builds its keys and calls the stages in sequence ------------------
    def chat_key(self, messages: list[dict], params: GenParams, sample_index: int = 0) -> str:
        return self._request_key("chat", messages, params, sample_index)

    def complete_key(self, prompt: str, params: GenParams, sample_index: int = 0) -> str:
        return self._request_key("complete", prompt, params, sample_index)

    def _request_key(self, op: str, request: list[dict] | str, params: GenParams, sample_index: int) -> str:
        body = {"messages": request} if op == "chat" else {"prompt": request}
        return request_key({"op": op, **self.identity, **body, "params": params.canonical(), "i": sample_index})

    async def asample(self, messages: list[dict] | str, n: int = 1, *, system: str | None = None,
                      params: GenParams | None = None, **options: Unpack[GenOptions]) -> list[Completion]:  # fmt: skip
        """`n` samples for one prompt; samples already cached (by index) are not paid again."""
        return await self._sample("chat", to_messages(messages, system), n, GenParams.of(params, options))

    async def achat(self, messages: list[dict] | str, *, system: str | None = None, params: GenParams | None = None,
                    **options: Unpack[GenOptions]) -> Completion:  # fmt: skip
        """One reply; `params` and/or the GenParams fields as keywords (`max_tokens=8`)."""
        return (await self._sample("chat", to_messages(messages, system), 1, GenParams.of(params, options)))[0]

    async def acomplete(self, prompt: str, *, params: GenParams | None = None,
                        **options: Unpack[GenOptions]) -> Completion:  # fmt: skip
        """Raw text, no chat template (`/v1/completions`, a local tokenizer's BOS): for weights trained on
        raw formats (DEITA's scorers, Bonito). Cached under its own op; never through a batch API."""
        if not isinstance(prompt, str):
            raise TypeError(f"acomplete takes the raw prompt text, not {type(prompt).__name__}")
        gen = GenParams.of(params, options)
        if gen.json_schema is not None:
            raise ValueError("json_schema is not supported for raw completions; use achat or ajson")
        return (await self._sample("complete", prompt, 1, gen))[0]

    async def ajson(self, messages: list[dict] | str, schema: dict | type, *, system: str | None = None,
                    repairs: int = 2, constrained: bool | None = None, params: GenParams | None = None,
                    **options: Unpack[GenOptions]) -> tuple[Any, Completion]:  # fmt: skip
        """JSON that validates against `schema` (`structured.ajson`: constrained, else repaired)."""
        return await ajson(self, to_messages(messages, system), schema, GenParams.of(params, options),
                           repairs=repairs, constrained=constrained)  # fmt: skip

    async def _sample(self, op: str, request: list[dict] | str, n: int, gen: GenParams) -> list[Completion]:
        """`n` samples; replies cut at max_tokens are counted and, with `retry_length` > 1, asked again
        once with max_tokens times that (a request of its own, cached as such)."""
        results = await self._cached_samples(op, request, n, gen)
        if gen.max_tokens <= SHORT_READ_TOKENS:  # a score-token read: reaching the limit is the point
            return results
        cut = [i for i, c in enumerate(results) if c.finish_reason == "length"]
        if cut and self.retry_length > 1:
            longer = gen.replace(max_tokens=math.ceil(gen.max_tokens * self.retry_length))
            again = await self._cached_samples(op, request, max(cut) + 1, longer)  # samples by index
            self.stats.length_retries += len(cut)
            for i in cut:
                results[i] = again[i]
        self.stats.truncated += sum(c.finish_reason == "length" for c in results)
        return results

    async def _cached_samples(self, op: str, request: list[dict] | str, n: int, gen: GenParams) -> list[Completion]:
        """`n` samples through the cache (a key per sample index), then batch collection (chat), then calls."""
        if gen.logprobs_at != "all":
            check_policy(gen.logprobs_at)
        keys = [self._request_key(op, request, gen, i) for i in range(n)]
        shared = self.shared
        dry = shared.dry_run
        results, missing, walked = self.lookup.find(keys, _completion_of, dry)
        batching = shared.batching
        if op == "chat" and batching.collector is not None:  # a batch's answers of this run count as calls
            shared.stats.cache_hits -= batching.fresh(keys, results)
            if missing and not dry:
                batching.intercept(self, request, gen, [(i, keys[i]) for i in missing])  # raises
        if walked:
            mark_dry_row()
        if not missing:
            return results
        codec = _completion_codec(gen.logprobs_at)
        if len(missing) == 1:  # one sample (nearly every call): straight to its request
            return await _fill(self.lookup, keys, results, missing, codec, dry, self._call, op, request,
                               _sample_params(gen, missing[0], self.is_local), 1)  # fmt: skip
        return await _fill(self.lookup, keys, results, missing, codec, dry, self._call_missing, op, request, gen,
                           missing)  # fmt: skip

    async def _call_missing(self, op: str, request: list[dict] | str, gen: GenParams,
                            missing: list[int]) -> list[Completion]:  # fmt: skip
        """The missing samples: one request of n where the backend takes `n`, else one request each."""
        if self._backend is None and self.entry.in_process:  # known without loading it (a dry run never does)
            supports_n = self.entry.supports_n
        else:
            supports_n = self.backend.supports_n
        got: list[Completion] = []
        if supports_n and len(missing) > 1 and gen.temperature > 0:
            got = (await self._call(op, request, gen, len(missing)))[: len(missing)]
            if len(got) == len(missing):
                return got
            # A server that ignores `n` (llama.cpp's answers one choice): the rest one at a time.
        rest = missing[len(got) :]
        if len(rest) == 1:  # awaited in this task, no task of its own
            return got + await self._call(op, request, _sample_params(gen, rest[0], self.is_local), 1)
        # Concurrently, so a local micro-batcher takes all samples in one batch.
        calls = await asyncio.gather(*(self._call(op, request, _sample_params(gen, i, self.is_local), 1) for i in rest))
        return got + [comp for call in calls for comp in call]

    async def _call(self, op: str, request: list[dict] | str, gen: GenParams, n: int) -> list[Completion]:
        """One request of `n` samples: a dry run's placeholders, or reserved, sent (retry stage), booked."""
        if self.shared.dry_run:
            prompt, reply, cost, calibrated = self.estimate_call(request, gen, n)
            self.ledger.count(prompt, reply, cost, calibrated)
            return placeholders(prompt, reply, n)
        backend: Any = self.backend
        if op == "complete":
            self.able(CompletionBackend, "takes chat messages only, not raw prompts")
        send = backend.chat if op == "chat" else backend.complete
        prompt_tokens = estimate_tokens(as_messages(request))
        comps = await self.paid(send, (request, self._honoured(gen), n), prompt_tokens, gen.max_tokens * n)
        self.meter.calibrations.learned.record(CALL_LABEL.get(), gen.max_tokens, prompt_tokens, comps)
        for comp in comps:
            comp.cost = self.price(comp.usage.prompt_tokens, comp.usage.completion_tokens)
        self.ledger.book(comps)
        return comps

    async def paid(self, send: Callable[..., Awaitable[T]], args: tuple[Any, ...], prompt_tokens: int,
                    reply_tokens: int) -> T:  # fmt: skip
        """`send(*args)` through the retry stage, its most expensive outcome reserved against `max_cost`."""
        reserved = self.ledger.reserve(self.price(prompt_tokens, reply_tokens))
        try:
            return await self.retry.run(send, args, prompt_tokens, reply_tokens)
        except ModelCallError:
            self.stats.failures += 1
            raise
        finally:
            self.ledger.release(reserved)

    async def fill(self, keys: list[str], results: list[Any], missing: list[int], codec: Codec, dry: bool,
                   compute: Callable[..., Awaitable[list[Any]]], *args: Any) -> list[Any]:  # fmt: skip
        """The cache stage around `compute(*args)` (`_fill`), for the operations of capabilities.py."""
        return await _fill(self.lookup, keys, results, missing, codec, dry, compute, *args)

    def _honoured(self, gen: GenParams) -> GenParams:
        return _honoured(gen, self.backend.supports_penalties, self.stats, self.spec)

    # ----- capabilities beyond chat: small delegations to models/capabilities.py -----------------
    # Each is a function of models/capabilities.py that takes the model first, so it serves as the method:
    # embeddings cached per text, a choice's first-token log-probability (local), a classifier's logits
    # cached per input, span scores (local), `supports(capability)` and the model's own token counts
    # (DEVELOPING.md, "One door"), and the in-process scoring engine of a local model.
    aembed = capabilities.aembed
    achoice_logprobs = capabilities.achoice_logprobs
    aclassify = capabilities.aclassify
    span_scores = capabilities.span_scores
    supports = capabilities.supports
    count_tokens = capabilities.count_tokens
    local_scorer = capabilities.local_scorer
    max_input_tokens = property(capabilities.max_input_tokens)

    # ----- sync facade: the async methods run on the one event-loop thread (aio.run_sync) -------
    chat = _sync(achat)
    sample = _sync(asample)
    complete = _sync(acomplete)
    json = _sync(ajson)
    embed = _sync(aembed)
    classify = _sync(aclassify)

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


def _completion_of(stored: dict) -> Completion:
    return Completion.from_json(stored, cached=True)


@functools.cache
def _completion_codec(logprobs_at: str) -> Codec:
    """Completions as the cache keeps them for a reader of `logprobs_at` (models/logprobs.py)."""
    encode = Completion.to_json if logprobs_at == "all" else functools.partial(Completion.to_json, logprobs_at=logprobs_at)
    return Codec(encode, _completion_of)


def _configure(spec: str | ModelConfig, cache: ResponseCache | bool | None,
               options: dict[str, Any]) -> tuple[ModelConfig, ResponseCache]:  # fmt: skip
    """`LLM(...)`'s arguments as one ModelConfig and the response cache."""
    config = spec if isinstance(spec, ModelConfig) else ModelConfig(model=str(spec))
    if isinstance(cache, bool):
        options["cache"] = cache
    if options:
        try:
            config = config.replace(**options)
        except ValueError as exc:
            raise TypeError(f"LLM(): {exc}") from None
    if isinstance(cache, ResponseCache):
        return config.replace(cache=cache.enabled, cache_dir=str(cache.directory)), cache
    return config, ResponseCache(config.cache_dir, enabled=config.cache)


def _member_config(llm: LLM, spec: str, backend_options: dict[str, Any]) -> ModelConfig:
    """A derived model's config: its own spec and endpoint (the key only to the same endpoint), this
    run's other options; another local model keeps dtype and device."""
    ref, mine = parse_spec(spec), llm.ref
    same_endpoint = (ref.family == mine.family and ref.api_base == mine.api_base
                     and (ref.family != "litellm" or ref.model.partition("/")[0] == mine.model.partition("/")[0]))
    local = dict.fromkeys(LOCAL_OPTIONS)
    if ref.family == "local" and llm.is_local:
        local.update(llm._settings.local)
    return llm._config.replace(
        model=spec, api_base=None, api_key=llm._settings.api_key if same_endpoint else None,
        via=llm._config.via if ref.family == "openai-compatible" or ref.route else None,
        concurrency=llm.concurrency, **{**local, **backend_options},
    )  # fmt: skip


def _honoured(gen: GenParams, supports_penalties: bool, stats: CallStats, spec: str) -> GenParams:
    """`gen` without the penalties a backend cannot apply: dropped loudly (a warning once per option, a
    count in `stats.dropped_<option>`), never silently. The cache key keeps what was asked."""
    asked = [name for name in PENALTIES if getattr(gen, name)]
    if not asked or supports_penalties:
        return gen
    for name in asked:
        count = getattr(stats, f"dropped_{name}")
        if not count:
            print(f"[model] warning: {spec} cannot apply {name}; calls are sent without it "
                  f"(counted as dropped_{name} in the run's call stats)", file=sys.stderr)  # fmt: skip
        setattr(stats, f"dropped_{name}", count + 1)
    return gen.replace(**{name: 0.0 for name in asked})


async def _fill(lookup: Lookup, keys: list[str], results: list[Any], missing: list[int], codec: Codec, dry: bool,
                compute: Callable[..., Awaitable[list[Any]]], *args: Any) -> list[Any]:  # fmt: skip
    """The cache stage around `compute(*args)`: sent once, shared with the same request in flight
    (another row asking the same thing), each answer stored under its key (`dry`: a dry run's
    placeholders, remembered for this dry run only)."""
    flight = lookup.flight_key(keys, missing)
    pending = lookup.pending(flight)
    if pending is not None:
        fresh = await lookup.wait(pending, len(missing), codec.copy)
    else:
        lookup.lead(flight)
        try:
            fresh = await compute(*args)
        except BaseException as exc:
            lookup.fail(flight, exc)
            raise
        lookup.store(flight, keys, missing, fresh, codec.encode, dry)
    for i, value in zip(missing, fresh):
        results[i] = value
    if dry:
        mark_dry_row()
    return results


def _sample_params(gen: GenParams, i: int, local: bool) -> GenParams:
    """Sample `i`'s options (`GenParams.for_sample`); a local model samples from seed+i even unseeded
    (from seed 0), through the same one rule."""
    if local and gen.temperature > 0 and gen.seed is None:
        gen = gen.replace(seed=0)
    return gen.for_sample(i)
