"""The HTML report renders in headless Chromium with no console errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from instructkit.data.report import write_report
from instructkit.run.pipeline import Pipeline

TOPICS = ["bread", "tides", "compost", "trains", "bees", "rivers", "chess", "glass"]


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (scripts/test.sh installs Debian's chromium)")
        pytest.skip("chromium not installed")
    return exe


def render(html_path: Path, png: Path, tmp_path: Path) -> list[str]:
    """Screenshot `html_path`; return the console lines Chromium logged while loading it."""
    out = subprocess.run(
        [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--enable-logging=stderr",
            "--v=0",
            f"--screenshot={png}",
            "--window-size=1200,2400",
            html_path.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return [line for line in out.stderr.splitlines() if "CONSOLE" in line]


def test_report_renders_without_console_errors(tmp_path):
    rows = [
        {
            "instruction": f"Explain {t} in {n} sentences.",
            "input": "",
            "output": f"About {t}: " + "fact. " * n,
            "alpagasus_score": float(n % 5) + 0.5,
            "rubric_score": float((n * 7) % 5) + 1.0,
            "instag_tags": [t, "explanation"],
        }
        for n in range(1, 4)
        for t in TOPICS
    ]
    rows.append(dict(rows[0]))  # a duplicate for dedup
    data = tmp_path / "pool.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (tmp_path / "p.yaml").write_text(f"""
name: report-check
out: {tmp_path / "out"}
steps:
  - name: unique
    select: dedup
    input: {data}
  - name: chosen
    select: deita
    options: {{score: alpagasus_score, budget: 6, encoder: local}}
""")
    Pipeline.from_yaml(tmp_path / "p.yaml").run(progress=False)
    report = write_report(tmp_path / "out")
    text = report.read_text()
    for section in (
        "Steps",
        "Score distributions",
        "Agreement between judges",
        "Embedding map",
        "Diversity: selected vs random",
        "Top tags",
        "Failures",
    ):
        assert f"<h2>{section}</h2>" in text, section
    assert "<script" not in text and "http" not in text.split("<body>")[1]

    png = tmp_path / "report.png"
    console = render(report, png, tmp_path)
    assert console == [], console
    assert png.exists() and png.stat().st_size > 20_000

    # The check can fail: a page with a script error is caught.
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><script>throw new Error('broken page')</script></body></html>")
    assert any("broken page" in line for line in render(bad, tmp_path / "bad.png", tmp_path))
