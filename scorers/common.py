"""Shared machinery of the local-model scorers: backend choice, batched span scoring, resumable rows.

Scorers run row by row through `ctx.map` (one journal entry per row, keyed by model, record and
template), but the model work is batched: every in-flight row hands its (prompt ids, answer ids)
sequences to a `SpanBatcher`, which scores them all in one length-sorted `span_scores` call. Rows are
fed to `ctx.map` sorted by length, so each flush holds sequences of similar length.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from instructkit.run.runner import RowResult, RunContext
from instructkit.shared.rows import finish, triplet

__all__ = [
    "LocalModelOptions",
    "model_options",
    "Batcher",
    "SpanBatcher",
    "auto_device",
    "local_backend",
    "map_sorted",
    "mean_loss",
    "row_items",
    "finish",
    "triplet",
]


def auto_device(device: str | None = None) -> str:
    """`device` as given, else "cuda" when a GPU is visible, else "cpu"."""
    if device:
        return device
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:  # pragma: no cover - torch is required by the local extra
        return "cpu"


@dataclass
class LocalModelOptions:
    """The model options every local scorer shares; their options dataclasses inherit them."""

    model: str | None = None  # local | local:bf16 | hf:PATH; default: the run's --model
    dtype: str = "float32"  # float32 (exact) | bfloat16 (fast)
    device: str | None = None  # default: cuda when present
    batch_size: int = 64  # rows per forward pass at most
    token_budget: int = 0  # padded tokens per forward at most (0: 512 on CPU, 32768 on GPU)


def model_options(opts: LocalModelOptions) -> dict[str, Any]:
    """`opts`' shared model options, to hand to another scorer's options (`PerplexityOptions(**...)`)."""
    return {f.name: getattr(opts, f.name) for f in dataclasses.fields(LocalModelOptions)}


def local_backend(ctx: RunContext, opts: LocalModelOptions) -> Any:
    """The local backend for `opts.model` (a `local`/`hf:PATH` spec), else for the run's `--model`."""
    from instructkit.models.local import load_local_backend

    spec = opts.model
    if not spec:
        if ctx.llm is None or not ctx.llm.is_local:
            raise ValueError(f"{ctx.method or 'this scorer'} needs a local model: --model local or hf:PATH")
        spec = ctx.llm.ref.model
    return load_local_backend(spec, dtype=opts.dtype, device=auto_device(opts.device))


def mean_loss(token_logprobs: Sequence[float]) -> float | None:
    """Mean token cross-entropy (nats) of a span, None when the span is empty."""
    if not token_logprobs:
        return None
    return -math.fsum(token_logprobs) / len(token_logprobs)


class Batcher:
    """Collects the requests of concurrent rows and runs them through one `call(flat_items)`: a plain
    function in a thread, or an async one (a model call through `LLM`) awaited."""

    def __init__(self, call: Callable[[list[Any]], list[Any]] | Callable[[list[Any]], Awaitable[list[Any]]]):
        self.call = call
        self._pending: list[tuple[list[Any], asyncio.Future]] = []
        self._flush: asyncio.Task | None = None

    async def run(self, items: list[Any]) -> list[Any]:
        """`call`'s results for `items`, computed together with every other row's pending items."""
        if not items:
            return []
        fut = asyncio.get_running_loop().create_future()
        self._pending.append((items, fut))
        if self._flush is None:
            self._flush = asyncio.ensure_future(self._run())
        return await fut

    async def _run(self) -> None:
        quiet = 0
        seen = -1
        while quiet < 3:  # let every runnable row enqueue before the flush
            await asyncio.sleep(0)
            quiet = quiet + 1 if len(self._pending) == seen else 0
            seen = len(self._pending)
        batch, self._pending, self._flush = self._pending, [], None
        flat = [x for items, _ in batch for x in items]
        try:
            if inspect.iscoroutinefunction(self.call):  # a model call (`LLM.aclassify`): already async
                results = await self.call(flat)
            else:
                results = await asyncio.to_thread(self.call, flat)
        except Exception as exc:  # every row of the flush gets the error
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return
        at = 0
        for items, fut in batch:
            if not fut.done():
                fut.set_result(results[at : at + len(items)])
            at += len(items)


class SpanBatcher(Batcher):
    """Span log-probs of pre-tokenized (prompt ids, answer ids) pairs, batched across rows."""

    def __init__(self, backend: Any, opts: LocalModelOptions):
        limits = {"batch_size": opts.batch_size, "token_budget": opts.token_budget or None}
        super().__init__(lambda flat: backend.span_scores(flat, **limits))
        self.backend = backend

    async def score(self, pairs: list[tuple[list[int], list[int]]]) -> list[Any]:
        return await self.run(pairs)


def row_items(records: list[dict], **extra: Any) -> tuple[list[dict], list[int]]:
    """(items, lengths): each record's instruction/input/output plus `extra` (model and template ids,
    so the journal key is per model, record and template), and a length to sort rows by."""
    items = []
    for rec in records:
        ins, inp, outp = triplet(rec)
        items.append({"instruction": ins, "input": inp, "output": outp, **extra})
    return items, [len(it["instruction"]) + len(it["input"]) + len(it["output"]) for it in items]


SPEED_ONLY = ("batch_size", "token_budget")  # options that never change a score, kept out of journal keys


def map_sorted(
    ctx: RunContext,
    items: list[Any],
    fn: Callable[[Any], Awaitable[Any]],
    stage: str,
    lengths: Sequence[int],
    in_flight: int = 256,
    key_options: Any = None,
) -> list[RowResult]:
    """`ctx.map` over items fed in ascending `lengths` (results back in input order), with enough rows
    in flight that each batcher flush is a real batch. `key_options`, when given, replaces the run's
    options in the journal key (leave out options that only select rows, so changing them re-uses scores).
    Options that change only speed (`SPEED_ONLY`) never enter the key."""
    order = sorted(range(len(items)), key=lambda i: (lengths[i], i))
    run_ctx = dataclasses.replace(ctx, concurrency=max(ctx.concurrency, in_flight))
    options = key_options if key_options is not None else ctx.options
    if dataclasses.is_dataclass(options):
        options = dataclasses.asdict(options)
    if isinstance(options, dict):
        options = {k: v for k, v in options.items() if k not in SPEED_ONLY}
    run_ctx.options = options
    results = run_ctx.map([items[i] for i in order], fn, stage=stage)
    out: list[RowResult | None] = [None] * len(items)
    for i, res in zip(order, results):
        out[i] = res
    return out  # type: ignore[return-value]
