"""Crash and resume (SIGKILL mid-run, run again: same output, nothing answered paid twice), the
--max-cost budget (stops cleanly, resumes) and dry runs (estimate, never call), on the fake server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

from instructkit.models import LLM, GenParams
from instructkit.run.runner import RunContext

from fakes import reply_text

N_ROWS = 80

SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from instructkit.data.io import write_records
    from instructkit.models import LLM, GenParams
    from instructkit.run.runner import RunContext, merge_results

    url, cache_dir, work_dir, out, n = sys.argv[1:6]
    llm = LLM("fake-model", api_base=url, cache_dir=cache_dir, max_retries=2)
    ctx = RunContext(llm=llm, method="resume", work_dir=Path(work_dir), concurrency=4, progress=False)
    records = [{"id": i, "instruction": f"resume row {i}"} for i in range(int(n))]

    async def one(rec):
        comp = await llm.achat(rec["instruction"], max_tokens=8)
        return {"answer": comp.text, "answer_tokens": comp.usage.completion_tokens}

    results = ctx.map(records, one, stage="answer")
    write_records(out, merge_results(records, results, "answer"))
    """
)


def start(script: Path, url: str, root: Path) -> subprocess.Popen:
    args = [str(root / "cache"), str(root / "work"), str(root / "out.jsonl"), str(N_ROWS)]
    return subprocess.Popen([sys.executable, str(script), url, *args], stderr=subprocess.PIPE, text=True)


def journal_ids(root: Path) -> set[int]:
    path = root / "work" / "resume.answer.journal.jsonl"
    if not path.exists():
        return set()
    ids = set()
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a line torn by the kill
        if entry.get("ok"):
            ids.add(ANSWER_IDS[entry["value"]["answer"]])
    return ids


ANSWER_IDS = {reply_text(f"resume row {i}"): i for i in range(N_ROWS)}  # answer text -> row id


def test_sigkill_then_resume_gives_identical_output(fake_server, tmp_path: Path) -> None:
    fake_server.configure(latency=0.1)  # 80 rows / 4 concurrent x 0.1 s: about 2 s of work
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)

    # The reference: one uninterrupted run.
    ref = tmp_path / "ref"
    proc = start(script, fake_server, ref)
    assert proc.wait(timeout=120) == 0, proc.stderr.read()
    assert fake_server.count() == N_ROWS

    # The crash: SIGKILL once a quarter of the rows are journaled.
    fake_server.reset()
    run = tmp_path / "run"
    proc = start(script, fake_server, run)
    deadline = time.monotonic() + 60
    while len(journal_ids(run)) < N_ROWS // 4:
        assert proc.poll() is None and time.monotonic() < deadline, "the job ended before it could be killed"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    answered = journal_ids(run)
    assert N_ROWS // 4 <= len(answered) < N_ROWS and not (run / "out.jsonl").exists()
    before = Counter(r["prompt"] for r in fake_server.requests())

    # The resume.
    fake_server.reset()
    proc = start(script, fake_server, run)
    assert proc.wait(timeout=120) == 0, proc.stderr.read()
    after = Counter(r["prompt"] for r in fake_server.requests())
    assert (run / "out.jsonl").read_bytes() == (ref / "out.jsonl").read_bytes()
    assert not any(f"resume row {i}" in after for i in answered)  # no answered row paid twice
    assert set(before) | set(after) == {f"resume row {i}" for i in range(N_ROWS)}
    # Only requests in flight at the kill (at most the concurrency) may have been sent twice.
    assert sum((before + after).values()) <= N_ROWS + 4


PRICED = "gpt-4o-mini"  # litellm prices it; the fake server serves it over the fast HTTP path
LONG = " and some more words" * 200  # about 1000 prompt tokens, so each call costs something


def run_priced(url: str, cache_dir: Path, work: Path, n: int, **kw) -> tuple[list, LLM, RunContext]:
    llm = LLM(PRICED, api_base=url, cache_dir=str(cache_dir), max_retries=1, **kw)
    ctx = RunContext(llm=llm, method="budget", work_dir=work, concurrency=4, progress=False)

    async def one(i: int) -> dict:
        return {"text": (await llm.achat(f"budget row {i}{LONG}", max_tokens=8)).text}

    results = ctx.map(list(range(n)), one, stage="answer")
    llm.close()
    return results, llm, ctx


def test_max_cost_stops_cleanly_and_resumes(fake_server, tmp_path: Path) -> None:
    probe = LLM(PRICED, api_base=fake_server)
    assert probe.cost_model == PRICED
    one_call = probe._estimate(
        [{"role": "user", "content": f"budget row 0{LONG}"}], GenParams(max_tokens=8), 1
    )[1]
    assert one_call > 0

    budget = one_call * 10.5
    results, llm, ctx = run_priced(fake_server, tmp_path / "cache", tmp_path / "work", 40, max_cost=budget)
    done = [r for r in results if r.ok]
    pending = [r for r in results if r.pending]
    assert 5 <= len(done) <= 10 and len(done) + len(pending) == 40
    assert not any(not r.ok and not r.pending for r in results)  # nothing failed, nothing lost
    assert 0 < llm.stats.cost <= budget
    assert ctx.stats.stopped_reason and "max-cost" in ctx.stats.stopped_reason
    assert fake_server.count() == len(done) == llm.stats.calls  # no call was made past the budget

    # A bigger budget finishes the job, paying only for the rows not yet answered.
    fake_server.reset()
    again, llm2, _ = run_priced(fake_server, tmp_path / "cache", tmp_path / "work", 40, max_cost=1.0)
    assert all(r.ok for r in again)
    assert fake_server.count() == len(pending) == llm2.stats.calls
    assert [r.value for r in again if r.key in {d.key for d in done}] == [d.value for d in done]


def test_dry_run_estimates_without_calling(fake_server, tmp_path: Path) -> None:
    # Answer 10 of the 30 rows for real first: a dry run counts only what is not cached.
    run_priced(fake_server, tmp_path / "cache", tmp_path / "work", 10)
    fake_server.reset()
    results, llm, ctx = run_priced(fake_server, tmp_path / "cache", None, 30, dry_run=True)
    assert fake_server.count() == 0 and llm.stats.calls == 0
    # Every row is walked; the 20 uncached ones with placeholder answers (estimated, not answered).
    assert [r.estimated for r in results] == [False] * 10 + [True] * 20
    assert ctx.stats.failed == 0 and ctx.stats.ok == 10 and ctx.stats.pending == 20
    assert all(r.value["text"].startswith("[dry run") for r in results[10:])
    assert llm.stats.estimated_calls == 20 and llm.stats.cache_hits == 10
    # The 10 real calls calibrated the estimate: their replies, not max_tokens, size the 20 others.
    msgs = [{"role": "user", "content": f"budget row 10{LONG}"}]
    prompt, reply, cost, calibrated = llm.estimate_call(msgs, GenParams(max_tokens=8), 1)
    assert calibrated and reply < 8 and cost < llm._estimate(msgs, GenParams(max_tokens=8), 1)[1]
    assert llm.stats.estimated_calibrated == 20
    assert llm.stats.estimated_tokens == pytest.approx(20 * (prompt + reply), rel=0.01)
    assert llm.stats.estimated_cost == pytest.approx(20 * cost, rel=0.01)
    # Nothing of the dry run was cached: a second dry run estimates the same 20 calls.
    results, llm, _ = run_priced(fake_server, tmp_path / "cache", None, 30, dry_run=True)
    assert llm.stats.estimated_calls == 20 and fake_server.count() == 0
