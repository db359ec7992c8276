"""A step that produced little (0 rows, or parse failures over 10% of its rows) is flagged in the CLI's
last line and at the top of the report. The figures behind it come from one run summary: a method's
counts (manifest.write_method_summary) and parse figures (manifest.parse_figure)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from instructkit.data.report import build_report
from instructkit.run.manifest import little_output, little_output_line, parse_figure, write_manifest

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


def spread_step(values: list[float], expected: list[float] | None = None) -> dict:
    """A judge step's manifest entry whose `alpagasus_score` column holds `values` (card.separation_figures)."""
    from instructkit.data.card import separation_figures

    rows = [{"alpagasus_score": v, **({"alpagasus_expected": expected[i]} if expected else {})}
            for i, v in enumerate(values)]  # fmt: skip
    return {"step": "alpagasus", "kind": "judge", "rows_out": len(rows), "separation": separation_figures([], rows)}


def test_a_judge_that_gives_most_rows_one_score_is_flagged_at_ninety_percent_exactly():
    assert little_output(spread_step([4.0] * 9 + [3.0])) == ["alpagasus_score separates nothing (9/10 rows score 4)"]
    assert little_output(spread_step([4.0] * 8 + [3.0, 2.0])) == []  # 80%: it separates something
    assert little_output(spread_step([4.0] * 9)) == []  # under 10 scored rows say nothing either way
    many = spread_step([4.0] * 45 + [0.0], expected=[2.06 + 1.22 * i / 45 for i in range(46)])
    assert little_output_line([many]) == (
        "little output: alpagasus (alpagasus_score separates nothing (45/46 rows score 4); its expected-value "
        "scores alpagasus_expected span 2.06-3.28 (-o score expected))")


def test_values_with_almost_no_spread_are_flagged_at_one_percent_of_the_mean():
    def step(half_width: float) -> dict:  # half the rows each side of 100: mean 100, population std = half_width
        return spread_step([100 - half_width] * 5 + [100 + half_width] * 5)

    assert little_output(step(1.0)) == ["alpagasus_score separates nothing (10 rows within 99-101 (std 1))"]
    assert little_output(step(1.01)) == []


def test_the_card_and_the_report_record_the_flag(tmp_path):
    from instructkit.data.card import step_summary

    flagged = spread_step([4.0] * 10)
    assert step_summary(flagged)["flags"] == ["alpagasus_score separates nothing (10/10 rows score 4)"]
    out = tmp_path / "run"
    out.mkdir()
    (out / "01_alpagasus.jsonl").write_text("".join(json.dumps({"instruction": f"Question {i} about {w}?", "alpagasus_score": 4.0}) + "\n" for i, w in enumerate("ab cd ef gh ij kl mn op qr st".split())))
    write_manifest(out / "manifest.json", name="t", steps=[{**flagged, "output": str(out / "01_alpagasus.jsonl")}])
    page = build_report(out)
    assert page.index("alpagasus_score separates nothing") < page.index("<h2>Steps</h2>")
