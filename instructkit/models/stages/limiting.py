"""Limits stage, one try of a call: the user's RPM/TPM, then a concurrency slot and the provider's
own limits (the adaptive gate, `limits.ProviderLimits`, for hosted and served models; a fixed
semaphore for local ones). Each try takes them anew (`enter`) and gives them back (`leave`), so a
call backing off between tries holds no slot."""

from __future__ import annotations

import asyncio

from ..limits import ProviderLimits, Ticket
from ..types import ModelCallError
from .state import RunShared


class Limits:
    """The limits of one model: the run's RPM/TPM buckets (`shared`), its gate (None: a local model,
    bounded by `concurrency` alone) and its concurrency bound."""

    def __init__(self, shared: RunShared, gate: ProviderLimits | None, concurrency: int):
        self.shared = shared
        self.gate = gate
        self.concurrency = concurrency
        self._semaphores: dict[int, asyncio.Semaphore] = {}

    async def enter(self, prompt_tokens: int, reply_tokens: int) -> Ticket | asyncio.Semaphore:
        """Wait for room for one try; the slot to `leave` afterwards."""
        shared = self.shared
        tokens = prompt_tokens + reply_tokens
        if shared.rpm:
            await shared.rpm.take(1)
        if shared.tpm:
            await shared.tpm.take(tokens)
        gate = self.gate
        if gate is None:
            sem = self._semaphore()
            await sem.acquire()
            return sem
        ticket = await gate.acquire({"requests": 1, "tokens": tokens, "input_tokens": prompt_tokens,
                                     "output_tokens": reply_tokens}, self.concurrency)  # fmt: skip
        shared.stats.limit_wait_s += ticket.waited_s
        return ticket

    def leave(self, slot: Ticket | asyncio.Semaphore, error: BaseException | None = None) -> None:
        """Give the slot back; the gate learns from how the try ended (`error`: its status, Retry-After)."""
        if isinstance(slot, asyncio.Semaphore):
            slot.release()
            return
        assert self.gate is not None
        if error is None:
            self.gate.settle(slot)
        elif isinstance(error, ModelCallError):
            self.gate.settle(slot, error.status or 0, getattr(error, "retry_after", None))
            self.shared.stats.throttled += int(error.status == 429)
        else:
            self.gate.settle(slot, 0)

    def _semaphore(self) -> asyncio.Semaphore:
        loop_id = id(asyncio.get_running_loop())
        sem = self._semaphores.get(loop_id)
        if sem is None:
            sem = self._semaphores[loop_id] = asyncio.Semaphore(self.concurrency)
        return sem
