"""How a method step may execute (in this process, through a provider's Batch API, or on Ray) and
the checks its input gets before any call.

The CLI (`--batch`, `--engine ray`) and pipelines (`batch: true`, `engine: ray`) both describe an
`Execution`; `run.steps` checks it here (`check_step`) and runs the method, so a step gives the same
output, cache entries and journals whichever way it ran.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..registry import MethodInfo

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
        if self.engine == "ray" and (reason := info.cross_row_reason(options)):
            raise ValueError(f"{info.kind} {info.name} cannot run on Ray: {reason}")


def check_step(info: MethodInfo, records: list[dict], options: Any, llm: Any = None,
               how: Execution | None = None) -> None:
    """Every check a step's input gets, once, before any model call: the execution choice, a user's
    template that reaches for Python internals, the fields the method reads (InputError: file, line,
    field) and, for methods that send each row whole, each row's size against the model's context."""
    (how or Execution()).check(info, options)
    from ..templates import check_user_templates

    check_user_templates(options)
    info.check_input(records, options)
    if llm is not None and sends_rows_whole(info):  # a row too long: refused before any call, not paid for
        from ..data.io import check_prompt_size

        check_prompt_size(records, info.fields_read(options), max_prompt_tokens(llm))


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
