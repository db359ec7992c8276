"""The transformers engine's generation: concurrent requests queued to one worker thread, which takes
everything pending, groups it by sampling parameters, sorts it by prompt length and generates each
group as a left-padded batch with a shared KV cache (finished rows leave the batch). Sampling, seeds,
penalties and stop strings follow `decoding`; JSON Schema constraints are llguidance's token masks."""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ..types import Completion, GenParams, ModelCallError, TokenLogprob, Usage
from .decoding import (
    apply_penalties,
    choose_rows,
    deliver,
    find_stop,
    samples,
    tokens_before_stop,
    torch_generator,
)


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


class BatchGenerator:
    """Micro-batched generation on one transformers engine (`LocalBackend`): its model, tokenizer and
    compute lock, one worker thread for the queue."""

    def __init__(self, engine: Any):
        self.engine = engine
        self._queue: queue.Queue[_Request] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._worker_lock = threading.Lock()
        self._token_text: dict[int, str] = {}
        self._grammar_tokenizer: Any = None  # llguidance's view of the tokenizer, built on first use

    async def generate(self, ids: list[int], params: GenParams, n: int = 1) -> list[Completion]:
        """`n` completions (seeds seed, seed+1, ...); queued with concurrent calls into shared batches."""
        loop = asyncio.get_running_loop()
        self._ensure_worker()
        futures = []
        for p in samples(params, n):
            fut = loop.create_future()
            self._queue.put(_Request(ids, p, loop, fut))
            futures.append(fut)
        return list(await asyncio.gather(*futures))

    def _ensure_worker(self) -> None:
        with self._worker_lock:
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
                for start in range(0, len(group), self.engine.batch_size):
                    batch = group[start : start + self.engine.batch_size]
                    try:
                        results: list[Any] = self.generate_batch(
                            [r.ids for r in batch], [r.params for r in batch]
                        )
                    except Exception as exc:  # hand the failure to every caller of this batch
                        err = ModelCallError(f"local generation failed: {exc!r}", retryable=False)
                        results = [err] * len(batch)
                    for r, res in zip(batch, results):
                        deliver(r.loop, r.future, res)

    def generate_batch(self, prompts: list[list[int]], params: list[GenParams]) -> list[Completion]:
        """Generate for left-padded `prompts` sharing temperature/top_p/logprobs; per-row max_tokens,
        stop strings, seeds and penalties. Logprobs are log_softmax of the raw model logits (true model
        logprobs, before penalties)."""
        import torch

        p0 = params[0]
        rows = len(prompts)
        width = max(len(p) for p in prompts)
        ids = torch.full((rows, width), self.engine.pad_id, dtype=torch.long)
        mask = torch.zeros((rows, width), dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            mask[i, width - len(p) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        gens = [torch_generator(p.seed) for p in params] if p0.temperature > 0 else []
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
        with self.engine.compute, torch.inference_mode():
            from transformers import DynamicCache

            from ..span_scoring import with_cache

            cache = DynamicCache()
            dev = self.engine.device
            out = self.engine.model(
                input_ids=ids.to(dev),
                attention_mask=mask.to(dev),
                position_ids=positions.to(dev),
                logits_to_keep=1,
                **with_cache(self.engine.model, cache),
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
                nxt = choose_rows(chosen_from, p0, [gens[r] for r in active] if gens else [])
                logp = torch.log_softmax(logits, dim=-1) if want_lp else None
                keep = []
                for j, r in enumerate(active):
                    tok = int(nxt[j])
                    if penalised:
                        counts[r, tok] += 1
                    if tok in self.engine.eos_ids:
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
                        and (cut := find_stop(self.engine.tokenizer.decode(out_ids[r]), params[r].stop)) >= 0
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
                out = self.engine.model(
                    input_ids=nxt.view(-1, 1).to(dev),
                    attention_mask=mask.to(dev),
                    position_ids=last_pos.view(-1, 1).to(dev),
                    **with_cache(self.engine.model, cache),
                )
        return [
            self._completion(
                prompts[r], out_ids[r], lps[r] if want_lp else None, finish[r] or "length", stop_at[r]
            )
            for r in range(rows)
        ]

    def _json_matcher(self, schema: dict) -> Any:
        """A fresh llguidance matcher for one constrained row (compact JSON, as json.dumps writes it)."""
        if not has_llguidance():
            raise ModelCallError(
                "JSON Schema constrained generation on a transformers model needs llguidance "
                "(pip install 'instructkit[local]' or pip install llguidance)",
                retryable=False,
            )
        import llguidance
        import llguidance.hf

        if self._grammar_tokenizer is None:
            self._grammar_tokenizer = llguidance.hf.from_tokenizer(
                self.engine.tokenizer, n_vocab=self.engine.model.config.vocab_size, eos_token=sorted(self.engine.eos_ids)
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

    def _text_of(self, tok: int) -> str:
        text = self._token_text.get(tok)
        if text is None:
            text = self._token_text[tok] = self.engine.tokenizer.decode([tok])
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
        decode = self.engine.tokenizer.decode
        text = decode(ids, skip_special_tokens=True)
        if stop_at >= 0:
            text = text[:stop_at]
            ids = ids[: tokens_before_stop(len(ids), stop_at, lambda k: decode(ids[:k], skip_special_tokens=True))]
            if lps is not None:
                lps = lps[: len(ids)]
        return Completion(text, finish, lps, Usage(len(prompt), len(ids)), cost=0.0)


@functools.cache
def has_llguidance() -> bool:
    """JSON Schema constrained generation on transformers needs llguidance (the `local` extra)."""
    return importlib.util.find_spec("llguidance") is not None
