"""Faults on the wire (429 + Retry-After, 5xx, timeouts, broken JSON, dropped connections) through
LLM + the runner, against the loopback fake server: nothing lost, failures recorded, never cached,
and the next run retries only the failed rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from instructkit.models import LLM, BudgetExceeded, GenParams, ModelCallError, to_messages
from instructkit.models.cache import ResponseCache
from instructkit.models.limits import estimate_tokens
from instructkit.models.pricing import cost_of
from instructkit.run.runner import RunContext, merge_results

from fakes import Fault, embedding_of, reply_text

MAX_TOKENS = 8


def make_llm(url: str, cache: ResponseCache, **kw) -> LLM:
    kw.setdefault("timeout", 1.0)
    kw.setdefault("max_retries", 4)
    return LLM("fake-model", api_base=url, cache=cache, **kw)


def run_stage(llm: LLM, prompts: list[str], work_dir: Path, concurrency: int = 16):
    ctx = RunContext(llm=llm, method="faults", work_dir=work_dir, concurrency=concurrency, progress=False)

    async def one(prompt: str) -> dict:
        comp = await llm.achat(prompt, max_tokens=MAX_TOKENS)
        return {"text": comp.text}

    results = ctx.map(prompts, one, stage="answer")
    llm.close()
    return results, ctx


def journal_entries(work_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (work_dir / "faults.answer.journal.jsonl").read_text().splitlines()]


def test_retry_after_is_honoured(fake_server, tmp_path: Path) -> None:
    fake_server.configure(faults=[Fault("429", match="LIMITED", times=1, retry_after=1.0)])
    prompts = ["LIMITED row"] + [f"plain {i}" for i in range(5)]
    llm = make_llm(fake_server, ResponseCache(tmp_path / "cache"))
    results, _ = run_stage(llm, prompts, tmp_path / "work")
    assert all(r.ok for r in results)
    assert results[0].value == {"text": reply_text("LIMITED row")}
    hits = fake_server.requests()
    limited = [r for r in hits if r["prompt"] == "LIMITED row"]
    assert [r["fault"] for r in limited] == ["429", None]
    waited = limited[1]["t"] - limited[0]["t"]
    assert 1.0 <= waited < 5.0, waited  # generous upper bound: CI machines are busy
    assert llm.stats.retries == 1 and llm.stats.calls == 7


def test_transient_faults_are_retried(fake_server, tmp_path: Path) -> None:
    tags = {"T500": "500", "TSLOW": "timeout", "TBROKEN": "broken_json", "TDROP": "drop", "T429": "429"}
    faults = [Fault(kind, match=tag, times=2, delay=5.0) for tag, kind in tags.items()]
    fake_server.configure(faults=faults)
    prompts = [f"{tag} row {i}" for tag in tags for i in range(3)] + [f"clean row {i}" for i in range(10)]
    llm = make_llm(fake_server, ResponseCache(tmp_path / "cache"), timeout=0.5)
    results, ctx = run_stage(llm, prompts, tmp_path / "work")
    assert len(results) == len(prompts)
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    assert [r.value["text"] for r in results] == [reply_text(p) for p in prompts]
    for tag, kind in tags.items():
        seen = [r for r in fake_server.requests() if r["prompt"].startswith(tag)]
        assert len(seen) == 9, (tag, len(seen))  # 3 rows x (2 faults + 1 success)
        assert sorted(r["fault"] or "" for r in seen) == sorted([kind] * 6 + [""] * 3)
    assert fake_server.count("clean") == 10
    assert llm.stats.retries == 2 * 3 * len(tags) and llm.stats.failures == 0
    assert ctx.stats.ok == len(prompts) and ctx.stats.failed == 0
    assert len(journal_entries(tmp_path / "work")) == len(prompts)


def test_many_rows_under_random_faults_lose_nothing(fake_server, tmp_path: Path) -> None:
    kinds = ["500", "broken_json", "drop", "429", "timeout"]
    # About half the requests fail, by request index; no prompt fails more than twice.
    faults = [Fault(kind, at=list(range(k, 2000, 9)), times=2, delay=5.0) for k, kind in enumerate(kinds)]
    fake_server.configure(faults=faults)
    prompts = [f"bulk row {i}" for i in range(240)]
    llm = make_llm(fake_server, ResponseCache(tmp_path / "cache"), timeout=0.5, max_retries=2)
    results, ctx = run_stage(llm, prompts, tmp_path / "work", concurrency=48)
    assert all(r.ok for r in results), [r.error for r in results if not r.ok][:3]
    assert [r.value["text"] for r in results] == [reply_text(p) for p in prompts]
    seen = fake_server.requests()
    assert sum(r["fault"] is not None for r in seen) >= 100  # the faults really happened
    assert sum(r["fault"] is None for r in seen) == len(prompts)  # each row answered exactly once
    assert {e["key"] for e in journal_entries(tmp_path / "work") if e["ok"]} == {r.key for r in results}


def test_final_failures_are_recorded_not_cached_and_retried_next_run(fake_server, tmp_path: Path) -> None:
    fake_server.configure(
        faults=[Fault("500", match="DOOMED"), Fault("status", status=400, match="REJECTED")]
    )
    prompts = [f"fine {i}" for i in range(6)] + ["DOOMED a", "DOOMED b", "REJECTED c"]
    cache = ResponseCache(tmp_path / "cache")
    work = tmp_path / "work"
    llm = make_llm(fake_server, cache, max_retries=2)
    results, ctx = run_stage(llm, prompts, work)

    assert [r.ok for r in results] == [True] * 6 + [False] * 3
    assert all("HTTP 500" in r.error for r in results[6:8]) and "HTTP 400" in results[8].error
    assert fake_server.count("DOOMED a") == 3  # 1 + max_retries
    assert fake_server.count("REJECTED") == 1  # a 400 is not retried
    assert ctx.stats.failed == 3 and len(ctx.stats.failures) == 3
    merged = merge_results([{"p": p} for p in prompts], results, "answer")
    assert "HTTP 500" in merged[6]["_errors"]["answer"] and "_errors" not in merged[0]
    entries = {e["key"]: e for e in journal_entries(work)}
    for res in results[6:]:
        assert entries[res.key]["ok"] is False and entries[res.key]["error"] == res.error
    gen = GenParams(max_tokens=MAX_TOKENS)
    for prompt, res in zip(prompts, results):
        stored = cache.get(llm.chat_key(to_messages(prompt), gen))
        assert (stored is not None) == res.ok, prompt  # failures are never cached

    # The server recovers; the next run asks only for the three failed rows.
    fake_server.configure(faults=[], reset=True)
    again, ctx2 = run_stage(make_llm(fake_server, cache), prompts, work)
    assert all(r.ok for r in again)
    assert sorted(r["prompt"] for r in fake_server.requests()) == sorted(prompts[6:])
    assert ctx2.stats.reused == 6 and [r.value for r in again[:6]] == [r.value for r in results[:6]]

    # And a third run asks for nothing.
    fake_server.reset()
    third, _ = run_stage(make_llm(fake_server, cache), prompts, work)
    assert all(r.ok for r in third) and fake_server.count() == 0


def test_embedding_faults_are_retried(fake_server, tmp_path: Path) -> None:
    fake_server.configure(faults=[Fault("broken_json", times=1, match="alpha"), Fault("drop", at=[1])])
    llm = make_llm(fake_server, ResponseCache(tmp_path / "cache"))
    vecs = llm.embed(["alpha", "beta"])
    llm.close()
    assert np.allclose(vecs, np.array([embedding_of("alpha"), embedding_of("beta")], dtype=np.float32))
    assert fake_server.count(path="/v1/embeddings") == 3


def test_embeddings_are_budgeted_before_they_are_sent(fake_server, tmp_path: Path) -> None:
    """`aembed` goes through the same budget as chat: a batch is reserved at its estimated prompt
    tokens (embedding models price input only) and refused, unsent, when it would pass max_cost."""
    model = "text-embedding-3-small"  # priced by the price map; the fake server answers any name
    texts, more = ["alpha", "beta", "gamma"], ["delta", "omega", "kappa"]  # the same estimate
    price = cost_of(model, estimate_tokens([{"content": t} for t in texts]), 0)
    assert price > 0 and price == cost_of(model, estimate_tokens([{"content": t} for t in more]), 0)
    with pytest.raises(BudgetExceeded):
        LLM(model, api_base=fake_server, cache=ResponseCache(tmp_path / "poor"), max_cost=price / 2).embed(texts)
    assert fake_server.count(path="/v1/embeddings") == 0
    llm = LLM(model, api_base=fake_server, cache=ResponseCache(tmp_path / "cache"), max_cost=price * 1.5)
    vecs = llm.embed(texts)
    assert np.allclose(vecs, np.array([embedding_of(t) for t in texts], dtype=np.float32))
    assert llm.stats.calls == 1 and llm.stats.cost == price  # booked at the reservation, the same sum
    with pytest.raises(BudgetExceeded):
        llm.embed(more)
    assert llm.embed(texts).shape == (3, 8) and llm.stats.cache_hits == 3  # cached texts cost nothing
    llm.close()
    assert fake_server.count(path="/v1/embeddings") == 1


def test_embedding_retries_follow_the_retry_policy(fake_server, tmp_path: Path) -> None:
    fake_server.configure(faults=[Fault("500", match="alpha", times=1)])
    strict = make_llm(fake_server, ResponseCache(tmp_path / "strict"), max_retries=0)
    with pytest.raises(ModelCallError):
        strict.embed(["alpha"])
    strict.close()
    assert strict.stats.failures == 1 and strict.stats.retries == 0
    assert fake_server.count(path="/v1/embeddings") == 1
    fake_server.configure(faults=[Fault("500", match="alpha", times=1)], reset=True)
    patient = make_llm(fake_server, ResponseCache(tmp_path / "patient"), max_retries=2)
    assert np.allclose(patient.embed(["alpha"])[0], embedding_of("alpha"))
    patient.close()
    assert patient.stats.retries == 1 and patient.stats.calls == 2 and patient.stats.failures == 0
    assert fake_server.count(path="/v1/embeddings") == 2


def test_an_embedding_429_is_throttled_like_chat(fake_server, tmp_path: Path) -> None:
    """Embeddings pass the provider's gate: a 429 is counted, its Retry-After is waited out."""
    fake_server.configure(faults=[Fault("429", match="alpha", times=1, retry_after=0.5)])
    llm = make_llm(fake_server, ResponseCache(tmp_path / "cache"), timeout=5.0)
    assert np.allclose(llm.embed(["alpha"])[0], embedding_of("alpha"))
    llm.close()
    assert llm.stats.throttled == 1 and llm.stats.retries == 1
    first, second = fake_server.requests(path="/v1/embeddings")
    assert first["fault"] == "429" and second["fault"] is None
    assert second["t"] - first["t"] >= 0.5


def test_an_embedding_dry_run_sends_nothing_and_counts_each_batch(fake_server, tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "cache")
    texts = [f"text number {i}" for i in range(5)]
    dry = make_llm(fake_server, cache, dry_run=True)
    vecs = dry.embed(texts, batch_size=2)
    dry.close()
    assert fake_server.count(path="/v1/embeddings") == 0 and dry.stats.estimated_calls == 3
    assert dry.stats.estimated_tokens == sum(estimate_tokens([{"content": t} for t in texts[s : s + 2]])
                                             for s in range(0, 5, 2))  # fmt: skip
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-6)  # placeholder unit vectors
    real = make_llm(fake_server, cache)
    got = real.embed(texts, batch_size=2)
    real.close()
    assert real.stats.cache_hits == 0 and fake_server.count(path="/v1/embeddings") == 3  # nothing was cached
    assert np.allclose(got, np.array([embedding_of(t) for t in texts], dtype=np.float32))
