"""Guarded spending through the CLI: a jury derived from the run's model (dry run, one budget, one
call count), rows refused before any call, JSON-list options, and no unclosed HTTP session.

The loopback fake server only counts requests here; what the models answer does not matter."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from instructkit.generators.self_instruct import load_seed_tasks

from instructkit import registry
from instructkit.data.io import InputError

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PRICED = ("gpt-4o-mini", "gpt-4o-mini-2024-07-18")  # litellm prices both alike; the fake serves any name


def cli(*args: str, cache: Path) -> subprocess.CompletedProcess:
    """The CLI in a subprocess (its own event loop and exit path), with its own response cache."""
    env = {**os.environ, "INSTRUCTKIT_RESPONSE_CACHE_DIR": str(cache)}
    run = subprocess.run([sys.executable, "-m", "instructkit.cli", *args], capture_output=True, text=True, env=env)
    assert "Unclosed" not in run.stderr, run.stderr[-3000:]  # every HTTP session closed, on every exit path
    assert "Traceback" not in run.stderr, run.stderr[-3000:]  # expected failures are one line
    return run


def rows_file(tmp_path: Path, n: int) -> Path:
    rows = [json.loads(line) for line in (EXAMPLES / "records.jsonl").read_text().splitlines()[:n]]
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def jury(url: str, rows: Path, out: Path, cache: Path, members: list[str], *extra: str) -> subprocess.CompletedProcess:
    return cli("judge", "jury", str(rows), "--out", str(out), "-m", members[0], "--quiet",
               "-o", "models", json.dumps(members),  # a JSON list: its items hold URLs, split on nothing
               "-o", "judge_options", json.dumps({"max_tokens": 4}), *extra, cache=cache)  # fmt: skip


def calls_of(stderr: str, what: str) -> int:
    m = re.search(rf"{what} (\d+)", stderr)
    assert m, stderr[-2000:]
    return int(m.group(1))


def test_jury_dry_run_sends_nothing_and_counts_every_member(fake_server, tmp_path: Path) -> None:
    rows = rows_file(tmp_path, 5)
    members = [f"judge-{k}@{fake_server}" for k in "abc"]
    dry = jury(fake_server, rows, tmp_path / "dry.jsonl", tmp_path / "cache", members, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert fake_server.count() == 0 and not (tmp_path / "dry.jsonl").exists()
    assert calls_of(dry.stderr, "dry run:") == 15  # 3 members x 5 rows, each member estimated

    real = jury(fake_server, rows, tmp_path / "real.jsonl", tmp_path / "cache", members)
    assert real.returncode == 0, real.stderr
    assert fake_server.count() == 15  # the estimate was the real count
    assert calls_of(real.stderr, r"\| calls") == 15  # the summary counts member calls
    for k in "abc":
        assert sum(r["body"]["model"] == f"judge-{k}" for r in fake_server.requests()) == 5
    out = [json.loads(line) for line in (tmp_path / "real.jsonl").read_text().splitlines()]
    assert len(out) == 5 and all(len(r["jury_parses"]) == 3 for r in out)


def test_max_cost_stops_a_jury_across_members(fake_server, tmp_path: Path) -> None:
    rows = rows_file(tmp_path, 6)
    members = [f"{name}@{fake_server}" for name in PRICED]
    dry = jury(fake_server, rows, tmp_path / "dry.jsonl", tmp_path / "c1", members, "--dry-run")
    estimate = float(re.search(r"~\$([0-9.]+)", dry.stderr).group(1))
    assert estimate > 0 and fake_server.count() == 0
    # Enough for the first member's 6 calls and about half of the second's: one budget for both.
    budget = estimate * 0.75
    run = jury(fake_server, rows, tmp_path / "o.jsonl", tmp_path / "c2", members, "--max-cost", f"{budget:.8f}")
    assert run.returncode == 3, run.stderr
    assert "max-cost" in run.stderr and "Run the same command again" in run.stderr
    first = sum(r["body"]["model"] == PRICED[0] for r in fake_server.requests())
    second = sum(r["body"]["model"] == PRICED[1] for r in fake_server.requests())
    assert first == 6 and 0 < second < 6, (first, second)
    manifest = json.loads((tmp_path / "o.jsonl.manifest.json").read_text())
    assert manifest["calls"]["calls"] == first + second and 0 < manifest["calls"]["cost"] <= budget


def test_row_without_instruction_is_refused_before_any_call(fake_server, tmp_path: Path) -> None:
    bad = tmp_path / "qa.jsonl"
    bad.write_text(json.dumps({"instruction": "Name a colour.", "output": "Red."}) + "\n"
                   + json.dumps({"question": "Name a fruit.", "answer": "Apple."}) + "\n")  # fmt: skip
    run = cli("judge", "alpagasus", str(bad), "--out", str(tmp_path / "o.jsonl"), "-m", f"m@{fake_server}",
              cache=tmp_path / "cache")  # fmt: skip
    assert run.returncode == 2
    assert f"{bad}:2" in run.stderr and "'instruction'" in run.stderr
    assert "--map instruction=question" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1  # one clear line
    assert fake_server.count() == 0 and not (tmp_path / "o.jsonl").exists()
    # The suggested mapping fixes a file whose rows all use those columns: every row is judged.
    qa = tmp_path / "qa_all.jsonl"
    qa.write_text(bad.read_text().splitlines()[1] + "\n" + bad.read_text().splitlines()[1] + "\n")
    fixed = cli("judge", "alpagasus", str(qa), "--out", str(tmp_path / "o.jsonl"), "-m", f"m@{fake_server}",
                "--map", "instruction=question", "--map", "output=answer", "--quiet", cache=tmp_path / "cache")
    assert fixed.returncode == 0, fixed.stderr
    assert fake_server.count() == 1  # the same request twice: asked once
    fake_server.reset()
    pairwise = cli("judge", "pairwise", str(bad), "--out", str(tmp_path / "p.jsonl"), "-m", f"m@{fake_server}",
                   cache=tmp_path / "cache")  # fmt: skip
    assert pairwise.returncode == 2 and "'response_a'" in pairwise.stderr and fake_server.count() == 0


def test_failed_calls_end_in_one_line_and_a_nonzero_exit(fake_server, tmp_path: Path) -> None:
    from fakes import Fault

    fake_server.configure(faults=[Fault("status", status=404, body='{"error": "no such model"}')])
    rows = rows_file(tmp_path, 3)
    run = cli("judge", "alpagasus", str(rows), "--out", str(tmp_path / "o.jsonl"), "-m", f"m@{fake_server}",
              "--quiet", "--max-retries", "1", cache=tmp_path / "cache")  # fmt: skip
    assert run.returncode == 1, run.stderr
    assert "3 rows failed" in run.stderr and "HTTP 404" in run.stderr
    assert fake_server.count() == 3


def test_seed_files_and_list_options_are_read_as_users_write_them(tmp_path: Path) -> None:
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(json.dumps({"instruction": "Sort a list."}) + "\n\n" + json.dumps({"task": "Add numbers."}) + "\n")
    with pytest.raises(InputError) as err:
        load_seed_tasks(seeds)
    assert f"{seeds}:3" in str(err.value) and "'instruction'" in str(err.value) and "--map instruction=task" in str(err.value)
    jury = registry.get("judge", "jury")
    urls = ["b@http://127.0.0.1:1/v1?x=1,2", "c@http://127.0.0.1:2/v1"]  # a comma inside an item
    assert jury.make_options({"models": json.dumps(urls)}).models == urls
    assert jury.make_options({"models": "b@http://h/v1, c@http://h/v1"}).models == ["b@http://h/v1", "c@http://h/v1"]
    with pytest.raises(ValueError, match="JSON list"):
        jury.make_options({"models": '["unclosed'})
