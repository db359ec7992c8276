"""Batch API mode against a loopback server that implements the Batch contract (tests/fake_batch.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from instructkit.cli import main as cli_main
from instructkit.data.io import read_records, write_records
from instructkit.models import LLM
from instructkit.models.cache import ResponseCache
from instructkit.run.batch import BatchClient, BatchState, run_batched
from instructkit.run.pipeline import Pipeline
from instructkit.run.runner import RunContext, merge_results

from fake_batch import BATCH_LINE_PATH, serve_fake_batch
from fakes import Fault, prompt_text, reply_text

CHAT = "/v1/chat/completions"


def answer(prompt: str) -> str:
    return reply_text(prompt_text([{"role": "user", "content": prompt}]))


def two_stage(records: list[dict], ctx: RunContext) -> list[dict]:
    """A method whose second call depends on the first answer (two batch rounds)."""

    async def one(rec: dict) -> dict:
        first = await ctx.llm.achat(rec["q"], max_tokens=8)
        second = await ctx.llm.achat(f"follow up on: {first.text}", max_tokens=8)
        return {"first": first.text, "second": second.text}

    return merge_results(records, ctx.map(records, one, stage="ask"), "ask")


def make_ctx(url: str, tmp: Path, name: str = "run") -> RunContext:
    llm = LLM("fake-model", api_base=url, cache=ResponseCache(tmp / "cache"))
    return RunContext(llm=llm, method="two_stage", work_dir=tmp / name, progress=False)


def test_two_rounds_fill_the_cache_and_a_rerun_submits_nothing(tmp_path: Path) -> None:
    records = [{"q": f"question {i}"} for i in range(6)]
    with serve_fake_batch(batch_seconds=0.2) as url:
        ctx = make_ctx(url, tmp_path)
        out = run_batched(two_stage, records, ctx, poll_s=0.05)
        for rec, row in zip(records, out):
            assert row["first"] == answer(rec["q"])
            assert row["second"] == answer(f"follow up on: {row['first']}")
        assert url.created() == 2  # one batch per dependent round
        assert url.count(path=BATCH_LINE_PATH) == 12
        assert url.count(path=CHAT) == 0  # nothing went through the synchronous endpoint
        assert ctx.extras["batch"]["answered"] == 12 and ctx.extras["batch"]["rounds"] == 3
        assert ctx.stats.ok == 6 and ctx.stats.pending == 0
        assert ctx.llm.stats.calls == 12 and ctx.llm.stats.completion_tokens > 0

        # A fresh work dir: the journal is gone, but every answer is a cache hit.
        again = make_ctx(url, tmp_path, "again")
        assert run_batched(two_stage, records, again, poll_s=0.05) == out
        assert url.created() == 2 and again.llm.stats.cache_hits == 12
        # The same answers without batch mode, from the cache.
        sync = make_ctx(url, tmp_path, "sync")
        assert two_stage(records, sync) == out and url.count(path=CHAT) == 0
    state = BatchState(tmp_path / "run" / "batch")
    assert [b["done"] for b in state.batches] == [True, True]
    assert sum(len(b["keys"]) for b in state.batches) == 12


def test_failed_lines_are_recorded_not_cached_and_retried_next_run(tmp_path: Path) -> None:
    records = [{"q": "fine one"}, {"q": "BAD one"}, {"q": "fine two"}]
    with serve_fake_batch([Fault("500", match="BAD")], batch_seconds=0.1) as url:
        ctx = make_ctx(url, tmp_path)
        out = run_batched(two_stage, records, ctx, poll_s=0.05)
        assert out[0]["second"] == answer(f"follow up on: {answer('fine one')}")
        assert "HTTP 500" in out[1]["_errors"]["ask"] and "first" not in out[1]
        assert ctx.stats.failed == 1 and ctx.stats.ok == 2
        errors = [
            json.loads(line)
            for line in (tmp_path / "run" / "batch" / "errors.jsonl").read_text().splitlines()
        ]
        assert len(errors) == 1 and "500" in errors[0]["error"]
        assert ctx.llm.cache.get(errors[0]["custom_id"]) is None
        lines_before = url.count(path=BATCH_LINE_PATH)

        url.configure(faults=[])
        ctx2 = make_ctx(url, tmp_path)  # same work dir: finished rows come from the journal
        out2 = run_batched(two_stage, records, ctx2, poll_s=0.05)
        assert out2[1]["second"] == answer(f"follow up on: {answer('BAD one')}")
        assert out2[0] == out[0] and ctx2.stats.reused == 2
        assert url.count(path=BATCH_LINE_PATH) - lines_before == 2  # only the failed row, two rounds


def test_interrupted_run_polls_its_batch_instead_of_resubmitting(tmp_path: Path) -> None:
    rows = [
        {"instruction": f"Name a colour number {i}", "input": "", "output": f"blue {i}"} for i in range(5)
    ]
    data = tmp_path / "in.jsonl"
    write_records(data, rows)
    out = tmp_path / "out.jsonl"
    with serve_fake_batch(batch_seconds=0.1, batch_hold=True) as url:
        args = [
            "judge",
            "alpagasus",
            str(data),
            "--out",
            str(out),
            "-m",
            "fake-model",
            "--api-base",
            url,
            "--batch",
            "--batch-poll",
            "0.05",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--quiet",
        ]
        proc = subprocess.Popen(
            [sys.executable, "-m", "instructkit.cli", *args],
            env=dict(os.environ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        state_path = tmp_path / "out.jsonl.work" / "batch" / "state.json"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if state_path.exists() and json.loads(state_path.read_text())["batches"][0].get("id"):
                break
            time.sleep(0.05)
        proc.kill()  # after submit, while it polls
        proc.wait()
        assert url.created() == 1 and not out.exists()

        url.hold(False)
        assert cli_main(args) == 0
        assert url.created() == 1  # polled the saved batch, did not submit again
        assert url.count(path=BATCH_LINE_PATH) == 5 and url.count(path=CHAT) == 0
        result = read_records(out)
        assert [r["alpagasus_raw"].startswith("ok ") for r in result] == [True] * 5
        state = json.loads(state_path.read_text())["batches"]
        assert len(state) == 1 and state[0]["done"] and state[0]["answered"] == 5


def test_pipeline_step_with_batch_true_matches_a_synchronous_run(tmp_path: Path) -> None:
    rows = [{"instruction": f"Add {i} and 1", "input": "", "output": str(i + 1)} for i in range(4)]
    write_records(tmp_path / "in.jsonl", rows)
    with serve_fake_batch(batch_seconds=0.1) as url:
        for name, batch in (("sync", "false"), ("batch", "true")):
            (tmp_path / f"{name}.yaml").write_text(
                f"out: {tmp_path / name}\nmodel: fake-model\n"
                f"model_options: {{api_base: '{url}', cache_dir: '{tmp_path / name / 'cache'}'}}\n"
                f"steps:\n  - judge: alpagasus\n    input: in.jsonl\n    batch: {batch}\n    batch_poll: 0.05\n"
            )
            manifest = Pipeline.from_yaml(tmp_path / f"{name}.yaml").run(progress=False)
            assert manifest["steps"][0]["run"]["ok"] == 4
        assert url.created() == 1 and url.count(path=CHAT) == 4 and url.count(path=BATCH_LINE_PATH) == 4
    sync, batched = (read_records(tmp_path / n / "selected.jsonl") for n in ("sync", "batch"))
    assert batched == sync


def test_fake_server_fails_a_batch_with_a_bad_input_file() -> None:
    with serve_fake_batch(batch_seconds=0.05) as url:
        client = BatchClient(url)
        line = {"custom_id": "same", "method": "POST", "url": CHAT, "body": {"model": "m", "messages": []}}
        file_id = client.upload((json.dumps(line) + "\n" + json.dumps(line) + "\n").encode())
        batch = client.create(file_id)
        assert batch["status"] == "validating"
        while batch["status"] not in ("completed", "failed"):
            time.sleep(0.05)
            batch = client.retrieve(batch["id"])
        assert batch["status"] == "failed"
        assert batch["errors"]["data"][0]["code"] == "duplicate_custom_id"


def test_batch_needs_an_openai_compatible_model(tmp_path: Path) -> None:
    ctx = RunContext(llm=LLM("anthropic/claude-3-haiku"), work_dir=tmp_path)
    with pytest.raises(ValueError, match="Batch API"):
        run_batched(two_stage, [{"q": "x"}], ctx)


def test_samples_are_one_line_per_index_and_priced_at_the_batch_discount(tmp_path: Path) -> None:
    from instructkit.models.pricing import cost_of

    def vote(records: list[dict], ctx: RunContext) -> list[dict]:
        async def one(rec: dict) -> dict:
            comps = await ctx.llm.asample(rec["q"], n=3, temperature=0.8, seed=7, max_tokens=8)
            return {"votes": [c.text for c in comps], "cost": sum(c.cost for c in comps)}

        return merge_results(records, ctx.map(records, one, stage="vote"), "vote")

    with serve_fake_batch(batch_seconds=0.1) as url:
        llm = LLM("gpt-4o-mini", api_base=url, cache=ResponseCache(tmp_path / "cache"))  # a priced name
        ctx = RunContext(llm=llm, method="vote", work_dir=tmp_path / "work", progress=False)
        out = run_batched(vote, [{"q": "pick a number"}], ctx, poll_s=0.05)
        lines = url.requests(BATCH_LINE_PATH)
        assert sorted(r["body"]["seed"] for r in lines) == [7, 8, 9] and all(
            "n" not in r["body"] for r in lines
        )
        prompt = prompt_text([{"role": "user", "content": "pick a number"}])
        assert out[0]["votes"] == [reply_text(prompt, 0, 7 + i) for i in range(3)]
        assert llm.stats.cost > 0
        assert abs(out[0]["cost"] - llm.stats.cost) < 1e-12
        usage = llm.stats.prompt_tokens, llm.stats.completion_tokens
        assert abs(llm.stats.cost - cost_of("gpt-4o-mini", *usage) / 2) < 1e-12  # half the synchronous price


def test_max_cost_stops_before_submitting(tmp_path: Path) -> None:
    with serve_fake_batch(batch_seconds=0.1) as url:
        llm = LLM("gpt-4o-mini", api_base=url, cache=ResponseCache(tmp_path / "cache"), max_cost=1e-9)
        ctx = RunContext(llm=llm, method="two_stage", work_dir=tmp_path / "work", progress=False)
        out = run_batched(two_stage, [{"q": "expensive"}], ctx, poll_s=0.05)
        assert "max-cost" in (ctx.stats.stopped_reason or "") and ctx.stats.pending == 1
        assert url.created() == 0 and "first" not in out[0]


@pytest.mark.parametrize("kind,name,options", [
    ("judge", "deita", []), ("judge", "rubric", []), ("judge", "pairwise", []), ("judge", "instag", []),
    ("generate", "evol_instruct", ["-o", "rounds", "2"]),
])  # fmt: skip
def test_cli_batch_output_equals_a_direct_run(
    kind: str, name: str, options: list[str], tmp_path: Path
) -> None:
    rows = [  # response_a/b: what pairwise reads (a row without them is refused before any call)
        {"instruction": f"Explain {w}", "input": "", "output": f"{w} is a thing.",
         "response_a": f"{w} is a thing.", "response_b": f"{w}."}
        for w in ("cats", "rain", "maps")
    ]  # fmt: skip
    write_records(tmp_path / "in.jsonl", rows)
    outputs = []
    with serve_fake_batch(batch_seconds=0.05) as url:
        for mode in ("direct", "batch"):
            extra = ["--batch", "--batch-poll", "0.02"] if mode == "batch" else []
            assert (
                cli_main(
                    [
                        kind,
                        name,
                        str(tmp_path / "in.jsonl"),
                        "--out",
                        str(tmp_path / f"{mode}.jsonl"),
                        "-m",
                        "fake-model",
                        "--api-base",
                        url,
                        "--cache-dir",
                        str(tmp_path / f"cache-{mode}"),
                        "--quiet",
                        *options,
                        *extra,
                    ]
                )
                == 0
            )
            outputs.append((tmp_path / f"{mode}.jsonl").read_text())
        assert url.created() >= 1 and url.count(path=CHAT) == url.count(path=BATCH_LINE_PATH)
    assert outputs[1] == outputs[0]
