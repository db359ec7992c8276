"""Batch collection stage: in batch mode (`instructkit.run.batch`) an uncached chat request is recorded
for a provider's Batch API instead of being sent, and its row is skipped until the batch answers.

The run's models share one `Batching` (`RunShared.batching`); batch mode installs its collector for
one pass with `llm.batching.collecting(collector)`. Without a collector every method here is a no-op.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..types import Completion, GenParams


class Collector(Protocol):
    """What batch mode plugs into the stage (run/batch.py's `Collector`)."""

    def fresh(self, keys: list[str], results: list[Completion | None]) -> int:
        """Mark cached answers the batch paid for in this run as not cached; how many."""
        ...

    def collect(self, llm: Any, request: list[dict], gen: GenParams, missing: list[tuple[int, str]]) -> None:
        """Record the missing samples (index, cache key) of one request and raise to skip the row."""
        ...

    def stage_done(self) -> None:
        """A method's stage ended (may end the collect pass)."""
        ...


class Batching:
    """The collector of the pass in progress, if any."""

    def __init__(self) -> None:
        self.collector: Collector | None = None

    @contextmanager
    def collecting(self, collector: Collector) -> Iterator[Collector]:
        """Record uncached chat requests into `collector` for the length of the block."""
        self.collector = collector
        try:
            yield collector
        finally:
            self.collector = None

    def fresh(self, keys: list[str], results: list[Completion | None]) -> int:
        """Cached answers a batch of this run paid for, first read in this pass (counted as calls)."""
        return self.collector.fresh(keys, results) if self.collector is not None else 0

    def intercept(self, llm: Any, request: list[dict], gen: GenParams, missing: list[tuple[int, str]]) -> None:
        """Record the missing samples instead of sending them (raises `DryRunSkip`); no-op outside batch mode."""
        if self.collector is not None:
            self.collector.collect(llm, request, gen, missing)

    def stage_done(self) -> None:
        if self.collector is not None:
            self.collector.stage_done()
