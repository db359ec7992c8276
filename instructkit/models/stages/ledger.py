"""Ledger stage: the dry run and the budget.

A dry run walks every call: an uncached call is counted (`count`) and answered by a placeholder
completion (`finish_reason="dry_run"`, text without any score or verdict, about as long as the
estimated reply), so a method goes on to its next call, stage, sample or member as in a real run;
nothing is cached or journaled. Estimates are calibrated per model from its earlier real calls
(`Calibration`); without any, a reply is counted at max_tokens (an upper bound).

A real call `reserve`s its most expensive outcome against `max_cost` before it is sent (so concurrent
calls never pass it together), `release`s it when answered or failed, and `book`s what it cost.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..cache import ResponseCache
from ..limits import estimate_tokens
from ..pricing import BATCH_DISCOUNT, cost_of
from ..types import Completion, GenParams, Usage
from .state import RunShared


class BudgetExceeded(RuntimeError):
    """Raised before a call that would take spending past `max_cost`; the run stops cleanly."""


class DryRunSkip(RuntimeError):
    """Raised in place of an uncached call to skip its row (batch collect mode); the row is pending."""


DRY_RUN_FINISH = "dry_run"  # finish_reason of a dry run's placeholder completion
# The stage a call belongs to ("method:stage", set by RunContext.amap): dry-run estimates are
# calibrated per stage, since replies of one stage have similar lengths.
CALL_LABEL: contextvars.ContextVar[str] = contextvars.ContextVar("instructkit_call_label", default="")
# Set by the row runner to a one-item list per row; a dry-run placeholder marks it (the row was
# walked, not answered).
DRY_RUN_ROW: contextvars.ContextVar[list[bool] | None] = contextvars.ContextVar("instructkit_dry_row", default=None)


def is_placeholder(comp: Completion) -> bool:
    """True for a dry run's stand-in completion (never a model's answer)."""
    return comp.finish_reason == DRY_RUN_FINISH


def placeholder_text(tokens: int) -> str:
    """Filler of about `tokens` tokens by the 4-characters-a-token estimate, with no digit, score or
    verdict in it (parsers read it as no result), no apology and no stop words only (generators'
    filters let it through, so their later stages are walked)."""
    head = "[dry run placeholder]"
    words = max(0, (4 * max(tokens, 1) - len(head)) // len(" placeholder"))
    return head + " placeholder" * words


def placeholders(prompt: int, reply: int, n: int) -> list[Completion]:
    """A dry run's `n` stand-in completions for counted (prompt, reply) tokens."""
    each = reply // max(n, 1)
    return [Completion(placeholder_text(each), DRY_RUN_FINISH, usage=Usage(prompt if i == 0 else 0, each), cost=0.0)
            for i in range(n)]  # fmt: skip


def mark_dry_row() -> None:
    """Mark the current row as walked by a dry run, not answered."""
    box = DRY_RUN_ROW.get()
    if box is not None:
        box[0] = True


@dataclass
class Calibration:
    """What one model's real calls looked like, so a dry run estimates what a real run will count.

    Prompt tokens: the ratio of the tokens the backend counted to our 4-characters estimate (chat
    templates, tokenizers). Reply tokens: the mean per stage label and max_tokens, and per max_tokens
    over all stages. Kept beside the response cache (`notes/`), under a hash of the model's identity
    (never a key); a reply size with no figure to go by is estimated at max_tokens, an upper bound."""

    prompt_estimated: int = 0
    prompt_counted: int = 0
    replies: dict[str, list[int]] = field(default_factory=dict)  # "label|max_tokens" -> [samples, tokens]

    def add(self, other: Calibration) -> None:
        self.prompt_estimated += other.prompt_estimated
        self.prompt_counted += other.prompt_counted
        for k, (n, t) in other.replies.items():
            mine = self.replies.setdefault(k, [0, 0])
            mine[0] += n
            mine[1] += t

    def record(self, label: str, max_tokens: int, prompt_estimated: int, comps: list[Completion]) -> None:
        counted = sum(c.usage.prompt_tokens for c in comps)
        if counted > 0:
            self.prompt_estimated += prompt_estimated
            self.prompt_counted += counted
        keys = (f"{label}|{max_tokens}", f"|{max_tokens}")
        for comp in comps:
            if comp.usage.completion_tokens <= 0 and comp.text:
                continue  # a backend that reports no usage teaches nothing
            for key in keys:
                entry = self.replies.setdefault(key, [0, 0])
                entry[0] += 1
                entry[1] += comp.usage.completion_tokens

    def prompt_tokens(self, estimated: int) -> int:
        if self.prompt_estimated <= 0:
            return estimated
        return round(estimated * self.prompt_counted / self.prompt_estimated)

    def reply_tokens(self, label: str, max_tokens: int) -> int | None:
        """Mean reply size of this stage at this max_tokens, else of any stage at it; None without data."""
        for key in (f"{label}|{max_tokens}", f"|{max_tokens}"):
            n, total = self.replies.get(key, (0, 0))
            if n > 0:
                return min(max_tokens, round(total / n))
        return None

    def to_json(self) -> dict[str, Any]:
        return {"prompt": [self.prompt_estimated, self.prompt_counted], "replies": self.replies}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Calibration:
        if not data:
            return cls()
        est, counted = data.get("prompt", [0, 0])
        return cls(int(est), int(counted), {k: [int(a), int(b)] for k, (a, b) in data.get("replies", {}).items()})


