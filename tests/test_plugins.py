"""Plugins: a package installed from tests/ adds a method that the CLI lists and runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PLUGIN = Path(__file__).parent / "plugin_pkg"


def test_plugin_is_listed_and_runs_through_the_cli(tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "--target",
            str(target),
            str(PLUGIN),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    cli = [sys.executable, "-m", "instructkit.cli"]
    listed = subprocess.run([*cli, "plugins"], env=env, capture_output=True, text=True, check=True).stdout
    assert "wordcount" in listed and "plugin:ik-wordcount" in listed

    data = tmp_path / "in.jsonl"
    data.write_text(
        "\n".join(json.dumps({"instruction": "q", "output": o}) for o in ["one two three four", "hi"])
    )
    out = tmp_path / "out.jsonl"
    run = subprocess.run(
        [*cli, "judge", "wordcount", str(data), "--out", str(out), "-o", "minimum", "3", "--quiet"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert "Unclosed" not in run.stderr  # HTTP sessions closed on every exit path
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["wordcount"], r["wordcount_ok"]) for r in rows] == [(4, True), (1, False)]

    without = subprocess.run([*cli, "plugins"], capture_output=True, text=True, check=True).stdout
    assert "wordcount" not in without
