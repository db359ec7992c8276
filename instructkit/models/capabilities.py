"""What a model does beyond chat, each an operation over the facade's stages (`LLM.fill`: the cache
around the calls; `LLM.paid`: the budget and the retry stage around one request): embeddings,
choice log-probabilities, classifier logits and span scores. `LLM.aembed` and the like delegate here.
"""

from __future__ import annotations

import asyncio
import base64
from typing import TYPE_CHECKING, Any

from .cache import request_key
from .limits import estimate_tokens
from .stages.ledger import mark_dry_row
from .types import (
    Backend,
    ClassifierBackend,
    CompletionBackend,
    EmbeddingBackend,
    ModelCallError,
    ScoringBackend,
    SpanScore,
    TokenCountingBackend,
    to_messages,
)

if TYPE_CHECKING:
    import numpy as np

LLM = Any  # the facade (models/llm.py imports this module, never the other way)

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


def supports(llm: LLM, capability: str) -> bool:
    """Whether `llm` offers `capability` (one of `CAPABILITIES`): known without loading a local model or
    building a hosted backend where that decides it, else read off the protocols its backend implements."""
    if capability not in CAPABILITIES:
        raise ValueError(f"unknown capability {capability!r}: one of {', '.join(CAPABILITIES)}")
    if capability == "json_schema":
        return llm.supports_json_schema
    if llm._backend is None and llm.is_local:
        return capability in LOCAL_CAPABILITIES
    if llm._backend is None and capability in IN_PROCESS_ONLY:  # no hosted backend built to learn it
        return False
    return isinstance(llm.backend, CAPABILITIES[capability])


def count_tokens(llm: LLM, text: str, pair: str | None = None) -> int:
    """Tokens of `text` (and `pair`, for a classifier) as the model's own tokenizer reads them."""
    counter = llm.able(TokenCountingBackend, "cannot count tokens")
    return counter.count_tokens(text) if pair is None else counter.count_tokens(text, pair)


def max_input_tokens(llm: LLM) -> int | None:
    """The longest input the model reads (a classifier's positions), None where not known."""
    return getattr(llm.backend, "max_positions", None)


def local_scorer(llm: LLM, spec: str | None = None, *, dtype: str | None = None, device: str | None = None,
                 shared: bool = True) -> Any:  # fmt: skip
    """The in-process transformers engine of this local model (or of the local `spec`), with
    `dtype`/`device` (default: the model's), for scorers that work on its tokens: `span_scores`,
    `span_ids`, `hidden_states`, `tokenizer`, `model_id`, `device`. Hosted models have none.
    `shared=False`: an engine of the caller's own, freed when it drops it (one model per round)."""
    target = llm if spec is None else llm.derive(spec)
    if not target.is_local:
        raise ModelCallError(f"{target.spec}: token-level scoring needs a local model (local or hf:PATH)",
                             retryable=False)  # fmt: skip
    from .local import LocalBackend, load_local_backend, resolve_local

    opts = target._settings.local
    dtype, device = dtype or opts.get("dtype") or "float32", device or opts.get("device")
    if not shared:
        return LocalBackend(*resolve_local(target.ref.model, dtype), device or "cpu")
    return load_local_backend(target.ref.model, dtype=dtype, device=device)


class Codec:
    """How one operation's answers are stored in the cache and copied for a waiter of the same request."""

    def __init__(self, encode: Any, decode: Any):
        self.encode, self.decode = encode, decode

    def copy(self, value: Any) -> Any:
        return self.decode(self.encode(value))


def _vector_of(stored: dict) -> np.ndarray:
    import numpy as np

    return np.frombuffer(base64.b64decode(stored["b64"]), dtype=np.float32)


VECTORS = Codec(lambda v: {"b64": base64.b64encode(v.tobytes()).decode("ascii")}, _vector_of)
LOGPROBS = Codec(lambda values: {"logprobs": values}, lambda stored: list(stored["logprobs"]))
LOGIT = Codec(lambda value: {"logit": value}, lambda stored: float(stored["logit"]))


async def aembed(llm: LLM, texts: list[str], batch_size: int = 256) -> np.ndarray:
    """Embeddings (float32, one row per text), cached per text; uncached texts are sent in batches of
    `batch_size`, each one call (budgeted at its estimated prompt tokens, limited, retried) and stored
    as soon as it is answered. In a dry run a hosted model's batches are counted and answered by
    placeholder unit vectors; a local encoder computes the real ones (it costs nothing)."""
    import numpy as np

    keys = [request_key({"op": "embed", **llm.identity, "text": t}) for t in texts]
    results, missing, walked = llm.lookup.find(keys, VECTORS.decode, llm.dry_run)
    if walked:
        mark_dry_row()
    dry = llm.dry_run and not llm.is_local
    dim = next((len(v) for v in results if v is not None), 8)
    chunks = [missing[s : s + batch_size] for s in range(0, len(missing), batch_size)]
    got = await asyncio.gather(*(llm.fill([keys[i] for i in c], [None] * len(c), list(range(len(c))), VECTORS, dry,
                                          _embed_batch, llm, [texts[i] for i in c], [keys[i] for i in c], dim, dry)
                                 for c in chunks))  # fmt: skip
    for chunk, vectors in zip(chunks, got):
        for i, vec in zip(chunk, vectors):
            results[i] = vec
    if not results:
        return np.zeros((0, 0), dtype=np.float32)
    return np.stack(results).astype(np.float32, copy=False)


