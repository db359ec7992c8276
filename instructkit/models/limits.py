"""Rate limits: the user's RPM/TPM token buckets, and one adaptive gate that follows the provider.

Providers say how much is left in each response: `x-ratelimit-remaining-requests` / `-tokens` with
`x-ratelimit-reset-*` (OpenAI, Azure, Groq, vLLM and litellm proxies, litellm's `llm_provider-`
copies), `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{remaining,reset,limit}`
(Anthropic), and `retry-after` / `retry-after-ms` on a 429. `ProviderLimits` paces requests at the
rate those figures imply rather than collecting 429s, pauses everyone only while they say a limit
is spent, and learns the concurrency a provider admits from the 429s nothing else explains (AIMD).
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
    """Our mirror of one of the provider's buckets (requests, tokens, ...): what we may still send
    (`level`, as of `updated`), how fast it refills (units a second) and how much it holds."""

    level: float = 0.0
    updated: float = 0.0
    rate: float | None = None
    capacity: float | None = None
    full_at: float = float("inf")  # when the provider said the bucket is full again
    windowed: bool = False  # learned: a fixed window, refilled all at once when it resets (not at `rate`)

    def refill(self, now: float) -> float:
        if now >= self.full_at and self.capacity is not None:
            self.level, self.full_at = self.capacity, float("inf")
        elif self.rate and not self.windowed:
            self.level += (now - self.updated) * self.rate
            if self.capacity is not None:
                self.level = min(self.level, self.capacity)
        self.updated = now
        return self.level

    def observe(self, window: Window, in_flight: float, now: float) -> None:
        """A reply said `window`: believe it, less what is in flight and may not be counted in it yet."""
        if window.limit is not None:
            self.capacity = window.limit
        elif self.capacity is None or window.remaining > self.capacity:
            self.capacity = window.remaining
        used = (self.capacity or 0.0) - window.remaining
        if used > 0 and window.reset_s > 0:  # the reset is when the bucket is full again: its refill rate
            self.rate = used / window.reset_s
        elif self.rate is None and window.limit is not None:
            self.rate = window.limit / 60.0  # full and no reset said: a per-minute limit
        self.level, self.updated = window.remaining - in_flight, now
        self.full_at = now + window.reset_s if window.reset_s > 0 else float("inf")


_SLOT = -1.0  # `_wait_for`'s answer "wait for a reply" (a concurrency slot, or the first reply)


@dataclass
class ProviderLimits:
    """One policy for every hosted or served model: follows what the provider says and does.

    Rate: each dimension the provider reports in its headers (requests, tokens, input and output
    tokens) is mirrored as a bucket: its level is the last reply's "remaining" less what is in
    flight, spent by every request we send, and refilled at the rate its "reset" implies (the time
    until the bucket is full again: used / reset seconds; a full one refills its limit a minute).
    A request waits until every bucket holds what it costs, so sends are paced at the provider's
    rate and few are refused. Headers look the same for a fixed window; a 429 whose `retry-after`
    is its full reset tells one, which from then on refills only when it resets. Everyone waits only while the provider says a limit is spent: a
    bucket below the request's cost, or a 429 whose headers show a spent dimension (until its
    `retry-after`).

    Concurrency (AIMD, as TCP): at most `limit` requests in flight, starting at the client's
    concurrency. A 429 that no spent limit explains (a concurrency cap, an overloaded server) parks
    its slot until the round ends, so a cap's instant refusals do not churn through it. A round is
    `limit` replies to requests sent since the last decision. A round in which more than
    `tolerance` of the replies were such 429s multiplies the limit by the share admitted (between
    0.5 and 0.9: one decrease a round, whatever the number of 429s in it), and the limit then holds
    there for `hold_rounds` rounds (the level the provider admitted: probing above it at once would
    be refused again, and each refusal costs its row a `retry-after`); a round that used the whole
    limit without that, past the hold, adds one. Random 429s below `tolerance` do not shrink it. A refused
    request itself waits its `retry-after` in the retry stage; nobody else waits for it.

    Until the first reply shows whether the provider sends limits (at most `probe_s` seconds), one
    request goes at a time. Providers that send no headers cost a slot count and nothing else.
    """

    probe_s: float = 2.0
    tolerance: float = 0.1
    hold_rounds: int = 50  # rounds the limit stays where a decrease put it before growing again
    dims: dict[str, _Dim] = field(default_factory=dict)
    informed: bool = False
    probing_since: float | None = None
    blocked_until: float = 0.0
    in_flight: dict[str, float] = field(default_factory=dict)
    limit: float | None = None  # the learned concurrency (None: not asked yet)
    max_limit: float | None = None  # the client's concurrency: the limit never grows past it
    active: int = 0  # requests in flight
    parked: int = 0  # slots of this round's unexplained 429s, held until the round ends
    peak: int = 0  # most requests in flight at once
    throttled: int = 0  # 429 replies seen
    refused_unexplained: int = 0  # of those, 429s no spent limit explained (the concurrency signal)
    successes: int = 0  # replies that were not errors
    waited_s: float = 0.0  # wall time the gate held requests back for a provider limit (not probe, not slots)

    def __post_init__(self) -> None:
        self._locks: dict[int, tuple[asyncio.Lock, asyncio.Event]] = {}
        self._round_start = float("-inf")
        self._round_done = 0
        self._round_refused = 0
        self._saturated = False
        self._hold = 0  # rounds left before the limit may grow again (set by a decrease)

    def _sync(self) -> tuple[asyncio.Lock, asyncio.Event]:
        loop_id = id(asyncio.get_running_loop())
        pair = self._locks.get(loop_id)
        if pair is None:
            pair = self._locks[loop_id] = (asyncio.Lock(), asyncio.Event())
        return pair

    async def acquire(self, amounts: dict[str, float], concurrency: int | None = None) -> Ticket:
        """Wait until a concurrency slot is free (at most `concurrency`, or what the provider was
        learned to admit) and the provider's limits allow a request costing `amounts`."""
        if concurrency is not None and concurrency != self.max_limit:  # (a limit the provider never cut follows it)
            untouched = self.limit is None or self.limit == self.max_limit
            self.max_limit = float(concurrency)
            self.limit = self.max_limit if untouched else min(self.limit, self.max_limit)
        held = 0.0  # seconds this request held everyone back for a limit (one waiter waits at a time)
        lock, freed = self._sync()
        if lock.locked() or self._wait_for(amounts, time.monotonic()) != 0.0:
            async with lock:  # one waiter waits; the others queue behind it in order
                while (wait := self._wait_for(amounts, time.monotonic())) != 0.0:
                    if wait == _SLOT:
                        freed.clear()
                        timeout = None
                        if not self.informed and self.probing_since is not None:
                            timeout = max(0.001, self.probing_since + self.probe_s - time.monotonic())
                        try:
                            await asyncio.wait_for(freed.wait(), timeout)
                        except asyncio.TimeoutError:
                            self.informed = True  # the provider is slow to answer: stop holding everyone back
                        continue
                    pause = min(wait, 0.25)  # a reply may change what we know meanwhile
                    await asyncio.sleep(pause)
                    held += pause
        ticket = self._take(amounts)
        ticket.waited_s = held
        self.waited_s += held
        ticket.token = _current.set(ticket)
        return ticket

    def _wait_for(self, amounts: dict[str, float], now: float) -> float:
        """Seconds to wait for a provider limit (0: go now; `_SLOT`: wait for a reply)."""
        if not self.informed and self.active > 0:
            return _SLOT  # the first reply tells whether the provider sends limits
        if self.limit is not None and self.active + self.parked >= max(1, int(self.limit)):
            return _SLOT
        if now < self.blocked_until:
            return self.blocked_until - now
        for name, dim in self.dims.items():
            need = amounts.get(name, 0.0)
            if need <= 0:
                continue
            need = min(need, dim.capacity or need)
            level = dim.refill(now)
            if level >= need:
                continue
            if dim.rate or dim.full_at < float("inf"):  # refilled at its rate, or all at once when full
                refilled = (need - level) / dim.rate if dim.rate and not dim.windowed else float("inf")
                return max(min(refilled, dim.full_at - now), 0.001)
            if self.in_flight.get(name, 0.0) > 0:  # nothing known about the refill: probe one at a time
                return _SLOT
        return 0.0

    def _take(self, amounts: dict[str, float]) -> Ticket:
        now = time.monotonic()
        if not self.informed and self.probing_since is None:
            self.probing_since = now
        for name, amount in amounts.items():
            self.in_flight[name] = self.in_flight.get(name, 0.0) + amount
            dim = self.dims.get(name)
            if dim is not None:
                dim.level -= amount
        self.active += 1
        self.peak = max(self.peak, self.active)
        if self.limit is not None and self.active + self.parked >= int(self.limit):
            self._saturated = True
        return Ticket(dict(amounts), now)

    def settle(self, ticket: Ticket, status: int | None = None, retry_after: float | None = None) -> None:
        """The reply to `ticket` came back (status None: success): learn from its headers and status."""
        if ticket.token is not None:
            try:
                _current.reset(ticket.token)
            except ValueError:  # settled from another context
                pass
            ticket.token = None
        for name, amount in ticket.amounts.items():
            self.in_flight[name] = max(0.0, self.in_flight.get(name, 0.0) - amount)
        self.active = max(0, self.active - 1)
        now = time.monotonic()
        self.informed = True
        windows = read_rate_headers(ticket.headers)
        for name, window in windows.items():
            self.dims.setdefault(name, _Dim()).observe(window, self.in_flight.get(name, 0.0), now)
        refused = False
        if status == 429:
            self.throttled += 1
            spent = [n for n, w in windows.items() if w.remaining < min(ticket.amounts.get(n, 1.0), w.limit or 1e18)]
            if retry_after is None:
                retry_after = retry_after_of(ticket.headers)
            for name in spent:  # come back when it is full again: a fixed window, not a refilling bucket
                if retry_after is not None and retry_after >= 0.9 * windows[name].reset_s > 0:
                    self.dims[name].windowed = True
            spent = [windows[name] for name in spent]
            if spent:  # the provider says a limit is spent: nobody goes until it said to come back
                wait = retry_after if retry_after is not None else min(w.reset_s for w in spent)
                self.blocked_until = max(self.blocked_until, now + min(wait, 600.0))
            else:
                refused = True
                self.refused_unexplained += 1
        elif status is None:
            self.successes += 1
        self._learn_concurrency(ticket, refused)
        for _, freed in self._locks.values():
            freed.set()

    def _learn_concurrency(self, ticket: Ticket, refused: bool) -> None:
        """AIMD over rounds of replies (see the class docstring)."""
        if self.limit is None:
            return
        if refused:
            self.parked += 1
        if ticket.sent >= self._round_start:  # else: sent before the last decision, not this round's
            self._round_done += 1
            self._round_refused += refused
        if self._round_done < max(1, int(self.limit)) and (self.active > 0 or not self.parked):
            return  # (nothing in flight while slots are parked: decide now, or nothing would go)
        share = self._round_refused / max(1, self._round_done)
        if share > self.tolerance:
            self.limit = max(1.0, self.limit * min(0.9, max(0.5, 1.0 - share)))
            self._hold = self.hold_rounds
        elif self._hold > 0:
            self._hold -= 1
        elif self._saturated:
            self.limit = min(self.max_limit or float("inf"), self.limit + 1)
        self._round_start = time.monotonic()
        self._round_done = self._round_refused = self.parked = 0
        self._saturated = False

    def paced(self, name: str = "requests") -> float | None:
        """The rate (units a minute) the provider's headers pace `name` at, when they told one."""
        dim = self.dims.get(name)
        return dim.rate * 60.0 if dim is not None and dim.rate else None

    def describe(self) -> str:
        """What the limiter believes, for the progress line: in flight / limit, paced rate, 429s, waits."""
        parts = [f"in flight {self.active}/{int(self.limit) if self.limit else '-'}"]
        rpm = self.paced()
        if rpm:
            parts.append(f"paced {rpm:,.0f} rpm")
        if self.throttled:
            parts.append(f"429s {self.throttled}")
        if self.waited_s >= 0.05:
            parts.append(f"held {self.waited_s:.1f}s")
        return " ".join(parts)

    def state(self) -> dict[str, Any]:
        """What the limiter learned, for the run's summary and manifest."""
        return {"concurrency": None if self.limit is None else int(self.limit), "peak_in_flight": self.peak,
                "paced_rpm": self.paced(), "paced_tpm": self.paced("tokens"), "throttled": self.throttled,
                "refused_unexplained": self.refused_unexplained, "waited_s": round(self.waited_s, 3)}
