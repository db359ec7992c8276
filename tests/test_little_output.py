"""A step that produced little (0 rows, or parse failures over 10% of its rows) is flagged in the CLI's
last line and at the top of the report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from instructkit.manifest import little_output, little_output_line, write_manifest
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


def test_cli_last_line_flags_a_judge_that_scored_nothing(fake_server, tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"instruction": f"q{i}", "input": "", "output": f"a{i}"}) + "\n"
                            for i in range(4)))  # fmt: skip
    out = tmp_path / "judged.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "instructkit.cli", "judge", "alpagasus", str(rows), "--out", str(out),
         "-m", "fake-model", "--api-base", str(fake_server), "--quiet", "--cache-dir", str(tmp_path / "c")],
        capture_output=True, text=True, env={**os.environ}, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    # The fake server's replies carry no score: every row fails to parse, and the last line says so.
    # (aiohttp's own "Unclosed ..." lines at interpreter exit, if any, are not the CLI's output.)
    ours = [line for line in proc.stderr.strip().splitlines()
            if not line.startswith(("Unclosed", "client_session:", "connector:", "connections:"))]  # fmt: skip
    assert ours[-1] == (
        "little output: judge alpagasus (alpagasus_parse failed on 4/4 rows (100%))")
    manifest = json.loads(out.with_name(out.name + ".manifest.json").read_text())
    assert manifest["parse"]["alpagasus_parse"]["failed"] == 4
