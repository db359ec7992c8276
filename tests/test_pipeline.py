"""Pipelines on the real local model: steps saved, manifest written, unchanged steps skipped,
a changed step recomputed without paying again for rows already answered."""

from __future__ import annotations

import json
from pathlib import Path

from instructkit.run.pipeline import Pipeline

RECORDS = [
    {"instruction": "What is 3 + 4?", "input": "", "output": "7", "quality": 2},
    {"instruction": "Name the largest planet.", "input": "", "output": "Jupiter", "quality": 3},
    {"instruction": "What is 3 + 4?", "input": "", "output": "7", "quality": 2},
    {"instruction": "Spell 'cat' backwards.", "input": "", "output": "tac", "quality": 1},
]


def write_pipeline(tmp_path: Path, k: int) -> Path:
    data = tmp_path / "in.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in RECORDS) + "\n")
    path = tmp_path / "p.yaml"
    path.write_text(f"""
name: tiny
model: local
model_options: {{cache_dir: {tmp_path / "cache"}}}
out: {tmp_path / "out"}
steps:
  - name: rated
    judge: alpagasus
    input: {data}
    options: {{max_tokens: 6}}
  - name: unique
    select: dedup
  - name: best
    select: topk
    options: {{score: quality, k: {k}}}
""")
    return path


def test_pipeline_saves_skips_and_recomputes_only_what_changed(tmp_path):
    first = Pipeline.from_yaml(write_pipeline(tmp_path, k=2)).run(progress=False)
    out = tmp_path / "out"
    assert [s["rows_out"] for s in first["steps"]] == [4, 3, 2]
    assert first["steps"][0]["calls"]["calls"] == 3  # the duplicate row shares its twin's call
    rated = [json.loads(line) for line in (out / "01_rated.jsonl").read_text().splitlines()]
    assert all("alpagasus_raw" in r and "alpagasus_parse" in r for r in rated)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["name"] == "tiny" and len(manifest["steps"]) == 3
    assert len((out / "selected.jsonl").read_text().splitlines()) == 2

    again = Pipeline.from_yaml(write_pipeline(tmp_path, k=2)).run(progress=False)
    assert all(s.get("skipped") for s in again["steps"])

    changed = Pipeline.from_yaml(write_pipeline(tmp_path, k=1)).run(progress=False)
    assert [bool(s.get("skipped")) for s in changed["steps"]] == [True, True, False]
    best = [json.loads(line) for line in (out / "selected.jsonl").read_text().splitlines()]
    assert [r["instruction"] for r in best] == ["Name the largest planet."]
