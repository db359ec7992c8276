"""A step that produced little (0 rows, or parse failures over 10% of its rows) is flagged in the CLI's
last line and at the top of the report. The figures behind it come from one run summary: a method's
counts (manifest.write_method_summary) and parse figures (manifest.parse_figure)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from instructkit.manifest import little_output, little_output_line, parse_figure, write_manifest
from instructkit.report import build_report

ROOT = Path(__file__).resolve().parents[1]


def test_flags_name_each_step_and_why():
    steps = [
        {"step": "gen", "kind": "generate", "rows_in": 0, "rows_out": 0},
        {"step": "judge", "kind": "judge", "rows_out": 12,
         "parse": {"alpagasus_parse": {"rows": 12, "failed": 12, "rate": 1.0}}},
        {"step": "fine", "kind": "judge", "rows_out": 10, "parse": {"x_parse": {"rows": 10, "failed": 1, "rate": 0.1}}},
        {"step": "sft", "kind": "export", "rows_in": 0},
    ]  # fmt: skip
    assert little_output(steps[0]) == ["0 rows out"]
    assert little_output(steps[2]) == [] and little_output(steps[3]) == []  # 10% exactly is not over 10%
    assert little_output_line(steps) == (
        "little output: gen (0 rows out), judge (alpagasus_parse failed on 12/12 rows (100%))")
    assert little_output_line(steps[2:]) == ""


def test_report_says_it_first(tmp_path):
    out = tmp_path / "run"
    (out / "01_gen.jsonl").parent.mkdir(parents=True)
    (out / "01_gen.jsonl").write_text("")
    write_manifest(out / "manifest.json", name="t", steps=[
        {"step": "gen", "kind": "generate", "rows_in": 0, "rows_out": 0, "output": str(out / "01_gen.jsonl")}])
    page = build_report(out)
    assert page.index("Little output") < page.index("<h2>Steps</h2>") and "gen: 0 rows out" in page


def judge_on_fake_server(fake_server, tmp_path: Path, n: int, *flags: str) -> tuple[subprocess.CompletedProcess, Path]:
    """`instructkit judge alpagasus` over n rows against the fake server, whose replies carry no score."""
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"instruction": f"q{i}", "input": "", "output": f"a{i}"}) + "\n"
                            for i in range(n)))  # fmt: skip
    out = tmp_path / "judged.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "instructkit.cli", "judge", "alpagasus", str(rows), "--out", str(out),
         "-m", "fake-model", "--api-base", str(fake_server), *flags, "--cache-dir", str(tmp_path / "c")],
        capture_output=True, text=True, env={**os.environ}, cwd=ROOT,
    )  # fmt: skip
    return proc, out


def test_cli_last_line_flags_a_judge_that_scored_nothing(fake_server, tmp_path):
    proc, out = judge_on_fake_server(fake_server, tmp_path, 4, "--quiet")
    assert proc.returncode == 0, proc.stderr
    # The fake server's replies carry no score: every row fails to parse, and the last line says so.
    # (aiohttp's own "Unclosed ..." lines at interpreter exit, if any, are not the CLI's output.)
    ours = [line for line in proc.stderr.strip().splitlines()
            if not line.startswith(("Unclosed", "client_session:", "connector:", "connections:"))]  # fmt: skip
    assert ours[-1] == (
        "little output: judge alpagasus (alpagasus_parse failed on 4/4 rows (100%))")
    manifest = json.loads(out.with_name(out.name + ".manifest.json").read_text())
    assert manifest["parse"]["alpagasus_parse"]["failed"] == 4


def test_parse_figure_counts_rows_without_a_status_only_when_asked():
    rows = [{"x_parse": "ok"}, {"x_parse": "no_score"}, {"x_parse": None}, {"other": 1}]
    assert parse_figure(rows, "x_parse") == {"rows": 2, "failed": 1, "rate": 0.5,
                                             "statuses": {"no_score": 1, "ok": 1}}
    assert parse_figure(rows, "x_parse", missing="error") == {
        "rows": 4, "failed": 3, "rate": 0.75, "statuses": {"error": 2, "no_score": 1, "ok": 1}}
    assert parse_figure([], "x_parse") == {"rows": 0, "failed": 0, "rate": 0.0, "statuses": {}}


def test_a_judge_summary_reaches_its_side_manifest_and_the_run_manifest(fake_server, tmp_path):
    proc, out = judge_on_fake_server(fake_server, tmp_path, 3)
    assert proc.returncode == 0, proc.stderr
    assert "[alpagasus] 3/3 rows without a score" in proc.stderr  # the judge warns once
    manifest = json.loads(out.with_name(out.name + ".manifest.json").read_text())
    side = json.loads((tmp_path / "judged.jsonl.work" / "alpagasus.manifest.json").read_text())
    counts = manifest["counts"]
    assert side["counts"] == counts and side["method"] == "alpagasus" and side["model"] == manifest["model"]
    assert counts["rows"] == 3 and counts["parse_failures"] == 3 and sum(counts["parse"].values()) == 3
    assert manifest["parse"]["alpagasus_parse"]["statuses"] == counts["parse"]  # one figure, two places
    assert side["params"]["threshold"] == 4.5 and side["calls"]["calls"] == 3
