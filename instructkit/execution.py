"""How a method step executes: in this process, through a provider's Batch API, or on Ray.

The CLI (`--batch`, `--engine ray`) and pipelines (`batch: true`, `engine: ray`) both come here,
so a step gives the same output, cache entries and journals whichever way it ran.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .registry import MethodInfo
from .runner import RunContext

ENGINES = ("local", "ray")
RAY_KINDS = ("judge", "score")
BATCH_KINDS = ("generate", "judge", "score")


@dataclass
class Execution:
    """Execution choices for one step (none of them changes its results)."""

    batch: bool = False
    poll_s: float = 30.0
    engine: str = "local"
    ray: dict[str, Any] = field(default_factory=dict)  # run_on_ray options: actors, num_gpus, num_cpus, batch_size

    def check(self, info: MethodInfo) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {self.engine!r}")
        if self.batch and self.engine != "local":
            raise ValueError("--batch and --engine ray do not combine: batch mode runs in one process")
        if self.batch and info.kind not in BATCH_KINDS:
            raise ValueError(f"--batch applies to {', '.join(BATCH_KINDS)} methods, not {info.kind}")
        if self.engine == "ray" and info.kind not in RAY_KINDS:
            raise ValueError(f"--engine ray runs {' and '.join(RAY_KINDS)} methods (and embed), not {info.kind}")


def execute(info: MethodInfo, records: list[dict], ctx: RunContext, how: Execution | None = None) -> list[dict]:
    """Run a registered method on `records` as `how` says (default: in this process)."""
    how = how or Execution()
    how.check(info)
    if how.batch:
        from .batch import run_batched

        return run_batched(info.func, records, ctx, poll_s=how.poll_s)
    if how.engine == "ray":
        from .ray_engine import run_on_ray

        return run_on_ray(info.func, records, ctx, **how.ray)
    return info.func(records, ctx)
