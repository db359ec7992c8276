"""What every model of one run shares (`LLM.derive`): the switches, the budget and the call statistics."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..limits import TokenBucket
from .batching import Batching


@dataclass
class CallStats:
    calls: int = 0
    cache_hits: int = 0
    failures: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    estimated_calls: int = 0
    estimated_tokens: int = 0
    estimated_cost: float = 0.0
    # Calls sent without a penalty the backend cannot apply (warned once, never silent).
    dropped_presence_penalty: int = 0
    dropped_frequency_penalty: int = 0
    truncated: int = 0  # replies cut at max_tokens (finish_reason "length") that methods received
    length_retries: int = 0  # cut replies asked again with a larger max_tokens (retry_length)
    throttled: int = 0  # 429 replies
    limit_wait_s: float = 0.0  # wall time the provider's rate limits held requests back (not the first-reply probe)
    estimated_calibrated: int = 0  # estimated calls whose reply size came from earlier real calls

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class RunShared:
    """What every model of one run shares (`LLM.derive`): the dry-run switch, one cost budget, the
    rate limits, the retry policy, the batch collection stage and the call statistics."""

    dry_run: bool = False
    max_cost: float | None = None
    max_retries: int = 6
    retry_length: float = 0.0  # > 1: a reply cut at max_tokens is asked again with max_tokens x this
    rpm: TokenBucket | None = None
    tpm: TokenBucket | None = None
    stats: CallStats = field(default_factory=CallStats)
    reserved: float = 0.0  # estimated cost of calls in flight
    batching: Batching = field(default_factory=Batching)  # batch mode (instructkit.run.batch)
    members: dict[str, Any] = field(default_factory=dict)  # derived models by spec
    dry_answers: dict[str, dict] = field(default_factory=dict)  # a dry run's placeholders by key, in memory only

    @classmethod
    def of(cls, config: Any) -> RunShared:
        """A new run's, from its first model's `ModelConfig`."""
        return cls(dry_run=config.dry_run, max_cost=config.max_cost, max_retries=config.max_retries,
                   retry_length=config.retry_length, rpm=TokenBucket(config.rpm) if config.rpm else None,
                   tpm=TokenBucket(config.tpm) if config.tpm else None)  # fmt: skip
