"""Scale-out on Ray Data: judge, score and embed steps over a pool of actors that hold the model.

Records become a Ray Dataset (row index + pickled record); `map_batches` runs them over an actor
pool (`actors` actors, `num_gpus` each). Every actor builds the model once from `LLM.config` (a `ModelConfig`) and
runs the method's own function on each batch with a `RunContext` that shares the driver's response
cache directory and work dir; each actor appends to its own journal (`X.journal.<actor>.jsonl`) and
every run reads all journals of a stage, so the cache and resume work as in one process. Outputs
come back in input order and are identical to a single-process run for row-wise methods (each row's
result depends only on that row). `ray.init()` joins `RAY_ADDRESS` when set, else starts a local
instance. API keys are never shipped: actors read them from their own environment.

    from instructkit.run.ray_engine import run_on_ray, ray_embed
    out = run_on_ray(alpagasus, records, ctx, actors=4, num_gpus=0)
    vecs = ray_embed(texts, "local", actors=2)
"""

from __future__ import annotations

import logging
import os
import pickle
import sys
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from ..models.config import ModelConfig
from .runner import RunContext, RunStats

SUMMED_RUN_FIELDS = ("rows", "ok", "failed", "reused", "pending")


def ray_init(**init_args: Any) -> Any:
    """`ray.init()` once: the cluster at RAY_ADDRESS when set, else a local instance; returns `ray`."""
    import ray

    if not ray.is_initialized():
        args: dict[str, Any] = {"ignore_reinit_error": True, "logging_level": "ERROR", "log_to_driver": False}
        if not os.environ.get("RAY_ADDRESS"):
            args["include_dashboard"] = False
        ray.init(**{**args, **init_args})
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # our own summary says what ran; errors raise
    return ray


def _pickle_by_value(fn: Callable) -> None:
    """Ship functions from modules the workers cannot import (tests, notebooks) by value."""
    import ray.cloudpickle as cloudpickle

    module = sys.modules.get(getattr(fn, "__module__", "") or "")
    if module is None or module.__name__ == "__main__" or module.__name__.startswith("instructkit"):
        return
    spec = getattr(module, "__spec__", None)
    if spec is None or spec.origin is None or "site-packages" not in spec.origin:
        cloudpickle.register_pickle_by_value(module)


def _actor_llm(config: ModelConfig | None, num_gpus: float) -> Any:
    if config is None:
        return None
    from ..models import LLM

    if num_gpus and config.model.startswith(("local", "hf:")) and config.device is None:
        config = config.replace(device="cuda")
    return LLM(config)


class _MethodActor:
    """Holds the model; runs the method's function on one batch of rows at a time."""

    def __init__(self, fn: Callable, llm_config: ModelConfig | None, ctx_fields: dict[str, Any], num_gpus: float):
        import ray

        self.fn = fn
        self.llm = _actor_llm(llm_config, num_gpus)
        self.ctx_fields = ctx_fields
        self.tag = "ray-" + ray.get_runtime_context().get_actor_id()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        rows = sorted(zip(batch["i"].tolist(), batch["rec"]), key=lambda r: r[0])
        records = [pickle.loads(raw) for _, raw in rows]
        before = self.llm.stats.as_dict() if self.llm is not None else {}
        ctx = RunContext(llm=self.llm, journal_tag=self.tag, progress=False, **self.ctx_fields)
        out = self.fn(records, ctx)
        after = self.llm.stats.as_dict() if self.llm is not None else {}
        calls = {k: v - before.get(k, 0) for k, v in after.items()}
        payload = pickle.dumps((out, ctx.stats.as_dict(), calls, ctx.extras))
        return {"i": [rows[0][0] if rows else -1], "out": [payload]}


def run_on_ray(
    method_fn: Callable[[list[dict], RunContext], list[dict]],
    records: list[dict],
    ctx: RunContext,
    *,
    actors: int = 2,
    num_gpus: float = 0.0,
    num_cpus: float = 1.0,
    batch_size: int = 64,
) -> list[dict]:
    """Run a registered method's function over `records` on a Ray actor pool; outputs in input order.

    Each actor rebuilds `ctx.llm` from its `config` (same cache dir; `max_cost`, `rpm` and `tpm` split
    evenly between actors) and journals under `ctx.work_dir` with its own tag. Run and call statistics
    are summed into `ctx.stats` and `ctx.llm.stats`.
    """
    if not records:
        return method_fn(records, ctx)
    if ctx.llm is not None and ctx.llm.dry_run:
        return method_fn(records, ctx)  # estimates need no cluster
    ray = ray_init()
    _pickle_by_value(method_fn)
    ctx_fields = {"options": ctx.options, "method": ctx.method, "concurrency": ctx.concurrency,
                  "random_state": ctx.random_state, "extras": dict(ctx.extras),
                  "work_dir": Path(ctx.work_dir).resolve() if ctx.work_dir is not None else None}
    llm_config = _per_actor(ctx.llm, actors) if ctx.llm is not None else None
    rows = [{"i": i, "rec": pickle.dumps(r)} for i, r in enumerate(records)]
    args = (method_fn, llm_config, ctx_fields, num_gpus)
    parts = _map_on_actors(ray, rows, _MethodActor, args, actors, num_gpus, num_cpus, batch_size)
    out: list[dict] = []
    for part in parts:
        rows, run, calls, extras = pickle.loads(part["out"])
        out.extend(rows)
        _merge_stats(ctx, run, calls)
        for key, value in extras.items():
            if key not in ctx.extras and not key.endswith("_summary"):  # a method's summary counts one batch
                ctx.extras[key] = value
    return out


