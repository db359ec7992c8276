"""End-to-end generator runs on the real local model (SmolLM2-135M-Instruct) with a handful of inputs.

The tiny model writes many invalid items: these tests assert that the machinery parses, validates,
counts and records them (manifest, side files, provenance, resume), not that the data is good.
Generation is kept short (max_tokens <= 32) so the file runs in a few minutes on 2 cores.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from instructkit.generators import backtranslation as bt
from instructkit.generators import bonito as bo
from instructkit.generators import evol_instruct as ev
from instructkit.generators import self_instruct as si
from instructkit.generators import tree_instruct as ti

from instructkit.run.runner import RunContext

pytest.importorskip("transformers")
ROOT = Path(__file__).resolve().parents[1]
PASSAGE = (
    "Sea turtles lay their eggs on sandy beaches at night. The female digs a nest with her back flippers, "
    "lays about one hundred eggs, covers them with sand and returns to the sea. The eggs hatch after about "
    "two months."
)


@pytest.fixture(scope="module")
def llm(tmp_path_factory: pytest.TempPathFactory):
    from instructkit.models import LLM
    from instructkit.models.cache import ResponseCache

    try:
        model = LLM("local", cache=ResponseCache(tmp_path_factory.mktemp("gen_cache")))
        model.backend  # noqa: B018 - load now, skip cleanly when the local model is not installed
    except (ImportError, FileNotFoundError) as exc:
        pytest.skip(f"local model unavailable: {exc}")
    return model


def _ctx(llm, options, name: str, work: Path, **extras) -> RunContext:
    return RunContext(
        llm=llm, options=options, method=name, work_dir=work, random_state=7, progress=False, extras=extras
    )


def _manifest(work: Path, name: str) -> dict:
    data = json.loads((work / f"{name}.manifest.json").read_text(encoding="utf-8"))
    assert data["method"] == name and data["seed"] == 7 and data["model"]["family"] == "local"
    assert data["templates"] and all(len(h) == 16 for h in data["templates"].values())
    assert data["params"]
    return data


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_bonito_local_counts_validates_and_resumes(llm, tmp_path: Path) -> None:
    docs = [{"doc_id": "turtles", "text": PASSAGE}]
    opts = bo.BonitoOptions(task_types=["ynqa", "exqa", "mcqa"], max_tokens=32)
    ctx = _ctx(llm, opts, "bonito", tmp_path)
    out = bo.bonito(docs, ctx)
    counts = _manifest(tmp_path, "bonito")["counts"]
    assert counts["attempted"] == 3 == counts["valid"] + counts["invalid"] == len(out) + counts["invalid"]
    for code, st in counts["per_type"].items():
        assert st["attempted"] == 1 and st["valid"] + sum(st["invalid"].values()) == 1, code
    invalid = _jsonl(tmp_path / "bonito.invalid.jsonl") if counts["invalid"] else []
    assert len(invalid) == counts["invalid"] and all(
        r["raw"] is not None and r["status"] != "ok" for r in invalid
    )
    for rec in out:  # whatever survived is valid for its type and carries provenance
        assert rec["doc_id"] == "turtles" and rec["passage_index"] == 0 and PASSAGE in rec["instruction"]
        if rec["task_type"] == "ynqa":
            assert rec["output"] in ("yes", "no")
        if rec["task_type"] == "exqa":
            assert bo.in_passage(rec["output"], PASSAGE)
    calls = llm.stats.calls
    again = _ctx(llm, opts, "bonito", tmp_path)
    assert bo.bonito(docs, again) == out  # resumed from the journal: same rows, no new calls
    assert llm.stats.calls == calls and again.stats.reused == 3

    native = _ctx(
        llm, bo.BonitoOptions(mode="native", task_types=["ynqa"], max_tokens=12), "bonito", tmp_path / "n"
    )
    out_native = bo.bonito(docs, native)
    c = native.extras["generate_summary"]["bonito"]
    assert c["attempted"] == 1 == len(out_native) + c["invalid"]  # SmolLM2 is not Bonito: usually no pipe


def test_self_instruct_local_bootstrap_and_instances(llm, tmp_path: Path) -> None:
    opts = si.SelfInstructOptions(num_instructions=3, request_batch_size=1, max_batches=1, max_tokens=32,
                                  instance_max_tokens=24)  # fmt: skip
    ctx = _ctx(llm, opts, "self_instruct", tmp_path, input_path=str(ROOT / "examples" / "seed_tasks.jsonl"))
    out = si.self_instruct([], ctx)
    counts = _manifest(tmp_path, "self_instruct")["counts"]
    assert counts["batches"] == 1 and counts["requests"] == 1
    rejected = _jsonl(tmp_path / "self_instruct.rejected.jsonl") if sum(counts["rejected"].values()) else []
    assert sum(counts["rejected"].values()) == len(rejected) and all(r["reason"] for r in rejected)
    assert all(set(r) >= {"instruction", "input", "output"} for r in out)
    if counts["kept_instructions"]:
        tasks = _jsonl(tmp_path / "self_instruct.tasks.jsonl")
        assert len(tasks) == counts["kept_instructions"] and all(t["parse"] for t in tasks)

    # steps 2-4 on the real model for two fixed tasks (bootstrap output of a tiny model is often empty)
    tasks = [
        {"instruction": "Decide whether the sentence is positive or negative.", "request_idx": 0},
        {"instruction": "Write a short greeting for a birthday card.", "request_idx": 0},
    ]
    counts2: dict = {}
    inst_ctx = _ctx(llm, opts, "self_instruct", tmp_path / "inst")
    rows = si.generate_instances(tasks, inst_ctx, opts, counts2)
    assert sum(counts2["instance_parse"].values()) == 2
    task_rows = _jsonl(tmp_path / "inst" / "self_instruct.tasks.jsonl")
    assert [t["raw_instances"] is not None for t in task_rows] == [True, True]
    assert all(isinstance(t["is_classification"], bool) and t["n_instances"] <= 5 for t in task_rows)
    assert len(rows) == sum(t["n_instances"] for t in task_rows)
    assert all(r["output"] and r["source"] == "machine" for r in rows)


def test_tree_instruct_local(llm, tmp_path: Path) -> None:
    records = [{"instruction": "Describe the water cycle.", "input": "", "output": "Water evaporates."},
               {"instruction": "Name a fruit.", "input": "", "output": "Apple."}]  # fmt: skip
    opts = ti.TreeInstructOptions(max_tokens=32, response_max_tokens=16)
    ctx = _ctx(llm, opts, "tree_instruct", tmp_path)
    out = ti.tree_instruct(records, ctx)
    counts = _manifest(tmp_path, "tree_instruct")["counts"]
    assert counts["kept"] == len(out) and len(out) + sum(counts["failed"].values()) == 2
    for rec in out:
        assert rec["old_instruction"] in {r["instruction"] for r in records} and rec["output"]
        assert len(rec["instruction"].split()) > len(rec["old_instruction"].split())
    if counts["failed"]:
        assert all(r["reason"] for r in _jsonl(tmp_path / "tree_instruct.failed.jsonl"))


def test_evol_instruct_local_lineage(llm, tmp_path: Path) -> None:
    records = [{"id": "a", "instruction": "List three fruits."}, {"id": "b", "instruction": "Explain rain."}]
    opts = ev.EvolInstructOptions(rounds=1, max_tokens=32, answer_max_tokens=16, equality_max_tokens=4)
    ctx = _ctx(llm, opts, "evol_instruct", tmp_path)
    out = ev.evol_instruct(records, ctx)
    counts = _manifest(tmp_path, "evol_instruct")["counts"]
    originals = [r for r in out if r["round"] == 0]
    evolved = [r for r in out if r["round"] == 1]
    assert [r["id"] for r in originals] == ["a", "b"]
    assert counts["rounds"][0]["attempted"] == 2 and counts["rounds"][0]["kept"] == len(evolved)
    eliminated = sum(counts["eliminated"].values())
    assert len(evolved) + eliminated == 2
    for rec in evolved:
        assert (
            rec["parent_id"] in ("a", "b") and rec["operation"] in ev.OPERATIONS and rec["id"].endswith(">r1")
        )
        assert ev.elimination_reason(rec["instruction"], rec["output"], None) is None


def test_backtranslation_local_two_iterations(llm, tmp_path: Path) -> None:
    records = [
        {"id": "t1", "text": PASSAGE},
        {"id": "t2", "text": "Boil the pasta for ten minutes, then drain it."},
    ]
    opts = bt.BacktranslationOptions(
        augment_max_tokens=16, rate_max_tokens=24, iterations=2, keep_all=True, threshold=1
    )
    ctx = _ctx(llm, opts, "backtranslation", tmp_path)
    out = bt.backtranslation(records, ctx)
    counts = _manifest(tmp_path, "backtranslation")["counts"]
    rated = _jsonl(tmp_path / "backtranslation.rated.jsonl")
    assert len(rated) == 2 == counts["segments"]
    assert [it["iteration"] for it in counts["iterations"]] == [1, 2]
    for row in rated:
        if row["instruction"]:
            assert row["rate_raw"] is not None and row["rate_status"] and row["iteration"] == 2
            assert (row["score"] is None) == (row["rate_status"] != "ok")
    assert all(r["backtranslation_keep"] == (r["backtranslation_score"] is not None) for r in out)
    assert {r["doc_id"] for r in out} <= {"t1", "t2"}
