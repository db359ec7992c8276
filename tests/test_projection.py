"""A dry run over a half-finished run projects the cost of the remaining rows only: the journals in
the work dir say which rows are done (read, never written, by the dry run). The response cache is
off, so only the journals can tell done rows from the rest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from instructkit.cli import main

from fakes import Fault

PRICED = "gpt-4"  # priced by litellm's bundled map (dear enough for 4 printed decimals); served by the fake server


def judge(rows: Path, out: Path, fake_server: str, *extra: str) -> int:
    return main(["judge", "alpagasus", str(rows), "--out", str(out), "-m", PRICED, "--api-base", fake_server,
                 "--no-cache", "--max-retries", "0", "--quiet", *extra])


def test_dry_run_projects_the_remaining_rows_of_a_half_finished_run(fake_server, tmp_path: Path, capsys) -> None:
    rows = tmp_path / "rows.jsonl"
    # Rows of equal length: every call has the same estimate, so half the rows are half the cost.
    rows.write_text("".join(json.dumps({"instruction": f"question {i}", "output": f"answer {i}"}) + "\n"
                            for i in range(6)))
    out = tmp_path / "judged.jsonl"
    fake_server.configure(faults=[Fault("status", status=400, match=f"question {i}") for i in (1, 3, 5)])
    assert judge(rows, out, fake_server) == 1  # half the rows failed for good: a half-finished run, exit 1
    work = tmp_path / "judged.jsonl.work"
    journal = (work / "alpagasus.rate.journal.jsonl").read_text()
    capsys.readouterr()

    fake_server.configure(faults=[], reset=True)
    assert judge(rows, out, fake_server, "--dry-run") == 0
    half = capsys.readouterr().err
    assert judge(rows, tmp_path / "fresh.jsonl", fake_server, "--dry-run") == 0
    full = capsys.readouterr().err
    assert fake_server.count() == 0  # dry runs call nothing
    assert (work / "alpagasus.rate.journal.jsonl").read_text() == journal  # and write no journal
    assert "3 of 6 rows already done" in half and "already done" not in full

    def figures(text: str) -> tuple[int, float]:
        line = next(x for x in text.splitlines() if " calls, ~" in x)
        calls = int(line.split(" calls")[0].split()[-1])
        return calls, float(line.split("~$")[1].split()[0])

    (calls_half, cost_half), (calls_full, cost_full) = figures(half), figures(full)
    assert (calls_half, calls_full) == (3, 6)
    # Both are printed rounded to 4 decimals: they may differ from exact halves by 0.5e-4 + 0.25e-4.
    assert cost_full > 0.01 and cost_half == pytest.approx(cost_full / 2, abs=0.75e-4)


def test_pipeline_dry_run_projects_a_half_finished_step(fake_server, tmp_path: Path, capsys) -> None:
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"instruction": f"question {i}", "output": f"answer {i}"}) + "\n"
                            for i in range(4)))
    spec = tmp_path / "pipeline.yaml"
    spec.write_text(f"model: {PRICED}@{fake_server}\nmodel_options: {{cache: false, max_retries: 0}}\n"
                    f"out: {tmp_path / 'out'}\nsteps:\n  - judge: alpagasus\n    input: {rows}\n")
    fake_server.configure(faults=[Fault("status", status=400, match="question 3")])
    assert main(["run", str(spec)]) == 0
    capsys.readouterr()
    fake_server.configure(faults=[], reset=True)
    assert main(["run", str(spec), "--dry-run"]) == 0
    err = capsys.readouterr().err
    assert "3 of 4 rows already done" in err and "dry run: 1 calls" in err
    assert fake_server.count() == 0


def test_pipeline_dry_run_runs_past_a_selector_over_unscored_rows(fake_server, tmp_path: Path, capsys) -> None:
    """A dry run's judge answers nothing, so the selector after it finds no scores: the run goes on
    (later steps estimated on every row) and says so, instead of failing."""
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"instruction": f"question {i}", "output": f"answer {i}"}) + "\n"
                            for i in range(4)))
    spec = tmp_path / "pipeline.yaml"
    spec.write_text(f"model: {PRICED}@{fake_server}\nmodel_options: {{cache: false, max_retries: 0}}\n"
                    f"out: {tmp_path / 'out'}\nsteps:\n  - judge: alpagasus\n    input: {rows}\n"
                    "  - select: topk\n    options: {score: alpagasus_score, k: 2}\n"
                    "  - judge: alpagasus\n    name: again\n")
    assert main(["run", str(spec), "--dry-run"]) == 0
    err = capsys.readouterr().err
    assert "[topk] dry run: not run on dry-run rows" in err and "no numeric values" in err
    assert "dry run: 4 calls" in err.split("[topk]")[-1]  # the step after it is estimated on every row
    assert fake_server.count() == 0