def _map_on_actors(ray: Any, rows: list[dict], actor: type, args: tuple, actors: int, num_gpus: float,
                   num_cpus: float, batch_size: int) -> list[dict]:
    """`rows` as a Dataset, `map_batches` over a pool of `actors` instances of `actor(*args)`; the output
    rows sorted by their "i" column (the index of the first input row they came from)."""
    ds = ray.data.from_items(rows).map_batches(
        actor,
        fn_constructor_args=args,
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_gpus=num_gpus or None,
        num_cpus=num_cpus,
    )
    return sorted(ds.take_all(), key=lambda row: int(row["i"]))


def _per_actor(llm: Any, actors: int) -> ModelConfig:
    """The model's config for one actor: budget (less what the driver spent) and rate limits split evenly."""
    config: ModelConfig = llm.config
    paths = _absolute_paths({"spec": config.model, "cache_dir": config.cache_dir})
    shares = {name: getattr(config, name) / actors for name in ("rpm", "tpm") if getattr(config, name)}
    if config.max_cost is not None:
        shares["max_cost"] = max(0.0, config.max_cost - llm.stats.cost) / actors
    return config.replace(model=paths["spec"], cache_dir=paths["cache_dir"], **shares)


def _absolute_paths(options: dict[str, Any]) -> dict[str, Any]:
    """Relative paths made absolute (Ray workers do not run in this process's working directory)."""
    if options.get("cache_dir"):
        options["cache_dir"] = str(Path(options["cache_dir"]).resolve())
    spec = str(options.get("spec") or "")
    if spec.startswith("hf:") and Path(spec[3:]).exists():
        options["spec"] = "hf:" + str(Path(spec[3:]).resolve())
    return options


def _merge_stats(ctx: RunContext, run: dict[str, Any], calls: dict[str, Any]) -> None:
    stats: RunStats = ctx.stats
    for name in SUMMED_RUN_FIELDS:
        setattr(stats, name, getattr(stats, name) + int(run.get(name, 0)))
    stats.failures.extend(run.get("failures") or [])
    stats.stopped_reason = stats.stopped_reason or run.get("stopped_reason")
    if ctx.llm is not None:
        llm_stats = ctx.llm.stats
        for f in fields(llm_stats):
            if isinstance(calls.get(f.name), (int, float)):
                setattr(llm_stats, f.name, getattr(llm_stats, f.name) + calls[f.name])


class _EmbedActor:
    """Holds an embedder; embeds one batch of texts at a time (through the per-text cache)."""

    def __init__(self, spec: str, options: dict[str, Any], num_gpus: float):
        from ..models.embeddings import LOCAL_ENCODER_SPECS, embedder

        if num_gpus and (spec in LOCAL_ENCODER_SPECS or spec.startswith(("hf:", "causal:"))):
            options = {"device": "cuda", **options}
        self.model = embedder(spec, **options)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        texts = [str(t) for t in batch["text"]]
        vecs = self.model.embed(texts) if texts else np.zeros((0, 0), dtype=np.float32)
        return {"i": batch["i"].tolist(), "vec": [np.asarray(v, dtype=np.float32).tobytes() for v in vecs]}


def ray_embed(
    texts: list[str],
    spec: str = "local",
    *,
    actors: int = 2,
    num_gpus: float = 0.0,
    num_cpus: float = 1.0,
    batch_size: int = 256,
    **embedder_options: Any,
) -> np.ndarray:
    """float32 [len(texts), d] from `embedder(spec)` on a Ray actor pool, in input order
    (`embedder_options`, e.g. cache_dir, go to each actor's `embedder`)."""
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    ray = ray_init()
    rows = [{"i": i, "text": t} for i, t in enumerate(texts)]
    resolved = _absolute_paths({"spec": spec, **embedder_options})
    args = (resolved.pop("spec"), resolved, num_gpus)
    rows = _map_on_actors(ray, rows, _EmbedActor, args, actors, num_gpus, num_cpus, batch_size)
    return np.stack([np.frombuffer(r["vec"], dtype=np.float32) for r in rows])
