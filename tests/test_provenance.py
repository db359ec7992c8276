"""Per-row provenance on the real local model: a Bonito row traces back to its document and passage,
an Evol-Instruct row made from it traces back to the Bonito row, the document and its seed row, and
the column survives a pipeline (score, select) to the exported trainer files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from instructkit.generators import backtranslation as bt
from instructkit.generators import bonito as bo
from instructkit.generators import evol_instruct as ev
from instructkit.generators import self_instruct as si
from instructkit.generators import tree_instruct as ti

from instructkit.run.provenance import origin, trace
from instructkit.run.runner import RunContext

pytest.importorskip("transformers")
PASSAGE = (
    "Sea turtles lay their eggs on sandy beaches at night. The female digs a nest with her back flippers, "
    "lays about one hundred eggs, covers them with sand and returns to the sea. The eggs hatch after about "
    "two months, and the hatchlings find the water by the light of the horizon."
)


@pytest.fixture(scope="module")
def llm(tmp_path_factory: pytest.TempPathFactory):
    from instructkit.models import LLM
    from instructkit.models.cache import ResponseCache

    try:
        model = LLM("local", cache=ResponseCache(tmp_path_factory.mktemp("prov_cache")))
        model.backend  # noqa: B018 - load now, skip cleanly when the local model is not installed
    except (ImportError, FileNotFoundError) as exc:
        pytest.skip(f"local model unavailable: {exc}")
    return model


def _ctx(llm, options, name: str, work: Path, step: str) -> RunContext:
    return RunContext(llm=llm, options=options, method=name, work_dir=work, random_state=3, progress=False,
                      extras={"step": step})  # fmt: skip


def test_bonito_then_evol_rows_trace_back_to_document_and_seed(llm, tmp_path: Path) -> None:
    model = f"local:{llm.identity['model']}"
    docs = [{"doc_id": "turtles", "text": PASSAGE}]
    opts = bo.BonitoOptions(task_types=["summarization"], max_tokens=24)
    rows = bo.bonito(docs, _ctx(llm, opts, "bonito", tmp_path / "b", "doc_tasks"))
    assert rows, "a summary of a 50-word passage in at most 24 tokens is always shorter: one valid row"
    prov = rows[0]["provenance"]
    assert prov == {"step": "doc_tasks", "method": "bonito", "model": model, "doc_id": "turtles",
                    "passage_index": 0, "task_type": "summarization"}  # fmt: skip

    seeded = [{**rows[0], "id": "task-a"}]
    ev_opts = ev.EvolInstructOptions(rounds=2, max_tokens=40, answer_max_tokens=12, equality_check=False,
                                     operations=["deepen", "constraints"])  # fmt: skip
    out = ev.evol_instruct(seeded, _ctx(llm, ev_opts, "evol_instruct", tmp_path / "e", "evolved"))
    assert out[0]["round"] == 0 and out[0]["provenance"] == prov  # the seed row keeps its own provenance
    evolved = [r for r in out if r["round"] > 0]
    assert evolved, "two rounds of two operations on the local model keep at least one evolution"
    for row in evolved:
        chain = list(trace(row))
        assert [p["method"] for p in chain] == ["evol_instruct", "bonito"]
        assert chain[0]["seed_id"] == "task-a" and chain[0]["parent_id"] == row["parent_id"]
        assert chain[0]["round"] == row["round"] and chain[0]["operation"] == row["operation"]
        assert chain[0]["step"] == "evolved" and chain[0]["model"] == model
        where = origin(row)
        assert where["doc_id"] == "turtles" and where["passage_index"] == 0 and where["seed_id"] == "task-a"
        assert [s["step"] for s in where["steps"]] == ["doc_tasks", "evolved"]
    json.dumps(out)  # journaled and written as JSON


def test_other_generators_name_their_sources(llm, tmp_path: Path) -> None:
    model = f"local:{llm.identity['model']}"
    opts = bt.BacktranslationOptions(augment_max_tokens=16, rate_max_tokens=8, keep_all=True)
    rows = bt.backtranslation([{"id": "t1", "text": PASSAGE}], _ctx(llm, opts, "backtranslation", tmp_path / "bt", "bt"))
    assert rows, "keep_all returns every segment with a predicted instruction"
    assert rows[0]["provenance"] == {"step": "bt", "method": "backtranslation", "model": model, "doc_id": "t1",
                                     "passage_index": 0}  # fmt: skip

    parent = {"id": "p1", "instruction": "Describe how sea turtles nest.", "output": "On beaches.",
              "provenance": {"step": "gen", "method": "bonito", "model": model, "doc_id": "turtles"}}  # fmt: skip
    tree = ti.tree_instruct([parent], _ctx(llm, ti.TreeInstructOptions(max_tokens=48, response_max_tokens=8),
                                           "tree_instruct", tmp_path / "ti", "tree"))  # fmt: skip
    for row in tree:  # a rewrite the tiny model fails is dropped and counted; a kept one names its parent
        assert row["provenance"]["parent_id"] == "p1" and origin(row)["doc_id"] == "turtles"

    tasks = [{"instruction": "Write a short greeting for a birthday card.", "request_idx": 0,
              "seed_ids": ["seed_1", "seed_4"]}]  # fmt: skip
    opts_si = si.SelfInstructOptions(instance_max_tokens=24)
    for row in si.generate_instances(tasks, _ctx(llm, opts_si, "self_instruct", tmp_path / "si", "seeds"), opts_si, {}):
        assert row["provenance"]["seed_ids"] == ["seed_1", "seed_4"] and row["provenance"]["step"] == "seeds"


def test_provenance_survives_a_pipeline_to_the_export(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    from instructkit.run.pipeline import Pipeline

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "turtles.txt").write_text(PASSAGE)
    path = tmp_path / "p.yaml"
    path.write_text(f"""
name: prov
model: local
out: {tmp_path / "out"}
seed: 3
steps:
  - name: doc_tasks
    generate: bonito
    input: {docs}
    options: {{task_types: [summarization, qa], max_tokens: 24}}
  - name: ifd
    score: ifd
    options: {{drop_gt1: false}}
  - name: best
    select: topk
    options: {{score: ifd, k: 1}}
  - name: sft
    export: messages
    options: {{meta: field}}
""")
    manifest = Pipeline.from_yaml(path).run(progress=False)
    assert [s["step"] for s in manifest["steps"]] == ["doc_tasks", "ifd", "best", "sft"]
    rows = datasets.load_dataset(str(tmp_path / "out" / "sft"), cache_dir=str(tmp_path / "hf"))["train"].to_list()
    assert len(rows) == manifest["steps"][-1]["rows_out"] >= 1
    for row in rows:
        prov = json.loads(row["meta"])["provenance"]
        assert prov["doc_id"] == "turtles.txt" and prov["step"] == "doc_tasks" and prov["method"] == "bonito"
