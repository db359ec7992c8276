"""How a method step executes: in this process, through a provider's Batch API, or on Ray.

The CLI (`--batch`, `--engine ray`) and pipelines (`batch: true`, `engine: ray`) both come here,
so a step gives the same output, cache entries and journals whichever way it ran.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..registry import MethodInfo
from .runner import RunContext

ENGINES = ("local", "ray")
RAY_KINDS = ("judge", "score")
BATCH_KINDS = ("generate", "judge", "score")
# Methods whose output for a row depends on other rows: run per Ray batch, they would give other results.
CROSS_ROW = {("judge", "instag"): "its tag normalisation counts tags over all rows",
             ("judge", "eval"): "its metrics are computed over all rows"}
CROSS_ROW_OPTIONS = ("top_k", "ratio")  # score options that select across rows (IFD, Superfiltering)


@dataclass
class Execution:
    """Execution choices for one step (none of them changes its results)."""

    batch: bool = False
    poll_s: float = 30.0
    engine: str = "local"
    ray: dict[str, Any] = field(default_factory=dict)  # run_on_ray options: actors, num_gpus, num_cpus, batch_size

    def check(self, info: MethodInfo, options: Any = None) -> None:
        """Raise ValueError for a combination that would not give the in-process result."""
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {self.engine!r}")
        if self.batch and self.engine != "local":
            raise ValueError("--batch and --engine ray do not combine: batch mode runs in one process")
        if self.batch and info.kind not in BATCH_KINDS:
            raise ValueError(f"--batch applies to {', '.join(BATCH_KINDS)} methods, not {info.kind}")
        if self.engine == "ray" and info.kind not in RAY_KINDS:
            raise ValueError(f"--engine ray runs {' and '.join(RAY_KINDS)} methods (and embed), not {info.kind}")
        if self.engine == "ray" and (info.kind, info.name) in CROSS_ROW:
            raise ValueError(f"{info.kind} {info.name} cannot run on Ray: {CROSS_ROW[(info.kind, info.name)]}")
        selecting = [o for o in CROSS_ROW_OPTIONS if getattr(options, o, 0)]
        if self.engine == "ray" and selecting:
            raise ValueError(f"{info.kind} {info.name}: option(s) {selecting} select across all rows; run the "
                             "score on Ray without them and select in a later step (select topk/ratio)")


def execute(info: MethodInfo, records: list[dict], ctx: RunContext, how: Execution | None = None) -> list[dict]:
    """Run a registered method on `records` as `how` says (default: in this process). Judges and
    scorers get chat rows as turn views (`ctx.turns`, instructkit.data.turns) and their results folded back."""
    how = how or Execution()
    how.check(info, ctx.options)
    from ..templates import check_user_templates

    check_user_templates(ctx.options)  # a user's template that reaches for Python internals: refused now
    info.check_input(records, ctx.options)  # a record without a field the method reads: refused before any call
    if ctx.llm is not None and sends_rows_whole(info):  # a row too long: refused before any call, not paid for
        from ..data.io import check_prompt_size

        check_prompt_size(records, info.fields_read(ctx.options), max_prompt_tokens(ctx.llm))
    if info.takes_turn_options:
        from ..data.turns import run_per_turn

        return run_per_turn(lambda rows: _dispatch(info, rows, ctx, how), records, ctx.turns)
    return _dispatch(info, records, ctx, how)


def sends_rows_whole(info: MethodInfo) -> bool:
    """Whether the method puts each row's text into one prompt (judges, scorers, generators from
    instructions), unlike generators that chunk documents (`{text_field}`) or selectors."""
    reads = () if callable(info.reads) else info.reads
    return info.kind in ("judge", "score") or (info.kind == "generate" and not any("{text_field}" in r for r in reads))


DEFAULT_MAX_PROMPT_TOKENS = 131072  # where the model's context length is not known


def max_prompt_tokens(llm: Any) -> int:
    """`--max-prompt-tokens`, else the model's context length where the price map knows it, else 131072."""
    from ..models.pricing import context_length

    config = llm.config
    if config.max_prompt_tokens:
        return config.max_prompt_tokens
    known = context_length(llm.ref.model) if llm.ref.family != "local" else None
    return known or DEFAULT_MAX_PROMPT_TOKENS


def _dispatch(info: MethodInfo, records: list[dict], ctx: RunContext, how: Execution) -> list[dict]:
    if how.batch:
        from .batch import run_batched

        return run_batched(info.func, records, ctx, poll_s=how.poll_s)
    if how.engine == "ray":
        from .ray_engine import run_on_ray

        return run_on_ray(info.func, records, ctx, **how.ray)
    return info.func(records, ctx)
