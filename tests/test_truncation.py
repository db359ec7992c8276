"""Replies cut at max_tokens (finish_reason "length"): counted per call and per step, and with
`retry_length` asked again once with a larger limit. The fake server cuts replies longer than the
request's max_tokens (its replies are 3 words), as a real server does, so the cut is on demand."""

from __future__ import annotations

import json
from pathlib import Path

from instructkit.cli import main
from instructkit.models import LLM
from instructkit.models.cache import ResponseCache

from fakes import Fault, reply_text


def test_cut_replies_are_counted_and_retried_with_a_larger_limit(fake_server, tmp_path: Path) -> None:
    fake_server.configure(max_tokens_cut=True)
    cache = ResponseCache(tmp_path / "cache")
    plain = LLM("fake-model", api_base=fake_server, cache=cache)
    cut = plain.chat("a question", max_tokens=2)
    assert cut.finish_reason == "length" and cut.text == " ".join(reply_text("a question").split()[:2])
    assert plain.stats.truncated == 1 and plain.stats.length_retries == 0

    retrying = LLM("fake-model", api_base=fake_server, cache=cache, retry_length=2)
    full = retrying.chat("a question", max_tokens=2)
    assert full.finish_reason == "stop" and full.text == reply_text("a question")
    assert retrying.stats.length_retries == 1 and retrying.stats.truncated == 0
    sent = [r["body"]["max_tokens"] for r in fake_server.requests()]
    assert sent == [2, 4]  # the cut reply came from the cache; only the longer request was sent
    # The retry is a cached request of its own; a reply that fits is never asked again.
    assert retrying.chat("a question", max_tokens=2).text == full.text and len(fake_server.requests()) == 2
    assert retrying.stats.length_retries == 2 and retrying.stats.calls == 1
    assert retrying.chat("other", max_tokens=8).finish_reason == "stop" and retrying.stats.length_retries == 2
    member = retrying.derive("another-model@" + fake_server)  # a jury member follows the run's policy
    assert member.chat("a question", max_tokens=2).finish_reason == "stop" and retrying.stats.length_retries == 3
    plain.close()
    retrying.close()


def test_a_step_reports_its_cut_replies(fake_server, tmp_path: Path, capsys) -> None:
    fake_server.configure(max_tokens_cut=True)
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"instruction": f"q{i}", "output": f"a{i}"}) + "\n" for i in range(3)))
    common = ["judge", "alpagasus", str(rows), "-m", "fake-model", "--api-base", fake_server,
              "--cache-dir", str(tmp_path / "cache"), "-o", "max_tokens", "2", "--quiet"]
    assert main([*common, "--out", str(tmp_path / "cut.jsonl")]) == 0
    manifest = json.loads((tmp_path / "cut.jsonl.manifest.json").read_text())
    assert manifest["calls"]["truncated"] == 3
    assert "3 replies were cut at max_tokens" in capsys.readouterr().err

    assert main([*common, "--retry-length", "2", "--out", str(tmp_path / "retried.jsonl")]) == 0
    manifest = json.loads((tmp_path / "retried.jsonl.manifest.json").read_text())
    assert manifest["calls"]["truncated"] == 0 and manifest["calls"]["length_retries"] == 3
    assert "cut at max_tokens" not in capsys.readouterr().err

    # A provider that throttles: the summary says how often and how long.
    fake_server.configure(faults=[Fault("429", match="q1", times=1, retry_after=0.2)], reset=True)
    assert main([*common, "--no-cache", "--out", str(tmp_path / "throttled.jsonl")]) == 0
    assert "rate limits: 1 replies were 429" in capsys.readouterr().err


def test_one_token_score_reads_are_neither_counted_nor_retried(fake_server, tmp_path: Path) -> None:
    """DEITA's scorer asks a server for one token: ending on the limit is the point of such a read."""
    fake_server.configure(max_tokens_cut=True)
    llm = LLM("fake-model", api_base=fake_server, cache=ResponseCache(tmp_path / "cache"), retry_length=4)
    read = llm.chat("a question", max_tokens=1)
    assert read.finish_reason == "length"
    assert llm.stats.truncated == 0 and llm.stats.length_retries == 0 and llm.stats.calls == 1
