"""Rate limits: the user's RPM/TPM token buckets, and a gate that follows the provider's own headers.

Providers say how much is left in each response: `x-ratelimit-remaining-requests` / `-tokens` with
`x-ratelimit-reset-*` (OpenAI, Azure, Groq, vLLM and litellm proxies, litellm's `llm_provider-`
copies), `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{remaining,reset,limit}`
(Anthropic), and `retry-after` / `retry-after-ms` on a 429. `ProviderLimits` spends what is left and
waits for the reset rather than collecting 429s, and pauses every request after a burst of 429s.
"""

from __future__ import annotations

import asyncio
import contextvars
import email.utils
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any


class TokenBucket:
    """Refills `rate_per_minute` units per minute, holds at most one minute's worth."""

    def __init__(self, rate_per_minute: float):
        self.capacity = float(rate_per_minute)
        self.rate = rate_per_minute / 60.0
        self.level = self.capacity
        self.updated = time.monotonic()
        self._lock = asyncio.Lock()

    async def take(self, amount: float = 1.0) -> None:
        amount = min(amount, self.capacity)
        async with self._lock:
            while True:
                now = time.monotonic()
                self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
                self.updated = now
                if self.level >= amount:
                    self.level -= amount
                    return
                await asyncio.sleep((amount - self.level) / self.rate)


def estimate_tokens(messages: list[dict]) -> int:
    """A cheap prompt-size estimate (4 characters a token) for limits and dry runs."""
    chars = sum(len(str(m.get("content", ""))) for m in messages)
    return chars // 4 + 4 * len(messages)


# ----- reading the provider's headers ------------------------------------------------------------

DIMENSIONS = ("requests", "tokens", "input_tokens", "output_tokens")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_reset(value: Any, now: float | None = None) -> float | None:
    """Seconds until a reset (never negative) from any form providers send: seconds ("1.5"), a Go
    duration ("6m0s", "20ms", OpenAI), an RFC 3339 time (Anthropic), an HTTP date, or epoch seconds."""
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    wall = time.time() if now is None else now
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return max(0.0, seconds - wall) if seconds > 1e9 else max(0.0, seconds)  # epoch or delta
    parts = _DURATION.findall(text)
    if parts and "".join(n + u for n, u in parts) == text.replace(" ", ""):
        return sum(float(n) * _UNIT_S[u] for n, u in parts)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        return max(0.0, moment.timestamp() - wall)
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(text).timestamp() - wall)
    except (TypeError, ValueError, IndexError):
        return None


def retry_after_of(headers: Mapping[str, Any] | None) -> float | None:
    """The server's requested wait in seconds: `retry-after-ms`, else `retry-after` (seconds or date)."""
    if not headers:
        return None
    lower = _lower(headers)
    ms = lower.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    return parse_reset(lower.get("retry-after"))


@dataclass
class Window:
    """What one response said about one dimension: units left, seconds until refilled, the full limit."""

    remaining: float
    reset_s: float
    limit: float | None = None


def read_rate_headers(headers: Mapping[str, Any] | None) -> dict[str, Window]:
    """{dimension: Window} from a response's headers (any case; litellm's `llm_provider-` prefix too)."""
    if not headers:
        return {}
    lower = _lower(headers)
    out: dict[str, Window] = {}
    for dim in DIMENSIONS:
        name = dim.replace("_", "-")
        for remaining_h, reset_h, limit_h in (
            (f"x-ratelimit-remaining-{name}", f"x-ratelimit-reset-{name}", f"x-ratelimit-limit-{name}"),
            (f"anthropic-ratelimit-{name}-remaining", f"anthropic-ratelimit-{name}-reset",
             f"anthropic-ratelimit-{name}-limit"),
        ):  # fmt: skip
            if remaining_h not in lower:
                continue
            try:
                remaining = float(lower[remaining_h])
            except ValueError:
                continue
            reset = parse_reset(lower.get(reset_h))
            try:
                limit = float(lower[limit_h]) if limit_h in lower else None
            except ValueError:
                limit = None
            # No reset time: assume the usual one-minute window, so a 0 still makes us wait.
            out[dim] = Window(remaining, 60.0 if reset is None else reset, limit)
            break
    return out


