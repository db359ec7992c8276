"""In-process llama.cpp backend for GGUF models: chat and raw completion, continuously batched.

Used by `LLM("local")` and `LLM("hf:FILE.gguf")` for generation (scoring stays on transformers, see
docs/DEVELOPING.md). One worker thread owns the llama.cpp context. Requests queue to it; it keeps up
to `parallel` sequences in flight, each in its own KV-cache stream, and decodes one token of every
running sequence in a single `llama_decode` call (new prompts are read in fixed chunks, a pass each), so
concurrent callers share each pass over the weights. Prompts that start alike (one template, one
passage, many task types) share their KV cache: whole prompt chunks another sequence already holds are
copied, not recomputed (a prompt waits for a running one that will hold them soon), and the copy is
bit-identical to computing them, since every prompt is cut into chunks at the same positions. Sampling is done here, on the raw logits (the rules of `decoding`):
greedy, temperature/top-p with a per-request seed, OpenAI presence/frequency penalties, stop
strings, and a GBNF grammar built from `GenParams.json_schema` (llama.cpp's own JSON-schema
converter and grammar sampler). Log-probabilities are those of the raw model distribution.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..types import Backend, Completion, CompletionBackend, GenParams, ModelCallError, TokenLogprob, Usage
from .decoding import (
    deliver,
    find_stop,
    numpy_generator,
    penalised,
    samples,
    token_logprob,
    tokens_before_stop,
)
from .llamacpp_grammar import GrammarSampler
from .llamacpp_vocab import LlamaVocab

_BACKENDS: dict[tuple, LlamaCppBackend] = {}
_BACKENDS_LOCK = threading.Lock()
PROMPT_CHUNK = 64  # prompt tokens per pass at most, cut at fixed positions: the unit of shared KV cache
PROMPT_BUDGET = 256  # prompt tokens per step at most, so running sequences keep generating meanwhile


def load_llamacpp_backend(
    path: str | os.PathLike, parallel: int = 8, n_ctx: int = 2048, threads: int | None = None
) -> LlamaCppBackend:
    """The shared llama.cpp backend for one GGUF file (loaded once per process per settings)."""
    key = (str(Path(path).resolve()), parallel, n_ctx, threads)
    with _BACKENDS_LOCK:
        backend = _BACKENDS.get(key)
        if backend is None:
            backend = _BACKENDS[key] = LlamaCppBackend(Path(path), parallel, n_ctx, threads)
        return backend


def default_threads() -> tuple[int, int]:
    """The thread counts `ThreadChoice` picks from: half the cores this process may use, and all of
    them (llama-cpp-python's defaults for decoding and for prompts)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(8, cores // 2)), max(1, min(16, cores))


@dataclass
class ThreadChoice:
    """Threads for each pass, chosen by what they measure. llama.cpp's threads meet at a barrier after
    every operation: on 2 quiet cores 2 threads read prompts 1.8x and decode 6 sequences 1.7x faster than
    one; on 2 cores busy with other work they are 7x slower (prompts 72 vs 10 tok/s; one sequence 38 vs
    3), as one descheduled thread stalls the other. Each kind and size of pass keeps a moving average of
    seconds per token per candidate; the faster one serves, and the other is tried again after `explore`
    passes, an interval that doubles each time it loses (a try under load costs one slow pass), so a
    change of load is noticed. Results do not depend on the thread count (tested), only the speed."""

    candidates: tuple[int, ...]
    explore: int = 16
    seconds: dict[tuple[str, int], float] = field(default_factory=dict)
    interval: dict[str, int] = field(default_factory=dict)
    since: dict[str, int] = field(default_factory=dict)
    trying: dict[str, int] = field(default_factory=dict)

    def pick(self, kind: str) -> int:
        untried = [c for c in self.candidates if (kind, c) not in self.seconds]
        if untried:
            return untried[0]
        best = min(self.candidates, key=lambda c: self.seconds[(kind, c)])
        self.since[kind] = self.since.get(kind, 0) + 1
        if self.since[kind] >= self.interval.get(kind, self.explore):
            self.since[kind] = 0
            self.trying[kind] = next(c for c in self.candidates if c != best)
            return self.trying[kind]
        return best

    def record(self, kind: str, threads: int, per_token: float) -> None:
        old = self.seconds.get((kind, threads))
        rival = min(self.seconds.get((kind, c), float("inf")) for c in self.candidates if c != threads)
        tried = self.trying.pop(kind, None) == threads  # its average is old news: the try replaces it
        self.seconds[(kind, threads)] = per_token if old is None or tried else 0.7 * old + 0.3 * per_token
        if tried:  # while it loses, wait longer before the next try
            self.interval[kind] = min(256, 2 * self.interval.get(kind, self.explore)) if per_token > rival else self.explore


@dataclass
class _Job:
    """One sequence: its prompt, its options, where its answer goes, and its decoding state."""

    ids: list[int]
    params: GenParams
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    seq: int = -1
    fed: int = 0  # prompt tokens already in the KV cache
    out: list[int] = field(default_factory=list)
    pieces: list[bytes] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    counts: dict[int, int] = field(default_factory=dict)
    rng: np.random.Generator | None = None
    grammar: Any = None  # llama_sampler pointer, freed when the job ends
    finish: str = ""
    stop_at: int = -1
    error: ModelCallError | None = None  # set when this job alone failed (its grammar, say)

    @property
    def pos(self) -> int:
        return self.fed + len(self.out)


class LlamaCppBackend(Backend, CompletionBackend):
    """A GGUF model in llama.cpp, in this process. `chat` and `complete` are async and batched."""

    kind = "llama.cpp"
    supports_n = False
    supports_json_schema = True
    supports_penalties = True  # OpenAI's presence/frequency definitions, applied to the logits here

    def __init__(self, path: Path, parallel: int = 8, n_ctx: int = 2048, threads: int | None = None):
        import llama_cpp
        from llama_cpp._logger import set_verbose

        from ..local_files import gguf_model_id

        set_verbose(False)  # llama.cpp's own log goes nowhere but errors
        self._ll = ll = llama_cpp
        self.path = Path(path)
        self.model_id = f"{gguf_model_id(self.path)}:llama.cpp"
        ll.llama_backend_init()
        self._model = ll.llama_model_load_from_file(str(self.path).encode(), ll.llama_model_default_params())
        if not self._model:
            raise ModelCallError(f"llama.cpp could not load {self.path}", retryable=False)
        self.vocab = LlamaVocab(ll, self._model, self.path.name)
        self._vocab, self.n_vocab = self.vocab.vocab, self.vocab.n_vocab
        n_train = ll.llama_model_n_ctx_train(self._model)
        self.parallel = max(1, parallel)
        self.threads = (threads, threads) if threads else default_threads()
        cp = ll.llama_context_default_params()
        cp.n_seq_max = self.parallel
        cp.n_ctx = min(n_ctx, n_train) * self.parallel
        cp.kv_unified = False  # one KV stream per sequence: attention never spans other sequences
        cp.flash_attn_type = ll.LLAMA_FLASH_ATTN_TYPE_DISABLED  # FA on CPU rounds through f16 (FLASH_ATTN note)
        cp.n_batch = cp.n_ubatch = 512
        cp.n_threads, cp.n_threads_batch = self.threads[0], self.threads[0]  # then as ThreadChoice measures
        self._choice = ThreadChoice(tuple(sorted(set(self.threads))))
        self._pass_threads = self.threads[0]
        self._ctx = ll.llama_init_from_model(self._model, cp)
        if not self._ctx:
            ll.llama_model_free(self._model)
            raise ModelCallError(f"llama.cpp could not create a context for {self.path}", retryable=False)
        self.n_ctx_seq = ll.llama_n_ctx_seq(self._ctx)
        self.n_batch = 512
        self._memory = ll.llama_get_memory(self._ctx)
        self._batch = ll.llama_batch_init(self.n_batch, 0, 1)
        self._grammar = GrammarSampler(ll, self._vocab, self.n_vocab)
        self._held: list[list[int]] = [[] for _ in range(self.parallel)]  # whole prompt chunks each slot's KV holds
        self.shared_prompt_tokens = 0  # prompt tokens copied from another sequence's KV, not computed
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._closed = False

    # ----- text <-> tokens (`LlamaVocab`) --------------------------------------------------------
    def tokenize(self, text: str, add_special: bool = False) -> list[int]:
        return self.vocab.tokenize(text, add_special)

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        return self.vocab.tokenize(self.vocab.prompt_text(messages))

    # ----- requests --------------------------------------------------------------------------
    async def chat(self, messages: list[dict], params: GenParams, n: int = 1) -> list[Completion]:
        """`n` completions of a chat (seeds seed, seed+1, ...), batched with every concurrent request."""
        return await self._submit(self.prompt_ids(messages), params, n)

    async def complete(self, prompt: str, params: GenParams, n: int = 1) -> list[Completion]:
        """`n` continuations of a raw prompt: no chat template; BOS added where the model wants one."""
        return await self._submit(self.vocab.tokenize(prompt, add_special=self.vocab.add_bos), params, n)

    async def _submit(self, ids: list[int], params: GenParams, n: int) -> list[Completion]:
        if not ids:
            raise ModelCallError("empty prompt", retryable=False)
        if len(ids) >= self.n_ctx_seq:
            raise ModelCallError(
                f"prompt of {len(ids)} tokens does not fit the context of {self.n_ctx_seq} tokens per sequence "
                "(model option n_ctx)", retryable=False,
            )
        grammar = self._grammar.text(params.json_schema) if params.json_schema else None
        loop = asyncio.get_running_loop()
        self._ensure_worker()
        futures = []
        for p in samples(params, n):
            job = _Job(ids, p, loop, loop.create_future())
            if p.temperature > 0:
                job.rng = numpy_generator(p.seed)
            if grammar is not None:
                job.grammar = self._grammar.sampler(grammar)
            self._queue.put(job)
            futures.append(job.future)
        return list(await asyncio.gather(*futures))

    def _ensure_worker(self) -> None:
        with _BACKENDS_LOCK:
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._serve, name="instructkit-llamacpp", daemon=True)
                self._worker.start()

    # ----- the decoding loop (worker thread) ---------------------------------------------------
    def _serve(self) -> None:
        free = list(range(self.parallel))[::-1]
        running: list[_Job] = []
        waiting: list[_Job] = []
        while True:
            if not running and not waiting:
                job = self._queue.get()
                if job is None:
                    return
                waiting.append(job)
            while True:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    return
                waiting.append(job)
            self._admit(waiting, running, free)
            try:
                self._step(running)
            except Exception as exc:  # a failed decode fails the jobs in it, never the worker
                err = ModelCallError(f"llama.cpp generation failed: {exc!r}", retryable=False)
                for job in running:
                    self._finish(job, err)
                    free.append(job.seq)
                running = []
                self._held = [[] for _ in range(self.parallel)]
                self._ll.llama_memory_clear(self._memory, True)
                continue
            for job in [j for j in running if j.finish]:
                running.remove(job)
                free.append(job.seq)
                self._finish(job, job.error or self._completion(job))

    # ----- shared prompt chunks ----------------------------------------------------------------------
    @staticmethod
    def _shared(held: list[int], ids: list[int]) -> int:
        """Leading tokens of `ids` in whole chunks that `held` starts with too (compared a chunk at a
        time: this runs for every waiting prompt at every step a slot is free)."""
        n, limit = 0, min(len(held), len(ids)) // PROMPT_CHUNK * PROMPT_CHUNK
        while n < limit and held[n : n + PROMPT_CHUNK] == ids[n : n + PROMPT_CHUNK]:
            n += PROMPT_CHUNK
        return n

    def _admit(self, waiting: list[_Job], running: list[_Job], free: list[int]) -> None:
        """Give free slots to waiting jobs in order, each starting after the most whole prompt chunks
        some slot holds (its own, or copied from another). A job whose prompt a running job will soon
        hold more of waits for it rather than compute the same chunks again."""
        for job in list(waiting):
            if not free:
                return
            last = (len(job.ids) - 1) // PROMPT_CHUNK * PROMPT_CHUNK  # the last prompt token is always fed
            have = {seq: min(self._shared(self._held[seq], job.ids), last) for seq in range(self.parallel)}
            soon = max((min(self._shared(r.ids, job.ids), last) for r in running if r.fed < len(r.ids)), default=0)
            donor = max(have, key=lambda seq: (have[seq], seq in free))  # ties: a free slot (no copy)
            reuse = have[donor]
            if soon > reuse:
                continue  # a running prompt is computing these chunks now
            waiting.remove(job)
            # in place where the donor is free, else the free slot holding least (the others may serve later)
            seq = donor if reuse and donor in free else min(free, key=lambda s: len(self._held[s]))
            free.remove(seq)
            if reuse and donor != seq:
                self._copy_sequence(donor, seq)
            self._ll.llama_memory_seq_rm(self._memory, seq, reuse if reuse else -1, -1)
            self._held[seq] = job.ids[:reuse]
            job.seq, job.fed = seq, reuse
            self.shared_prompt_tokens += reuse
            running.append(job)

    def _copy_sequence(self, src: int, dst: int) -> None:
        """Sequence `dst`'s KV cache := `src`'s (llama.cpp's state of one sequence, copied exactly)."""
        ll = self._ll
        size = ll.llama_state_seq_get_size(self._ctx, src)
        buf = (ctypes.c_uint8 * size)()
        if ll.llama_state_seq_get_data(self._ctx, buf, size, src) != size:
            raise RuntimeError("llama.cpp could not read a sequence's cache")
        ll.llama_memory_seq_rm(self._memory, dst, -1, -1)
        if ll.llama_state_seq_set_data(self._ctx, buf, size, dst) != size:
            raise RuntimeError("llama.cpp could not copy a sequence's cache")

    def _step(self, running: list[_Job]) -> None:
        """The next token of every generating job in one pass, then prompt chunks, each in a pass of its
        own, up to PROMPT_BUDGET tokens. Chunks end at fixed multiples of PROMPT_CHUNK and never share a
        pass: llama.cpp's numbers for a position depend on which positions share its pass, so a chunk's
        cache then depends on its tokens alone (whatever else is in flight), and prompts can share it."""
        decoding = [job for job in running if job.fed == len(job.ids) and job.out]
        if decoding:
            self._decode([(job.out[-1], job.pos - 1, job.seq, True) for job in decoding], "decode")
            for row, job in enumerate(decoding):
                self._advance_row(job, row)
        budget = PROMPT_BUDGET
        for job in running:
            while job.fed < len(job.ids) and budget > 0:
                start, end = job.fed, min(len(job.ids), (job.fed // PROMPT_CHUNK + 1) * PROMPT_CHUNK)
                rows = [(job.ids[pos], pos, job.seq, pos == len(job.ids) - 1) for pos in range(start, end)]
                self._decode(rows, "prompt")
                job.fed, budget = end, budget - (end - start)
                if end % PROMPT_CHUNK == 0:  # a whole chunk: other prompts may start from it
                    self._held[job.seq] = job.ids[:end]
                if end == len(job.ids):
                    self._advance_row(job, end - start - 1)

    def _decode(self, tokens: list[tuple[int, int, int, bool]], kind: str) -> None:
        """One llama_decode of (token, position, sequence, wants logits) rows, on the thread count
        `ThreadChoice` picks for passes of its kind and size; its time is recorded."""
        batch, ll = self._batch, self._ll
        for i, (tok, pos, seq, want) in enumerate(tokens):
            batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = tok, pos, 1, want
            batch.seq_id[i][0] = seq
        batch.n_tokens = len(tokens)
        timed = len(self._choice.candidates) > 1
        if timed:
            size = f"{kind}:{len(tokens) if kind == 'decode' else (len(tokens) + 15) // 16}"
            threads = self._choice.pick(size)
            if threads != self._pass_threads:
                ll.llama_set_n_threads(self._ctx, threads, threads)
                self._pass_threads = threads
            start = time.perf_counter()
        rc = ll.llama_decode(self._ctx, batch)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")
        if timed:
            self._choice.record(size, threads, (time.perf_counter() - start) / len(tokens))

    def _advance_row(self, job: _Job, row: int) -> None:
        """`_advance` on row `row` of the last pass's logits; a failure ends that job only."""
        logits = np.ctypeslib.as_array(self._ll.llama_get_logits_ith(self._ctx, row), shape=(self.n_vocab,))
        try:
            self._advance(job, logits)
        except Exception as exc:
            job.error = ModelCallError(f"llama.cpp generation failed: {exc}", retryable=False)
            job.finish = "error"

    def _advance(self, job: _Job, logits: np.ndarray) -> None:
        """Choose the job's next token from `logits` and decide whether it has finished."""
        p = job.params
        want_lp = p.logprobs or p.top_logprobs > 0
        tok = self._grammar.choose(job.grammar, penalised(logits, job.counts, p), p, job.rng)
        if self._ll.llama_vocab_is_eog(self._vocab, tok):
            job.finish = "stop"
            return
        job.out.append(tok)
        job.pieces.append(self.vocab.piece(tok))
        job.counts[tok] = job.counts.get(tok, 0) + 1
        if want_lp:
            job.logprobs.append(token_logprob(logits, tok, p.top_logprobs, self.vocab.text))
        if p.stop:
            cut = find_stop(b"".join(job.pieces).decode("utf-8", "replace"), p.stop)
            if cut >= 0:
                job.finish, job.stop_at = "stop", cut
                return
        if len(job.out) >= p.max_tokens or job.pos >= self.n_ctx_seq:
            job.finish = "length"

    def _completion(self, job: _Job) -> Completion:
        text = b"".join(job.pieces).decode("utf-8", "replace")
        out, lps = job.out, job.logprobs
        if job.stop_at >= 0:
            text = text[: job.stop_at]
            out = out[: tokens_before_stop(len(out), job.stop_at, lambda k: b"".join(job.pieces[:k]).decode("utf-8", "replace"))]
        want_lp = job.params.logprobs or job.params.top_logprobs > 0
        return Completion(
            text, job.finish or "length", lps[: len(out)] if want_lp else None, Usage(len(job.ids), len(out))
        )

    def _finish(self, job: _Job, result: Completion | BaseException) -> None:
        if job.seq >= 0:  # keep the whole prompt chunks for the prompts that start alike
            held = self._held[job.seq]
            self._ll.llama_memory_seq_rm(self._memory, job.seq, len(held) if held else -1, -1)
        if job.grammar is not None:
            self._ll.llama_sampler_free(job.grammar)
            job.grammar = None
        deliver(job.loop, job.future, result)

    async def aclose(self) -> None:
        """The model stays loaded for the process (shared); nothing per caller to release."""
