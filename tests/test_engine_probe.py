"""The llama.cpp probe (instructkit/models/engine_probe.py): a build that faults, hangs or answers wrongly on
this machine is found in a child process, and `local` falls back to transformers with one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from instructkit.models import engine_probe
from instructkit.models.engine_probe import FAULT_VARIABLE, build_tag, machine_tag, run_probe

pytest.importorskip("llama_cpp")  # in CI a skip for a missing dependency fails the run

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def fault(monkeypatch):
    def set_fault(kind: str) -> None:
        monkeypatch.setenv(FAULT_VARIABLE, kind)

    return set_fault


def test_a_child_killed_by_sigill_is_a_failed_verdict_that_names_the_signal(fault):
    fault("sigill")
    verdict = run_probe(None, build_tag(), machine_tag())
    assert not verdict.ok
    assert verdict.reason == "the probe was killed by SIGILL: an instruction this build uses faults on this machine"
    assert verdict.lasting  # the build's own fault: stored for this build and machine
    assert "NOT usable" in verdict.line()


def test_a_child_that_hangs_fails_at_the_timeout(fault):
    fault("hang")
    verdict = run_probe(None, build_tag(), machine_tag(), timeout=3)
    assert not verdict.ok and verdict.reason == "the probe did not answer in 3 s"
    assert not verdict.lasting  # a busy machine can do that: never stored, the next run probes again


def test_a_child_whose_kernels_answer_wrongly_fails(fault):
    fault("wrong")  # the batched pass's logits get noise of scale 50: what broken kernels look like
    verdict = run_probe(None, build_tag(), machine_tag())
    assert not verdict.ok and verdict.reason.startswith("wrong answers: passes of 64 and of 1 token disagree")


def test_a_forced_verdict_is_never_stored(fault, tmp_path, monkeypatch):
    monkeypatch.setenv("INSTRUCTKIT_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(engine_probe, "_VERDICT", None)
    fault("sigill")
    assert not engine_probe.llamacpp_verdict().ok
    assert not (tmp_path / "models" / "engine-probe").exists()  # a real run on this machine probes for itself
    monkeypatch.setattr(engine_probe, "_VERDICT", None)


def test_judge_on_local_falls_back_to_transformers_and_says_so_once(tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"instruction": q, "input": "", "output": a}) + "\n" for q, a in
                            [("What is 2+2?", "4"), ("Name a colour.", "Blue.")]))  # fmt: skip
    out = tmp_path / "judged.jsonl"
    env = {**os.environ, FAULT_VARIABLE: "sigill", "INSTRUCTKIT_CACHE_DIR": os.environ.get(
        "INSTRUCTKIT_CACHE_DIR", str(Path.home() / ".cache" / "instructkit"))}  # converted models stay shared
    proc = subprocess.run(
        [sys.executable, "-m", "instructkit.cli", "judge", "alpagasus", str(rows), "--out", str(out), "-m", "local",
         "-o", "max_tokens", "24", "--cache-dir", str(tmp_path / "c"), "--quiet"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "llama.cpp cannot run" in line]
    assert lines == ["warning: llama.cpp cannot run on this machine (the probe was killed by SIGILL: an "
                     "instruction this build uses faults on this machine); local models generate with "
                     f"transformers instead (slower). Fix: {engine_probe.FIX}"]  # fmt: skip
    scored = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(scored) == 2 and all(r["alpagasus_parse"] for r in scored)
    manifest = json.loads(out.with_name(out.name + ".manifest.json").read_text())
    assert "engine" not in manifest["model"]  # answered by transformers: no llama.cpp in the cache identity


def test_doctor_names_the_engine_local_uses_and_why():
    env = {**os.environ, FAULT_VARIABLE: "sigill"}
    proc = subprocess.run([sys.executable, "-m", "instructkit.cli", "doctor"], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[1] == ("local:    transformers generates and scores (llama.cpp is installed but the probe was killed "
                        "by SIGILL: an instruction this build uses faults on this machine)")  # fmt: skip
    assert lines[2] == "engines:  llama.cpp, transformers"
    assert f"  fix: {engine_probe.FIX}" in lines
    assert any(line.startswith("versions: torch ") for line in lines)
    short = subprocess.run([sys.executable, "-m", "instructkit.cli", "doctor", "--short"], capture_output=True,
                           text=True, env=env, cwd=ROOT, timeout=300).stdout.strip()  # fmt: skip
    assert short.startswith("local model: transformers generates and scores") and "FAILED" in short