def _lower(headers: Mapping[str, Any]) -> dict[str, str]:
    out = {}
    for key, value in headers.items():
        k = str(key).lower()
        out[k.removeprefix("llm_provider-")] = str(value)
    return out


# Backends report the headers of the response they are handling here; the gate picks them up for
# the request in flight in this task (a no-op outside a gated call).
_current: contextvars.ContextVar[Ticket | None] = contextvars.ContextVar("instructkit_rate_ticket", default=None)


def report_headers(headers: Mapping[str, Any] | None) -> None:
    """Called by a backend with each response's headers (success or error)."""
    ticket = _current.get()
    if ticket is not None and headers:
        ticket.headers = dict(headers)


# ----- the gate ----------------------------------------------------------------------------------


@dataclass
class Ticket:
    """One request through the gate: what it costs in each dimension and when it left."""

    amounts: dict[str, float]
    sent: float
    headers: dict[str, Any] | None = None
    token: Any = None
    waited_s: float = 0.0


@dataclass
class _Dim:
    remaining: float | None = None  # what we may still send before `reset_at` (None: not known yet)
    reset_at: float = 0.0
    limit: float | None = None
    window_start: float = float("-inf")  # replies to requests sent before this say nothing about now
    observed: bool = False  # a reply from this window has told its reset time


