"""Rate limits that follow the provider (limits.ProviderLimits): its x-ratelimit-* /
anthropic-ratelimit-* headers are obeyed and paced (no 429 against a fake server that enforces a fixed
window or a token bucket), a 429 holds back only itself unless the headers say the limit is spent, and
a concurrency cap is learned (AIMD) from the 429s it answers. The fake server is used because a real
local server sends no rate-limit headers and has no cap; these tests check behaviour, not speed."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest

from instructkit.models import LLM
from instructkit.models.limits import ProviderLimits, parse_reset, read_rate_headers, retry_after_of
from instructkit.models.types import GenParams, ModelCallError

from fakes import Fault, reply_text


def ask_all(llm: LLM, prompts: list[str]) -> list[str]:
    async def go() -> list[str]:
        try:
            comps = await asyncio.gather(*(llm.achat(p, max_tokens=8) for p in prompts))
        finally:
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
def test_a_fixed_window_is_obeyed_with_at_most_one_refusal_a_window(fake_server, style: str) -> None:
    """Headers cannot tell a fixed window from a token bucket (providers use buckets): the client
    paces at the rate they imply, which within a fixed window can send one request too early; that
    429's headers say the limit is spent, so everyone waits for the window's reset."""
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
    assert texts == [reply_text(p) for p in prompts]  # max_retries=0: a 429 while others are answered spends none
    seen = fake_server.requests()
    windows = -(-n // limit)
    refused = [r for r in seen if r["fault"] is not None]
    assert len(seen) == n + len(refused) and len(refused) <= windows and llm.stats.throttled == len(refused)
    # n requests at `limit` a window need ceil(n / limit) windows: the client waited for each reset.
    assert elapsed >= (windows - 1) * window
    assert llm.stats.limit_wait_s > 0


def test_a_429_without_a_spent_limit_holds_back_only_itself(fake_server) -> None:
    """A refused request waits what Retry-After says (and no longer); the others go on meanwhile."""
    fake_server.configure(faults=[Fault("429", match="LIMITED", times=1, retry_after=0.6)], latency=0.02)
    llm = LLM("fake-model", api_base=fake_server, cache=False, concurrency=4)
    prompts = ["row 0", "LIMITED row"] + [f"row {i}" for i in range(1, 12)]
    assert ask_all(llm, prompts) == [reply_text(p) for p in prompts]
    seen = fake_server.requests()
    limited = [r for r in seen if r["prompt"] == "LIMITED row"]
    assert [r["fault"] for r in limited] == ["429", None]
    refused_at, retried_at = limited[0]["t"], limited[1]["t"]
    assert retried_at - refused_at >= 0.6
    # Nobody waited for it: requests went while it waited out its Retry-After.
    assert any(refused_at < r["t"] < refused_at + 0.5 for r in seen if r["prompt"] != "LIMITED row")
    assert llm.stats.throttled == 1 and llm.limiter.blocked_until == 0.0


def test_a_429_whose_headers_say_the_limit_is_spent_pauses_everyone() -> None:
    from instructkit.models.limits import report_headers

    gate = ProviderLimits()

    async def go(headers: dict[str, str]) -> float:
        ticket = await gate.acquire({"requests": 1}, 8)
        report_headers(headers)
        gate.settle(ticket, 429, retry_after_of(headers))
        start = time.monotonic()
        gate.settle(await gate.acquire({"requests": 1}, 8))
        return time.monotonic() - start

    # Headers that say nothing is spent: a refusal of this request alone, the next one goes at once.
    assert asyncio.run(go({"retry-after": "0.4", "x-ratelimit-remaining-requests": "5",
                           "x-ratelimit-limit-requests": "10", "x-ratelimit-reset-requests": "1s"})) < 0.3
    # Spent: everyone waits for the Retry-After, no longer than the next poll after it.
    waited = asyncio.run(go({"retry-after": "0.4", "x-ratelimit-remaining-requests": "0",
                             "x-ratelimit-limit-requests": "10", "x-ratelimit-reset-requests": "1s"}))
    assert waited >= 0.39
    assert gate.throttled == 2 and gate.refused_unexplained == 1  # only the first was unexplained


def test_a_concurrency_cap_is_learned_from_its_429s(fake_server) -> None:
    """Server admits 6 at a time, client asks for 32: the limit settles at the cap, the refused rows
    are asked again after their Retry-After, and every row is answered."""
    cap, n = 6, 160
    fake_server.configure(max_in_flight=cap, cap_retry_after=0.05, latency=0.03)
    llm = LLM("fake-model", api_base=fake_server, cache=False, concurrency=32, max_retries=2)
    prompts = [f"capped {i}" for i in range(n)]
    assert ask_all(llm, prompts) == [reply_text(p) for p in prompts]
    gate = llm.limiter
    refused = [r for r in fake_server.requests() if r["fault"] == "cap"]
    assert len(refused) == gate.refused_unexplained == llm.stats.throttled
    # Rounds with more than 10% refused shrink the limit (by half at most), rounds that used it grow
    # it by one: it ends near the cap, never past a tenth above it, and most requests were admitted.
    assert cap / 2 <= gate.limit <= cap * (1 + gate.tolerance) + 1
    assert gate.peak > cap and len(refused) < n / 2
    assert gate.state()["concurrency"] == int(gate.limit)


def test_aimd_rounds_decrease_once_hold_and_grow_by_one() -> None:
    gate = ProviderLimits(tolerance=0.1, hold_rounds=2)
    gate.informed = True

    async def round_of(refused: int, total: int) -> None:
        tickets = [await gate.acquire({"requests": 1}, 20) for _ in range(total)]
        for i, ticket in enumerate(tickets):
            gate.settle(ticket, 429 if i < refused else None)

    asyncio.run(round_of(10, 20))  # half refused: the limit becomes what was admitted
    assert gate.limit == 10.0
    asyncio.run(round_of(0, 10))  # it holds there for hold_rounds rounds, used or not
    asyncio.run(round_of(0, 10))
    assert gate.limit == 10.0
    asyncio.run(round_of(1, 10))  # exactly the tolerance (1 of 10): no decrease; the limit was used: +1
    assert gate.limit == 11.0
    asyncio.run(round_of(0, 11))
    assert gate.limit == 12.0
    asyncio.run(round_of(2, 12))  # above the tolerance: times the share admitted
    assert gate.limit == pytest.approx(10.0)
    asyncio.run(round_of(10, 10))  # all refused: by half at most (a decrease is never held back)
    assert gate.limit == pytest.approx(5.0)
    asyncio.run(round_of(0, 5))
    asyncio.run(round_of(0, 5))
    asyncio.run(round_of(0, 3))  # a round that did not use the limit does not grow it
    assert gate.limit == pytest.approx(5.0)


def test_header_limits_are_paced_at_the_providers_rate(fake_server) -> None:
    """A token bucket of 30 requests refilled over 3 s (600 rpm), nearly empty at the start: the
    client learns the rate from the headers and paces its sends, so none is refused."""
    n = 16
    fake_server.configure(rate_limit={"requests": 30, "window": 3.0, "kind": "bucket", "start": 0.1},
                          latency=0.02)  # fmt: skip
    llm = LLM("fake-model", api_base=fake_server, cache=False, concurrency=16, max_retries=0)
    prompts = [f"paced {i}" for i in range(n)]
    start = time.monotonic()
    assert ask_all(llm, prompts) == [reply_text(p) for p in prompts]
    elapsed = time.monotonic() - start
    assert [r["fault"] for r in fake_server.requests()] == [None] * n  # not one refused
    assert llm.limiter.paced() == pytest.approx(600.0, rel=0.1)  # 30 a 3 s, as the headers say
    # 3 requests in the bucket, the rest at 10 a second.
    assert elapsed >= (n - 3 - 1) / 10.0
    assert llm.stats.limit_wait_s > 0


def test_a_429_while_others_are_answered_spends_no_retry(fake_server) -> None:
    fake_server.configure(faults=[Fault("429", match="BUSY", times=3, retry_after=0.05)], latency=0.02)
    llm = LLM("fake-model", api_base=fake_server, cache=False, concurrency=4, max_retries=1)
    prompts = [f"row {i}" for i in range(5)] + ["BUSY row"] + [f"row {i}" for i in range(5, 40)]
    assert ask_all(llm, prompts) == [reply_text(p) for p in prompts]
    assert fake_server.count("BUSY") == 4
    # A provider that answers nobody (an exhausted quota) still fails after max_retries.
    fake_server.configure(faults=[Fault("429", retry_after=0.01)], reset=True)
    llm = LLM("fake-model", api_base=fake_server, cache=False, concurrency=4, max_retries=2)
    with pytest.raises(ModelCallError):
        ask_all(llm, ["quota"])
    assert fake_server.count("quota") == 3


def test_litellm_path_follows_the_same_headers(fake_server) -> None:
    limit, window, n = 3, 0.5, 8
    fake_server.configure(rate_limit={"requests": limit, "window": window, "style": "openai"}, latency=0.02)
    llm = LLM("fake-model", api_base=fake_server, via="litellm", cache=False, concurrency=16, max_retries=0)
    prompts = [f"lite {i}" for i in range(n)]
    assert ask_all(llm, prompts) == [reply_text(p) for p in prompts]
    refused = [r for r in fake_server.requests() if r["fault"] is not None]
    assert len(refused) <= -(-n // limit) and llm.stats.throttled == len(refused)  # one a window at most
    assert llm.stats.limit_wait_s > 0


def test_a_token_budget_waits_for_its_reset() -> None:
    from instructkit.models.limits import report_headers

    gate = ProviderLimits()

    async def go() -> tuple[float, float]:
        probe = await gate.acquire({"requests": 1, "tokens": 50})
        start = time.monotonic()  # before the reply's headers: their reset counts from no later than here
        report_headers({"x-ratelimit-remaining-tokens": "60", "x-ratelimit-reset-tokens": "300ms"})
        gate.settle(probe)
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
    assert went_first < 0.25 and went_second >= 0.3 - 0.01  # the reset was measured from the reply (not later)
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


def test_the_terminal_shows_what_the_limiter_believes(fake_server, tmp_path, capsys) -> None:
    """`judge alpagasus` against a capped server: the progress line shows in flight / limit and the
    429s, the summary the learned concurrency; no row is lost."""
    import json

    from instructkit.cli import main

    fake_server.configure(max_in_flight=4, cap_retry_after=0.05, latency=0.02)
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"instruction": f"q{i}", "output": f"a{i}"}) + "\n" for i in range(40)))
    out = tmp_path / "out.jsonl"
    assert main(["judge", "alpagasus", str(rows), "-m", "fake-model", "--api-base", fake_server, "--concurrency", "16",
                 "--cache-dir", str(tmp_path / "cache"), "-o", "top_logprobs", "0", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    refused = sum(r["fault"] == "cap" for r in fake_server.requests())
    assert refused > 0 and len(out.read_text().splitlines()) == 40
    progress = [line for line in err.splitlines() if line.startswith("[alpagasus:rate] 40/40")]
    assert progress and f"429s {refused}" in progress[-1] and "in flight 0/" in progress[-1]
    summary = next(line for line in err.splitlines() if line.startswith("rate limits:"))
    assert f"{refused} replies were 429" in summary and "learned concurrency" in summary
    assert "Traceback" not in err and "Unclosed" not in err