class CalibrationStore:
    """One model's calibration: the figures stored beside its cache (read on first need) plus what
    this process's real calls taught (`learned`, stored by `save`)."""

    def __init__(self, cache: ResponseCache, key: str):
        self.cache, self.key = cache, key
        self._stored: Calibration | None = None
        self.learned = Calibration()

    def current(self) -> Calibration:
        if self._stored is None:
            self._stored = Calibration.from_json(self.cache.read_note(self.key))
        merged = Calibration()
        merged.add(self._stored)
        merged.add(self.learned)
        return merged

    def save(self) -> None:
        if not self.learned.replies and not self.learned.prompt_counted:
            return
        stored = Calibration.from_json(self.cache.read_note(self.key))
        stored.add(self.learned)
        self.cache.write_note(self.key, stored.to_json())
        self._stored, self.learned = stored, Calibration()


class Ledger:
    """The run's dry run and budget (state in the run's `RunShared`)."""

    def __init__(self, shared: RunShared):
        self.shared = shared

    def count(self, prompt: int, reply: int, cost: float, calibrated: bool) -> None:
        """A dry run's uncached call: counted at its estimate, never sent."""
        stats = self.shared.stats
        stats.estimated_calls += 1
        stats.estimated_calibrated += calibrated
        stats.estimated_tokens += prompt + reply
        stats.estimated_cost += cost

    def reserve(self, most: float) -> float:
        """Hold the most a call may cost against `max_cost`, else BudgetExceeded before it is sent."""
        shared = self.shared
        if shared.max_cost is not None and shared.stats.cost + shared.reserved + most > shared.max_cost:
            raise BudgetExceeded(
                f"--max-cost {shared.max_cost:.4f} reached (spent {shared.stats.cost:.4f}); stopping before the next call"
            )
        shared.reserved += most
        return most

    def release(self, reserved: float) -> None:
        self.shared.reserved -= reserved

    def book(self, comps: list[Completion]) -> None:
        """Book the usage and cost (already set on each completion) of real answers."""
        stats = self.shared.stats
        for comp in comps:
            stats.prompt_tokens += comp.usage.prompt_tokens
            stats.completion_tokens += comp.usage.completion_tokens
            stats.cost += comp.cost


class Meter:
    """One model's prices and calibration: what its calls cost (`price`, `estimate`: the budget's upper
    bound) and what a dry run counts for them (`estimate_call`). `prices`: a registered backend's
    dollars per (prompt, reply) token; else `cost_model` priced by `pricing.cost_of` ("" is free)."""

    def __init__(self, prices: tuple[float, float] | None, cost_model: str, cache: ResponseCache,
                 calibration_key: Callable[[], str]):  # fmt: skip
        self.prices, self.cost_model = prices, cost_model
        self._cache, self._key = cache, calibration_key
        self._store: CalibrationStore | None = None

    def price(self, prompt_tokens: int, completion_tokens: int, batch: bool = False) -> float:
        if self.prices is not None:
            cost = prompt_tokens * self.prices[0] + completion_tokens * self.prices[1]
            return cost * BATCH_DISCOUNT if batch else cost
        return cost_of(self.cost_model, prompt_tokens, completion_tokens, batch=batch) if self.cost_model else 0.0

    def estimate(self, request: list[dict] | str, gen: GenParams, n: int, batch: bool = False) -> tuple[int, float]:
        """(tokens, cost) of a call at most: the prompt estimate plus max_tokens per sample."""
        prompt_tokens = estimate_tokens(as_messages(request))
        return prompt_tokens + gen.max_tokens * n, self.price(prompt_tokens, gen.max_tokens * n, batch)

    def estimate_call(self, request: list[dict] | str, gen: GenParams, n: int) -> tuple[int, int, float, bool]:
        """What a dry run counts for one call: (prompt tokens, reply tokens for all n samples, cost,
        calibrated), calibrated from the model's earlier real calls at this stage (`CALL_LABEL`) and
        max_tokens; a reply of unknown size counts max_tokens."""
        cal = self.calibrations.current()
        prompt = cal.prompt_tokens(estimate_tokens(as_messages(request)))
        per_reply = cal.reply_tokens(CALL_LABEL.get(), gen.max_tokens)
        reply = (gen.max_tokens if per_reply is None else per_reply) * n
        return prompt, reply, self.price(prompt, reply), per_reply is not None

    @property
    def calibrations(self) -> CalibrationStore:
        if self._store is None:
            self._store = CalibrationStore(self._cache, self._key())
        return self._store

    def save(self) -> None:
        if self._store is not None:
            self._store.save()


def as_messages(request: list[dict] | str) -> list[dict]:
    """A chat request as it is, a raw completion prompt as one message (for token estimates)."""
    return request if isinstance(request, list) else [{"content": request}]
