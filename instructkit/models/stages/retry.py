"""Retry stage: sends one request through the limits (`limiting.Limits`, per try) to the backend.

`TransientError`s are tried again up to `max_retries` times, after exactly the server's Retry-After,
else exponential backoff with full jitter. A 429 while the provider answered other requests since
this one's last try is its limit at work, not a failure: it waits and goes again without spending a
retry (a provider that answers nobody, an exhausted quota, still fails after `max_retries`).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ..types import TransientError
from .limiting import Limits
from .state import RunShared

T = TypeVar("T")


class Retry:
    """The retry policy of the run (`shared.max_retries`) over one model's limits."""

    def __init__(self, shared: RunShared, limits: Limits):
        self.shared = shared
        self.limits = limits

    async def run(self, send: Callable[..., Awaitable[T]], args: tuple[Any, ...], prompt_tokens: int,
                  reply_tokens: int) -> T:  # fmt: skip
        """`await send(*args)` (the backend's own method), tried again on TransientErrors. (Retries run
        outside the except block, so later errors do not chain the first one, whose cause may quote a
        credential, into logged tracebacks.)"""
        limits, stats = self.limits, self.shared.stats
        gate = limits.gate
        spent = 0
        answered = gate.successes if gate is not None else 0
        while True:
            slot = await limits.enter(prompt_tokens, reply_tokens)
            stats.calls += 1
            try:
                value = await send(*args)
            except TransientError as exc:
                limits.leave(slot, exc)
                error = exc
            except BaseException as exc:
                limits.leave(slot, exc)
                raise
            else:
                limits.leave(slot)
                return value
            if not (error.status == 429 and gate is not None and gate.successes > answered):
                spent += 1
                if spent > self.shared.max_retries:
                    raise error
            answered = gate.successes if gate is not None else 0
            stats.retries += 1
            await asyncio.sleep(retry_delay(error, spent))


def retry_delay(exc: BaseException | None, attempt_number: int) -> float:
    """The server's Retry-After when it sent one (exactly: no longer), else exponential backoff with
    full jitter."""
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        return min(float(retry_after), 600.0)
    base = min(30.0, 0.25 * 2 ** (attempt_number - 1))
    return random.uniform(base / 2, base)
