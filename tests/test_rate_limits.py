"""Rate limits that follow the provider: its x-ratelimit-* / anthropic-ratelimit-* headers are obeyed
(no 429 at all against a fake server that enforces a fixed window), a 429's Retry-After pauses every
request, and a burst of 429s starts a cool-down. The fake server is used because a real local server
sends no rate-limit headers."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest

from instructkit.models import LLM
from instructkit.models.limits import ProviderLimits, parse_reset, read_rate_headers, retry_after_of
from instructkit.models.types import GenParams

from fakes import Fault, reply_text


def ask_all(llm: LLM, prompts: list[str]) -> list[str]:
    async def go() -> list[str]:
        comps = await asyncio.gather(*(llm.achat(p, max_tokens=8) for p in prompts))
        await llm.aclose()
        return [c.text for c in comps]

    return asyncio.run(go())


def test_reset_formats() -> None:
    now = time.time()
    assert parse_reset("6m0s") == 360.0
    assert parse_reset("1h2m3.5s") == 3723.5
    assert parse_reset("20ms") == pytest.approx(0.02)
    assert parse_reset("1.5") == 1.5
    assert parse_reset(str(now + 30), now=now) == pytest.approx(30.0)  # epoch seconds
    at = datetime.fromtimestamp(now + 12.5, timezone.utc).isoformat().replace("+00:00", "Z")
    assert parse_reset(at, now=now) == pytest.approx(12.5, abs=1e-5)  # RFC 3339 (Anthropic)
    http_date = format_datetime(datetime.fromtimestamp(int(now) + 40, timezone.utc), usegmt=True)
    assert parse_reset(http_date, now=int(now)) == pytest.approx(40.0)
    assert parse_reset("soon") is None and parse_reset("") is None and parse_reset("-3") == 0.0
    assert retry_after_of({"Retry-After": "2"}) == 2.0
    assert retry_after_of({"retry-after-ms": "250", "retry-after": "9"}) == 0.25


def test_every_providers_headers_are_read() -> None:
    openai = read_rate_headers({"X-RateLimit-Remaining-Requests": "0", "x-ratelimit-reset-requests": "1s",
                                "x-ratelimit-limit-requests": "60", "x-ratelimit-remaining-tokens": "900",
                                "x-ratelimit-reset-tokens": "6m0s"})
    assert (openai["requests"].remaining, openai["requests"].reset_s, openai["requests"].limit) == (0, 1.0, 60)
    assert (openai["tokens"].remaining, openai["tokens"].reset_s) == (900, 360.0)
    litellm = read_rate_headers({"llm_provider-x-ratelimit-remaining-requests": "7",
                                 "llm_provider-x-ratelimit-reset-requests": "20ms"})
    assert litellm["requests"].remaining == 7 and litellm["requests"].reset_s == pytest.approx(0.02)
    at = (datetime.now(timezone.utc) + timedelta(seconds=30)).isoformat()
    anthropic = read_rate_headers({"anthropic-ratelimit-input-tokens-remaining": "1000",
                                   "anthropic-ratelimit-input-tokens-reset": at,
                                   "anthropic-ratelimit-requests-remaining": "3",
                                   "anthropic-ratelimit-requests-limit": "50"})
    assert anthropic["input_tokens"].remaining == 1000 and 28 < anthropic["input_tokens"].reset_s <= 30
    assert anthropic["requests"].limit == 50 and anthropic["requests"].reset_s == 60.0  # no reset: a minute
    assert read_rate_headers({"content-type": "application/json"}) == {}


@pytest.mark.parametrize("style", ["openai", "anthropic"])
def test_remaining_zero_with_a_reset_is_obeyed_without_a_single_429(fake_server, style: str) -> None:
    limit, window, n = 4, 0.6, 14
    fake_server.configure(rate_limit={"requests": limit, "window": window, "style": style}, latency=0.02)
    # Without the gate the same burst is refused: the fake server really enforces its window.
    from instructkit.models.http_openai import OpenAICompatibleBackend

    async def raw() -> int:
        backend = OpenAICompatibleBackend("fake-model", fake_server)
        outcomes = await asyncio.gather(*(backend.chat([{"role": "user", "content": f"raw {i}"}], GenParams())
                                          for i in range(n)), return_exceptions=True)
        await backend.aclose()
        return sum(isinstance(o, Exception) for o in outcomes)

    assert asyncio.run(raw()) >= 1  # (how many depends on how fast the burst leaves a busy machine)
    fake_server.configure(reset=True)

    llm = LLM("fake-model", api_base=fake_server, cache=False, concurrency=32, max_retries=0)
    prompts = [f"row {i}" for i in range(n)]
    start = time.monotonic()
    texts = ask_all(llm, prompts)
    elapsed = time.monotonic() - start
    assert texts == [reply_text(p) for p in prompts]
    seen = fake_server.requests()
    assert [r["fault"] for r in seen] == [None] * n  # not a single 429
    assert llm.stats.throttled == 0 and llm.stats.retries == 0
    # n requests at `limit` a window need ceil(n / limit) windows: the client waited for each reset.
    windows = -(-n // limit)
    assert elapsed >= (windows - 1) * window
    assert llm.stats.limit_wait_s > 0


def test_retry_after_pauses_every_request(fake_server) -> None:
    fake_server.configure(faults=[Fault("429", at=[0], retry_after=0.5)])
    llm = LLM("fake-model", api_base=fake_server, cache=False, concurrency=8)
    prompts = [f"row {i}" for i in range(6)]
    assert ask_all(llm, prompts) == [reply_text(p) for p in prompts]
    seen = fake_server.requests()
    assert seen[0]["fault"] == "429" and all(r["fault"] is None for r in seen[1:])
    # The first request (sent alone until the provider's first reply) was refused: nobody else
    # went before its Retry-After was over.
    assert min(r["t"] for r in seen[1:]) - seen[0]["t"] >= 0.5
    assert llm.stats.throttled == 1


def test_a_burst_of_429s_starts_a_cool_down_that_grows() -> None:
    gate = ProviderLimits(burst=3, burst_window=10.0)

    async def burst() -> tuple[float, float]:
        start = time.monotonic()
        for _ in range(3):
            ticket = await gate.acquire({"requests": 1})
            gate.settle(ticket, 429)
        return start, time.monotonic()

    start, end = asyncio.run(burst())
    assert gate.cooldown == 1.0 and start + 1.0 <= gate.blocked_until <= end + 1.0 and gate.throttled == 3
    gate.blocked_until = 0.0
    start, end = asyncio.run(burst())
    assert gate.cooldown == 2.0 and start + 2.0 <= gate.blocked_until <= end + 2.0  # doubled
    gate.blocked_until = 0.0

    async def calm() -> None:
        for _ in range(gate.calm):
            gate.settle(await gate.acquire({"requests": 1}))

    asyncio.run(calm())
    assert gate.cooldown == 0.0  # forgotten after enough clean replies


def test_litellm_path_follows_the_same_headers(fake_server) -> None:
    limit, window, n = 3, 0.5, 8
    fake_server.configure(rate_limit={"requests": limit, "window": window, "style": "openai"}, latency=0.02)
    llm = LLM("fake-model", api_base=fake_server, via="litellm", cache=False, concurrency=16, max_retries=0)
    prompts = [f"lite {i}" for i in range(n)]
    assert ask_all(llm, prompts) == [reply_text(p) for p in prompts]
    assert [r["fault"] for r in fake_server.requests()] == [None] * n
    assert llm.stats.throttled == 0 and llm.stats.limit_wait_s > 0


def test_a_token_budget_waits_for_its_reset() -> None:
    from instructkit.models.limits import report_headers

    gate = ProviderLimits()

    async def go() -> tuple[float, float]:
        probe = await gate.acquire({"requests": 1, "tokens": 50})
        report_headers({"x-ratelimit-remaining-tokens": "60", "x-ratelimit-reset-tokens": "300ms"})
        gate.settle(probe)
        start = time.monotonic()
        first = await gate.acquire({"requests": 1, "tokens": 50})  # 60 left: goes at once
        went_first = time.monotonic() - start

        async def finish_first() -> None:
            await asyncio.sleep(0.1)
            gate.settle(first)

        done = asyncio.ensure_future(finish_first())
        second = await gate.acquire({"requests": 1, "tokens": 50})  # 10 left: waits for the reset
        went_second = time.monotonic() - start
        gate.settle(second)
        await done
        return went_first, went_second

    went_first, went_second = asyncio.run(go())
    assert went_first < 0.25 and went_second >= 0.3 - 0.01  # the reset was measured from the reply
    assert gate.waited_s >= 0.29


def test_the_first_reply_probe_is_not_counted_as_limit_waiting() -> None:
    """200 requests queue behind the first one until it answers (no headers: nothing to obey after):
    that is the probe, by design. Only waits a provider's limit causes count, once in wall time."""
    gate = ProviderLimits(probe_s=2.0)

    async def go() -> float:
        first = await gate.acquire({"requests": 1})

        async def answer() -> None:
            await asyncio.sleep(0.2)
            gate.settle(first)

        done = asyncio.ensure_future(answer())
        start = time.monotonic()
        tickets = await asyncio.gather(*[gate.acquire({"requests": 1}) for _ in range(200)])
        waited = time.monotonic() - start
        await done
        for ticket in tickets:
            gate.settle(ticket)
        return waited

    waited = asyncio.run(go())
    assert waited >= 0.15  # they did wait for the first reply
    assert gate.waited_s == 0.0  # ...which is no provider limit (it was 200 x 0.2 s = 40 s before)