async def _embed_batch(llm: LLM, texts: list[str], keys: list[str], dim: int, dry: bool) -> list[np.ndarray]:
    import numpy as np

    prompt = estimate_tokens([{"content": t} for t in texts])
    if dry:  # unit vectors seeded by each text's key (the same text gets the same one)
        counted = llm.calibration.prompt_tokens(prompt)
        llm.ledger.count(counted, 0, llm.price(counted, 0), False)
        vecs = [np.random.default_rng(int(key[:8], 16)).standard_normal(dim).astype(np.float32) for key in keys]
        return [v / np.linalg.norm(v) for v in vecs]
    embedding = llm.able(EmbeddingBackend, "does not embed: use instructkit.models.embeddings.embedder('local') "
                         "for sentence embeddings, or embedder('causal:SPEC:mean') for a causal LM's hidden states")
    vectors = await llm.paid(embedding.embed, (texts,), prompt, 0)
    llm.stats.prompt_tokens += prompt  # no usage comes back: booked at the estimate
    llm.stats.cost += llm.price(prompt, 0)
    return [np.asarray(v, dtype=np.float32) for v in vectors]


async def achoice_logprobs(llm: LLM, messages: list[dict] | str, choices: list[str], *, system: str | None = None,
                           raw: bool = False) -> list[float]:  # fmt: skip
    """Log-probability of each choice as the first answer token, from the full next-token
    distribution (local backends only; hosted ones give top_logprobs through `achat`). Cached; each
    uncached read is one call under the concurrency limit (a forward pass in a thread). `raw=True`
    reads it right after the text `messages` as the tokenizer encodes it by default (its BOS
    included, no chat template): how scorers trained on a raw format (DEITA's) are read."""
    if not llm.is_local:
        raise ModelCallError(f"{llm.spec}: choice log-probabilities need a local model")
    if raw and (not isinstance(messages, str) or system):
        raise ValueError("raw=True takes the prompt text alone (no messages, no system)")
    request: dict[str, Any] = {"prompt": messages} if raw else {"messages": to_messages(messages, system)}
    # "in-context": score tokens found after the prompt (score_tokens.py), not from each choice alone.
    key = request_key({"op": "choices-raw" if raw else "choices", "tokens": "in-context", **llm.identity, **request,
                       "choices": list(choices)})  # fmt: skip
    (hit,), missing, _ = llm.lookup.find([key], LOGPROBS.decode, llm.dry_run)
    if not missing:
        return hit
    (values,) = await llm.fill([key], [None], [0], LOGPROBS, llm.dry_run, _read_choices, llm, request, choices, raw)
    return values


async def _read_choices(llm: LLM, request: dict[str, Any], choices: list[str], raw: bool) -> list[list[float]]:
    if llm.dry_run:  # a forward pass, no tokens counted either way (a dry run counts the call)
        llm.ledger.count(0, 0, 0.0, False)
        return [[0.0] * len(choices)]
    scorer = llm.able(ScoringBackend, "cannot read next-token distributions")
    if raw:
        args: tuple[Any, ...] = (scorer.next_token_logprobs, request["prompt"], choices, True)
    else:
        args = (scorer.choice_logprobs, request["messages"], choices)
    return [await llm.paid(asyncio.to_thread, args, 0, 0)]


async def aclassify(llm: LLM, inputs: list[tuple[str, str | None]]) -> list[float]:
    """The logit a classifier backend (`models.classifier`: reward models, trained quality scorers)
    gives each (text, text_pair or None), cached per input; the uncached ones are one call (the
    backend batches them). A local classifier runs even in a dry run (it costs nothing)."""
    keys = [request_key({"op": "classify", **llm.identity, "text": t, "pair": p}) for t, p in inputs]
    results, missing, _ = llm.lookup.find(keys, LOGIT.decode, llm.dry_run)
    if not missing:
        return results
    model = llm.able(ClassifierBackend, "is not a classifier")
    todo = [inputs[i] for i in missing]
    return await llm.fill(keys, results, missing, LOGIT, False, llm.paid, asyncio.to_thread, (model.classify, todo), 0, 0)


def span_scores(llm: LLM, pairs: list[tuple[str, str]], **options: Any) -> list[SpanScore]:
    """Log-probabilities of each answer's tokens given its prompt (local backends only). Synchronous
    and uncached: scorers batch rows through `SpanBatcher` and journal the results per row."""
    if not llm.is_local:
        raise ModelCallError(f"{llm.spec}: span log-likelihoods need a local model (local or hf:PATH)")
    scorer = llm.able(ScoringBackend, "cannot score spans")
    llm.stats.calls += 1
    return scorer.span_scores(pairs, **options)
