"""Streaming steps (`--window`): a judge whose rows stand alone reads, runs, journals and writes its
input a window at a time. Its output, manifest counts and resume equal the in-memory path's, run as
the whole CLI process against the fake OpenAI-compatible server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from fakes import Fault

MODEL = "fake-model"
N = 20
WINDOW = 7  # windows of 7, 7 and 6 rows


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "instructkit.cli", *args], capture_output=True, text=True,
                          env=dict(os.environ), timeout=300)


def judge(fake_server, src: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    run = cli("judge", "alpagasus", str(src), "--out", str(out), "-m", f"{MODEL}@{fake_server.url}", "--quiet",
              "--cache-dir", str(out.parent / f"{out.stem}.cache"), *extra)
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    return run


def write_rows(path: Path) -> Path:
    """N rows; row 7 (the first of the second window) repeats row 5 (in the first), and a chat row sits
    in the last window (its turn view is made inside the window)."""
    rows = [{"instruction": f"task {i}", "output": f"answer {i}", "prior_score": i % 4, "license": ["mit", "cc-by-4.0"][i % 2]}
            for i in range(N)]
    rows[7] = dict(rows[5])
    rows[15] = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                             {"role": "user", "content": "task 15"}, {"role": "assistant", "content": "answer 15"}]}
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def manifest(out: Path) -> dict:
    return json.loads(out.with_name(out.name + ".manifest.json").read_text())


EXACT = ("rows_in", "rows_out", "counts", "parse", "separation", "agreement", "input_licenses", "templates")


def test_windowed_output_and_manifest_equal_the_in_memory_path(fake_server, tmp_path: Path) -> None:
    fake_server.configure(reply="score")  # a score on each reply: separation and agreement figures to compare
    src = write_rows(tmp_path / "in.jsonl")
    whole, windowed = tmp_path / "whole.jsonl", tmp_path / "windowed.jsonl"
    assert judge(fake_server, src, whole, "--window", "0").returncode == 0
    assert fake_server.count() == N - 1  # the repeated row is asked once
    fake_server.reset()
    assert judge(fake_server, src, windowed, "--window", str(WINDOW)).returncode == 0
    assert fake_server.count() == N - 1  # across a window boundary too: the response cache answers it
    assert windowed.read_bytes() == whole.read_bytes()
    journals = sorted(p.parent.name for p in (tmp_path / "windowed.jsonl.work").rglob("*.journal.jsonl"))
    assert journals == ["000000", "000001", "000002"]  # three windows, each journaled apart
    a, b = manifest(whole), manifest(windowed)
    for key in EXACT:
        assert a.get(key) == b.get(key), key
    assert a["counts"]["rows"] == N and b["rows_out"] == N and a["counts"]["kept"] > 0
    assert a["separation"] and a["agreement"] and a["input_licenses"] == ["cc-by-4.0", "mit"]
    for key in ("rows", "ok", "failed", "reused", "pending"):
        assert a[key] == b[key], key
    for key in ("calls", "cache_hits", "prompt_tokens", "completion_tokens"):
        assert a["calls"][key] == b["calls"][key], key
    sides = [json.loads((tmp_path / f"{o.name}.work" / "alpagasus.manifest.json").read_text()) for o in (whole, windowed)]
    assert sides[0]["counts"] == sides[1]["counts"] == a["counts"]  # the method's own summary, added over windows


def test_a_windowed_run_resumes_from_its_journals_after_a_failure_mid_window(fake_server, tmp_path: Path) -> None:
    src = write_rows(tmp_path / "in.jsonl")
    args = ("--window", str(WINDOW), "--no-cache", "--max-retries", "0")  # only the journal can spare a call
    clean = tmp_path / "clean.jsonl"
    assert judge(fake_server, src, clean, *args).returncode == 0
    fake_server.configure(faults=[Fault("500", match="task 10")], reset=True)  # row 10: mid second window
    out = tmp_path / "out.jsonl"
    assert judge(fake_server, src, out, *args).returncode == 1
    assert json.loads(out.read_text().splitlines()[10]).get("_errors")  # row 10 failed, the others answered
    assert manifest(out)["failed"] == 1 and manifest(out)["rows_out"] == N
    fake_server.configure(faults=[], reset=True)
    assert judge(fake_server, src, out, *args).returncode == 0
    assert fake_server.count() == 1  # the failed row only: every answered row came from its window's journal
    assert out.read_bytes() == clean.read_bytes()
    again = manifest(out)
    assert (again["rows"], again["ok"], again["failed"], again["reused"]) == (N, N, 0, N - 1)
    assert again["counts"] == manifest(clean)["counts"]


def test_figure_rows_read_back_what_the_figures_read() -> None:
    """A streaming step keeps its figures' columns, not its rows: each row reads back as exactly its kept
    columns, their values and types (int stays int, float stays float, a status its string, a list its
    list), and the
    figures computed from them equal those computed from the rows."""
    from instructkit.data.card import FigureRows, parse_figures, separation_figures

    rows = [{"instruction": "a", "judge_score": 4, "judge_parse": "ok", "license": "mit"},
            {"instruction": "b", "judge_parse": "no_score"},
            {"judge_score": 2.5, "judge_expected": 2.75, "judge_parse": "ok", "license": None, "note": 3},
            {"judge_score": float("nan"), "judge_parse": "ok", "license": ["mit", "apache-2.0"], "big_score": 2**60,
             "flag_score": True}]
    kept = FigureRows()
    kept.add(rows[:2])
    kept.add(rows[2:])  # in two windows, as a streaming step adds them
    expected = [{k: v for k, v in r.items() if k in ("judge_score", "judge_parse", "license", "judge_expected",
                                                       "big_score")} for r in rows]
    got = list(kept)[1:]
    assert [sorted(r) for r in got] == [sorted(r) for r in expected] and len(kept) == len(rows) + 1
    for g, e in zip(got, expected):
        for k in e:
            assert type(g[k]) is type(e[k]) and (g[k] == e[k] or g[k] != g[k])  # NaN reads back as NaN
    assert kept[0] == dict.fromkeys(["instruction", "judge_score", "judge_parse", "license", "judge_expected",
                                     "note", "big_score", "flag_score"])
    assert kept[-2] == got[-2] and kept[1:3] == got[:2]
    before = [{"instruction": "a"}]
    assert parse_figures(before, kept) == parse_figures(before, rows)
    assert separation_figures(before, kept) == separation_figures(before, rows)


def test_figure_rows_keep_a_few_bytes_a_row() -> None:
    """What a streaming step keeps grows by its columns' 9 bytes a row (a kind byte, a float64 slot), not
    by a Python object a row: 20,000 rows of three kept columns stay under 2x 27 bytes a row, where a
    tuple a row (and a float object a value) took 87."""
    import tracemalloc

    from instructkit.data.card import FigureRows

    n = 20_000
    rows = [{"output": "x", "judge_score": float(i % 5), "judge_expected": i / 7, "judge_parse": "ok"} for i in range(n)]
    kept = FigureRows()
    tracemalloc.start()
    kept.add(rows)
    size, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert size / n < 2 * 27, f"{size / n:.0f} bytes a row"
