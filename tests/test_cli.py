"""The command line: built from the registry, located errors, select --report, cache commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    run = subprocess.run(
        [sys.executable, "-m", "instructkit.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )
    assert "Unclosed" not in run.stderr, run.stderr[-2000:]  # HTTP sessions closed on every exit path
    return run


def test_help_lists_subcommands_and_every_registered_method():
    from instructkit import registry

    top = cli("--help").stdout
    for sub in (
        "generate",
        "judge",
        "score",
        "select",
        "embed",
        "run",
        "cache",
        "models",
        "report",
        "plugins",
    ):
        assert sub in top
    for kind in registry.KINDS:
        listed = cli(kind, "--help").stdout
        for info in registry.list_methods(kind):
            assert info.name in listed, (kind, info.name)


def test_bad_input_fails_before_any_call_with_file_line_and_field(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "ok", "output": "fine"}\n{"instruction": "broken"\n')
    run = cli(
        "judge",
        "alpagasus",
        str(bad),
        "--out",
        str(tmp_path / "o.jsonl"),
        "-m",
        "nothing@http://127.0.0.1:9/v1",
    )
    assert run.returncode == 2
    assert f"{bad}:2" in run.stderr and "malformed JSON" in run.stderr
    assert not (tmp_path / "o.jsonl").exists()
    unknown = cli(
        "judge",
        "alpagasus",
        str(EXAMPLES / "records.jsonl"),
        "--out",
        str(tmp_path / "o.jsonl"),
        "-o",
        "no_such_option",
        "1",
    )
    assert unknown.returncode == 2 and "unknown option" in unknown.stderr and "threshold" in unknown.stderr


def test_select_report_prints_and_saves_selection_beside_random(tmp_path):
    out = tmp_path / "sel.jsonl"
    run = cli(
        "select",
        "kcenter",
        str(EXAMPLES / "records.jsonl"),
        "-o",
        "k",
        "5",
        "--out",
        str(out),
        "--report",
        "--quiet",
    )
    assert run.returncode == 0, run.stderr
    assert "covering_radius" in run.stdout and "random" in run.stdout
    report = json.loads(out.with_name(out.name + ".report.json").read_text())
    assert set(report) == {"selection", "random"} and report["selection"]["n"] == 5
    assert len(out.read_text().splitlines()) == 5


def test_cache_commands(tmp_path):
    env = {"INSTRUCTKIT_RESPONSE_CACHE_DIR": str(tmp_path / "c")}
    from instructkit.models.cache import ResponseCache

    cache = ResponseCache(tmp_path / "c")
    cache.set("k1", {"text": "x"})
    cache.close()
    stats = json.loads(cli("cache", "stats", env=env).stdout)
    assert stats["entries"] == 1
    assert "removed 0" in cli("cache", "prune", "--older-than", "1", env=env).stdout
    assert "removed 1" in cli("cache", "clear", env=env).stdout


def test_run_help_documents_resume_manifest_engines_and_batch(tmp_path: Path) -> None:
    from instructkit.registry import get
    from instructkit.run.execution import Execution
    from instructkit.run.pipeline import Pipeline

    text = cli("run", "--help").stdout
    for phrase in ("resume:", "fingerprint", "journals", "OUT/manifest.json", "engine: ray", "batch: true", "exits 3"):
        assert phrase in text, phrase
    # The example the help shows is a valid pipeline whose steps all pass their execution checks.
    example = "\n".join(line[2:] for line in text.split("\nexample:\n", 1)[1].splitlines())
    (tmp_path / "p.yaml").write_text(example)
    (tmp_path / "data.jsonl").write_text('{"instruction": "a", "output": "b"}\n')  # inputs must exist
    pipeline = Pipeline.from_yaml(tmp_path / "p.yaml")
    assert [s.name for s in pipeline.steps] == ["rated", "ifd", "picked", "sft"]
    for step in pipeline.steps:
        if step.kind != "export":
            info = get(step.kind, step.method)
            Execution(batch=step.batch, engine=step.engine, ray=step.ray).check(info, info.make_options(step.options))