@dataclass
class ProviderLimits:
    """Follows the provider's rate-limit headers across every request of one model.

    Until the first reply shows whether the provider sends limits (at most `probe_s` seconds), one
    request goes at a time. After that, each dimension the provider reports (requests, tokens, ...)
    is spent down from the smallest "remaining" it reported in the current window, less what is in
    flight and may not be counted yet; when it is spent, requests wait for the reset, after which the
    full limit (where the provider gave it) or one probing request goes. A 429's `retry-after` pauses
    every request; `burst` 429s in a row within `burst_window` seconds pause them for a cool-down that doubles
    on each further burst (up to `max_cooldown`) and is forgotten after `calm` clean replies.
    Providers that send no headers cost nothing past the first reply.
    """

    probe_s: float = 2.0
    burst: int = 3
    burst_window: float = 10.0
    max_cooldown: float = 60.0
    calm: int = 20
    dims: dict[str, _Dim] = field(default_factory=dict)
    informed: bool = False
    probing_since: float | None = None
    blocked_until: float = 0.0
    cooldown: float = 0.0
    recent_429: list[float] = field(default_factory=list)
    clean: int = 0
    in_flight: dict[str, float] = field(default_factory=dict)
    throttled: int = 0  # 429 replies seen
    waited_s: float = 0.0  # wall time the gate held requests back for a provider limit (not the first probe)

    def __post_init__(self) -> None:
        self._locks: dict[int, asyncio.Lock] = {}

    def _lock(self) -> asyncio.Lock:
        loop_id = id(asyncio.get_running_loop())
        lock = self._locks.get(loop_id)
        if lock is None:
            lock = self._locks[loop_id] = asyncio.Lock()
        return lock

    async def acquire(self, amounts: dict[str, float]) -> Ticket:
        """Wait until the provider's limits allow a request costing `amounts`; mark it in flight."""
        now = time.monotonic()
        held = 0.0  # seconds this request held everyone back for a limit (one waiter sleeps at a time)
        if not (self.informed and not self.dims and now >= self.blocked_until):  # else: nothing to obey
            async with self._lock():  # one waiter polls; the others queue behind it in order
                while (wait := self._wait_for(amounts, time.monotonic())) > 0:
                    limited = self.informed  # until the first reply it is the probe, by design, not a limit
                    pause = min(wait, 0.05)
                    await asyncio.sleep(pause)
                    held += pause if limited else 0.0
        ticket = self._take(amounts)
        ticket.waited_s = held
        self.waited_s += held
        ticket.token = _current.set(ticket)
        return ticket

    def _wait_for(self, amounts: dict[str, float], now: float) -> float:
        """Seconds to wait before a request costing `amounts` may leave (0: it may leave now)."""
        if now < self.blocked_until:
            return self.blocked_until - now
        if not self.informed and self.probing_since is not None:
            deadline = self.probing_since + self.probe_s
            if now < deadline:
                return deadline - now
            self.informed = True  # the provider is slow to answer: stop holding everyone back
        for name, dim in self.dims.items():
            if dim.remaining is not None and now >= dim.reset_at:  # the window has ended
                dim.remaining, dim.window_start, dim.reset_at, dim.observed = dim.limit, now, float("inf"), False
            if dim.remaining is not None and not dim.observed and dim.remaining < amounts.get(name, 0.0):
                if self.in_flight.get(name, 0.0) > 0:
                    return 0.02  # spent before any reply told the reset time: wait for one
                dim.remaining = None
            if dim.remaining is None:  # no known limit in this window: one probing request at a time
                if self.in_flight.get(name, 0.0) > 0:
                    return 0.02
                continue
            need = min(amounts.get(name, 0.0), dim.limit or float("inf"))
            if need > 0 and dim.remaining < need:
                return max(dim.reset_at - now, 0.001)
        return 0.0

    def _take(self, amounts: dict[str, float]) -> Ticket:
        now = time.monotonic()
        if not self.informed and self.probing_since is None:
            self.probing_since = now
        for name, amount in amounts.items():
            self.in_flight[name] = self.in_flight.get(name, 0.0) + amount
            dim = self.dims.get(name)
            if dim is not None and dim.remaining is not None:
                dim.remaining -= amount
        return Ticket(dict(amounts), now)

    def settle(self, ticket: Ticket, status: int | None = None, retry_after: float | None = None) -> None:
        """The reply to `ticket` came back (status None: success): learn from its headers."""
        if ticket.token is not None:
            try:
                _current.reset(ticket.token)
            except ValueError:  # settled from another context
                pass
            ticket.token = None
        for name, amount in ticket.amounts.items():
            self.in_flight[name] = max(0.0, self.in_flight.get(name, 0.0) - amount)
        now = time.monotonic()
        self.informed = True
        windows = read_rate_headers(ticket.headers)
        for name, window in windows.items():
            self._observe(self.dims.setdefault(name, _Dim()), name, window, ticket, now)
        for name in [n for n, d in self.dims.items() if d.remaining is None and n not in windows]:
            del self.dims[name]  # probing, and the provider no longer reports it
        if status == 429:
            self._throttled(now, retry_after if retry_after is not None else retry_after_of(ticket.headers))
        elif status is None:
            self.recent_429.clear()  # a burst is 429s in a row
            self.clean += 1
            if self.clean >= self.calm:
                self.cooldown = 0.0

    def _observe(self, dim: _Dim, name: str, window: Window, ticket: Ticket, now: float) -> None:
        if window.limit is not None:
            dim.limit = window.limit
        if ticket.sent < dim.window_start:
            return  # a reply from a window that has ended
        # Requests still in flight may not be counted in this reply's figure: assume they are not.
        estimate = window.remaining - self.in_flight.get(name, 0.0)
        reset_at = now + window.reset_s
        dim.remaining = estimate if dim.remaining is None else min(dim.remaining, estimate)
        dim.reset_at = max(dim.reset_at, reset_at) if dim.observed else reset_at
        dim.observed = True

    def _throttled(self, now: float, retry_after: float | None) -> None:
        self.throttled += 1
        self.clean = 0
        if retry_after is not None:
            self.blocked_until = max(self.blocked_until, now + min(retry_after, 600.0))
        self.recent_429 = [t for t in self.recent_429 if now - t <= self.burst_window] + [now]
        if len(self.recent_429) >= self.burst:
            self.cooldown = min(self.max_cooldown, max(1.0, self.cooldown * 2))
            self.blocked_until = max(self.blocked_until, now + self.cooldown)
            self.recent_429.clear()
