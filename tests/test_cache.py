"""The response cache through LLM + the runner, against the loopback fake server: zero calls on a
re-run, one call for one changed row, new samples only for new sample indexes, no API key in any
file or log, two processes sharing one cache directory, and cache=False."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

from instructkit.data.io import write_records
from instructkit.models import LLM
from instructkit.models.cache import ResponseCache
from instructkit.run.runner import RunContext, merge_results

from fakes import Fault, reply_text

SECRET = "sk-instructkit-TESTKEY-5f1e9a7c3d2b"


def run_stage(url: str, cache, prompts: list[str], work_dir: Path | None, **kw) -> tuple[list, LLM]:
    llm = LLM("fake-model", api_base=url, cache=cache, max_retries=kw.pop("max_retries", 2), **kw)
    ctx = RunContext(llm=llm, method="cachetest", work_dir=work_dir, concurrency=16, progress=False)

    async def one(prompt: str) -> dict:
        return {"text": (await llm.achat(prompt, max_tokens=8)).text}

    results = ctx.map(prompts, one, stage="answer")
    llm.close()
    return results, llm


def test_rerun_makes_zero_calls_and_one_changed_row_one_call(fake_server, tmp_cache, tmp_path: Path) -> None:
    prompts = [f"row {i}" for i in range(20)]
    first, llm1 = run_stage(fake_server, tmp_cache, prompts, tmp_path / "w1")
    assert llm1.stats.calls == 20 and fake_server.count() == 20

    fake_server.reset()  # fresh work dir: no journal to lean on, only the response cache
    again, llm2 = run_stage(fake_server, tmp_cache, prompts, tmp_path / "w2")
    assert fake_server.count() == 0 and llm2.stats.calls == 0 and llm2.stats.cache_hits == 20
    assert [r.value for r in again] == [r.value for r in first]

    changed = prompts[:7] + ["row 7 (edited)"] + prompts[8:]
    third, llm3 = run_stage(fake_server, tmp_cache, changed, tmp_path / "w3")
    assert [r["prompt"] for r in fake_server.requests()] == ["row 7 (edited)"]
    assert llm3.stats.calls == 1 and llm3.stats.cache_hits == 19
    assert third[7].value == {"text": reply_text("row 7 (edited)")}


def test_more_samples_pay_only_for_new_indexes(fake_server, tmp_cache) -> None:
    llm = LLM("fake-model", api_base=fake_server, cache=tmp_cache)
    two = llm.sample("Write a haiku.", n=2, temperature=0.7, max_tokens=16)
    five = llm.sample("Write a haiku.", n=5, temperature=0.7, max_tokens=16)
    again = llm.sample("Write a haiku.", n=5, temperature=0.7, max_tokens=16)
    llm.close()
    assert [r["body"].get("n", 1) for r in fake_server.requests()] == [2, 3]
    assert [c.text for c in five[:2]] == [c.text for c in two]
    assert [c.cached for c in five] == [True, True, False, False, False]
    assert all(c.cached for c in again) and [c.text for c in again] == [c.text for c in five]
    assert llm.stats.calls == 2

    # Greedy requests for several indexes are separate calls, each cached by its index.
    fake_server.reset()
    greedy = LLM("fake-model", api_base=fake_server, cache=tmp_cache)
    greedy.sample("Name a colour.", n=3, max_tokens=4)
    greedy.sample("Name a colour.", n=3, max_tokens=4)
    greedy.close()
    assert fake_server.count() == 3 and greedy.stats.calls == 3 and greedy.stats.cache_hits == 3


def test_api_key_never_written(fake_server, tmp_path: Path, capfd) -> None:
    fake_server.configure(
        faults=[
            Fault("status", status=401, match="AUTHFAIL", body='{"error": "bad key: {authorization}"}'),
            Fault("500", match="ECHO500", body='{"error": "upstream saw {authorization}"}'),
        ]
    )
    cache_dir, work = tmp_path / "cache", tmp_path / "work"
    log_file = work / "run.log"
    work.mkdir()
    handler = logging.FileHandler(log_file)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    prompts = [f"row {i}" for i in range(8)] + ["AUTHFAIL row", "ECHO500 row"]
    try:
        for via in ("http", "litellm"):
            llm = LLM("fake-model", api_base=fake_server, api_key=SECRET, via=via, cache_dir=str(cache_dir),
                      max_retries=1, timeout=5)  # fmt: skip
            ctx = RunContext(llm=llm, method=f"keytest-{via}", work_dir=work, concurrency=8, progress=True)

            async def one(prompt: str, llm=llm) -> dict:
                return {"text": (await llm.achat(prompt, max_tokens=8)).text}

            results = ctx.map(prompts, one, stage="answer")
            llm.embed(["embed me"])
            llm.close()
            assert sum(r.ok for r in results) == 8
            assert all(SECRET not in (r.error or "") for r in results)
            # The failure is reported (what a library quotes of the server's body varies by version:
            # our own client scrubs the echoed key to ***); the files below are what must hold.
            assert results[-2].error and "401" in results[-2].error
            if via == "http":
                assert "***" in results[-2].error
            records = merge_results([{"prompt": p} for p in prompts], results, "answer")
            write_records(work / f"out-{via}.jsonl", records)
            write_records(work / f"stats-{via}.json", [llm.stats.as_dict(), ctx.stats.as_dict()])
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        handler.close()
    # The key was really sent (so its absence below means something)...
    auth = {r["headers"].get("authorization") for r in fake_server.requests(path=None)}
    assert auth == {f"Bearer {SECRET}"}
    # ... and it appears in no file under the cache or work directory, nor in the captured output.
    files = [p for d in (cache_dir, work) for p in d.rglob("*") if p.is_file()]
    assert any(p.suffix == ".jsonl" for p in files) and any("cache.db" in p.name for p in files)
    for path in files:
        assert SECRET.encode() not in path.read_bytes(), path
    out, err = capfd.readouterr()
    assert err  # progress and tracebacks went somewhere
    assert SECRET not in out and SECRET not in err


WORKER = textwrap.dedent(
    """
    import json, sys
    from instructkit.models import LLM
    from instructkit.run.runner import RunContext
    url, cache_dir, first, last, out = sys.argv[1:6]
    llm = LLM("fake-model", api_base=url, cache_dir=cache_dir, max_retries=3)
    ctx = RunContext(llm=llm, method="shared", work_dir=None, concurrency=8, progress=False)
    async def one(prompt):
        return (await llm.achat(prompt, max_tokens=8)).text
    prompts = [f"shared row {i}" for i in range(int(first), int(last))]
    for _ in range(2):  # the second pass reads what both processes wrote
        results = ctx.map(prompts, one, stage="answer")
    json.dump({p: r.value for p, r in zip(prompts, results) if r.ok}, open(out, "w"))
    print(json.dumps(llm.stats.as_dict()))
    """
)


def test_two_processes_share_one_cache(fake_server, tmp_path: Path) -> None:
    fake_server.configure(latency=0.01)
    cache_dir = tmp_path / "cache"
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    ranges = [(0, 120), (60, 180)]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(script),
                fake_server,
                str(cache_dir),
                str(a),
                str(b),
                str(tmp_path / f"out{k}.json"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k, (a, b) in enumerate(ranges)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    answers = [json.loads((tmp_path / f"out{k}.json").read_text()) for k in range(2)]
    assert [len(a) for a in answers] == [120, 120]
    for prompt in set(answers[0]) & set(answers[1]):
        assert answers[0][prompt] == answers[1][prompt] == reply_text(prompt)
    # Each prompt was paid once, or twice only when both processes missed it at the same moment.
    counts = Counter(r["prompt"] for r in fake_server.requests())
    assert all(counts[f"shared row {i}"] == 1 for i in [*range(60), *range(120, 180)])
    assert all(1 <= counts[f"shared row {i}"] <= 2 for i in range(60, 120))
    # The shared directory holds exactly one clean entry per prompt, readable by a third process.
    cache = ResponseCache(cache_dir)
    assert len(cache.store) == 180
    for key in cache.store.iterkeys():
        assert cache.get(key)["text"].startswith("ok ")
    fake_server.reset()
    results, llm = run_stage(fake_server, cache, [f"shared row {i}" for i in range(180)], None)
    assert fake_server.count() == 0 and llm.stats.cache_hits == 180
    merged = {**answers[0], **answers[1]}
    assert [r.value for r in results] == [{"text": merged[f"shared row {i}"]} for i in range(180)]
    cache.close()


def test_cache_disabled_calls_every_time(fake_server, tmp_path: Path) -> None:
    prompts = [f"row {i}" for i in range(5)]
    for k in range(2):
        _, llm = run_stage(fake_server, False, prompts, tmp_path / f"w{k}")
        assert llm.stats.calls == 5 and llm.stats.cache_hits == 0
    assert fake_server.count() == 10


def test_writes_in_a_loop_turn_are_read_back_and_committed(tmp_path: Path) -> None:
    import asyncio

    cache = ResponseCache(tmp_path / "cache")

    async def write_then_read() -> dict | None:
        cache.set("k1", {"text": "a"})
        seen = cache.get("k1")  # read-your-writes before the turn's commit
        await asyncio.sleep(0)
        return seen

    assert asyncio.run(write_then_read()) == {"text": "a"}
    asyncio.run(write_then_read())  # a second event loop schedules its own commit
    other = ResponseCache(tmp_path / "cache")  # another handle on the directory sees the commits
    assert other.get("k1") == {"text": "a"}
    cache.set("k2", {"text": "b"})  # outside a loop: written at once
    assert other.get("k2") == {"text": "b"}
    cache.close()
    other.close()
