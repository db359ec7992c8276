"""DiverseEvol: picks equal to the official `KCenterSampling.query` (golden lists recorded by running it),
whitening as `utils.py`, and the train / embed / pick loop end to end on SmolLM2-135M and a tiny LLaMA,
from Python, the CLI and a pipeline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from instructkit.selection.diverseevol import initial_rows, query, whiten

from instructkit.numerics import FP32_UNIT_ROUNDOFF
from instructkit.registry import get
from instructkit.run.runner import RunContext

GOLDEN = Path(__file__).parent / "data" / "diverseevol_kcenter_official.json"


def test_rounds_pick_what_official_kcenter_sampling_picks():
    """`data/diverseevol_kcenter_official.json`: KCenterSampling.query (OFA-Sys/DiverseEvol a22e952) run on
    seeded float32 embeddings, a new embedding per round, the labelled set growing by its picks."""
    golden = json.loads(GOLDEN.read_text())
    for case in golden["cases"]:
        n, d, seed = case["n"], case["d"], case["seed"]
        labelled = initial_rows(n, len(case["init"]), seed)
        assert labelled.tolist() == case["init"]
        for rd, want in enumerate(case["rounds"]):
            emb = np.random.RandomState(1000 * seed + rd).standard_normal((n, d)).astype(np.float32)
            new = query(emb, labelled, len(want))
            assert sorted(new.tolist()) == want, (seed, rd)  # upstream returns index order
            assert not set(new.tolist()) & set(labelled.tolist())
            labelled = np.union1d(labelled, new)


def test_whiten_is_compute_kernel_bias_then_normalize():
    import torch

    x = np.random.RandomState(0).standard_normal((200, 12)).astype(np.float32) @ np.diag(np.arange(1, 13.0))
    t = torch.from_numpy(x.astype(np.float64))  # the formula in float64: ours differs by its float32 output
    u, s, _ = torch.linalg.svd(torch.cov(t.t()))
    kernel = torch.mm(u, torch.diag(1 / torch.sqrt(s)))[:, :5]
    z = torch.mm(t - t.mean(axis=0, keepdims=True), kernel)
    want = (z / (z**2).sum(dim=1, keepdims=True) ** 0.5).numpy()
    got = whiten(x, 5)
    signs = np.sign((got * want).sum(axis=0))  # singular vectors are defined up to sign
    # unit vectors rounded to float32 (half an ulp of values <= 1) plus float64 SVDs from two LAPACK routines
    np.testing.assert_allclose(got * signs, want, rtol=0, atol=FP32_UNIT_ROUNDOFF + 1e-12)


def alpaca_rows(n: int) -> list[dict]:
    topics = "sorting lists|rivers|baking bread|prime numbers|the moon|chess|python loops|tea|volcanoes|jazz".split("|")
    return [
        {"instruction": f"Write one sentence about {topics[i % len(topics)]}.", "input": "" if i % 3 else "Be brief.",
         "output": f"Here is a short note number {i} on {topics[i % len(topics)]}, " + "with detail " * (i % 4)}
        for i in range(n)
    ]


def reference_embeddings(model_dir: Path, rows: list[dict], max_length: int) -> np.ndarray:
    """Upstream's `get_embeddings` restated on our training text: one row at a time, `hidden_states[-1]`
    of the causal LM, averaged over every token."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from instructkit.training import chat_of

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
    out = []
    with torch.no_grad():
        for r in rows:
            ids = tok.apply_chat_template(chat_of(r), tokenize=True, return_dict=True)["input_ids"][:max_length]
            h = model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states[-1]
            out.append(h[0].mean(0).numpy())
    return np.stack(out)


def test_loop_on_smollm2_embeds_with_the_latest_model_and_resumes(tmp_path):
    pytest.importorskip("trl")
    rows = alpaca_rows(8)
    info = get("select", "diverseevol")
    opts = info.make_options({"base": "local", "init_size": "3", "n_query": "2", "n_rounds": "2", "max_length": "48",
                              "train": '{"max_steps": 1, "batch_size": 2, "lr": 0.001}', "random_state": "5"})
    out = info.func(rows, RunContext(options=opts, work_dir=tmp_path, random_state=5))
    assert [r["diverseevol_round"] for r in out] == [0] * 3 + [1] * 2 + [2] * 2
    picks = [r["_select_index"] for r in out]
    assert picks[:3] == initial_rows(8, 3, 5).tolist() and len(set(picks)) == 7

    state = next((tmp_path / "diverseevol").iterdir())
    assert not (state / "rd_2" / "out").exists()  # the last round trains nothing by default
    emb = reference_embeddings(state / "rd_0" / "out" / "model", rows, 48)
    assert query(emb, np.array(picks[:3]), 2).tolist() == picks[3:5]  # round 1: round 0's model
    base = reference_embeddings(Path(json.loads((state / "rd_0" / "out" / "model" / "instructkit_train.json")
                                                .read_text())["base_path"]), rows, 48)
    assert np.abs(base - emb).max() > 1e-3  # the trained model, not the base, embedded round 1

    stamp = (state / "rd_0" / "out" / "model" / "instructkit_train.json").stat().st_mtime_ns
    again = info.func(rows, RunContext(options=opts, work_dir=tmp_path, random_state=5))
    assert [r["_select_index"] for r in again] == picks  # resumed from the kept rounds
    assert (state / "rd_0" / "out" / "model" / "instructkit_train.json").stat().st_mtime_ns == stamp
    summary = json.loads((tmp_path / "diverseevol.manifest.json").read_text())
    assert all("steps" not in r for r in summary["counts"]["rounds"])  # nothing retrained


def test_cli_and_pipeline_on_a_tiny_llama(tiny_llama, tmp_path):
    pytest.importorskip("trl")
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in alpaca_rows(10)))
    out = tmp_path / "sel.jsonl"
    train = '{"max_steps": 2, "batch_size": 2}'
    args = ["-o", "base", f"hf:{tiny_llama}", "-o", "init_size", "3", "-o", "n_query", "2", "-o", "n_rounds", "2",
            "-o", "max_length", "64", "-o", "train", train, "--seed", "1"]
    run = subprocess.run([sys.executable, "-m", "instructkit.cli", "select", "diverseevol", str(data), "--out",
                          str(out), *args], capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["diverseevol_round"] for r in got] == [0, 0, 0, 1, 1, 2, 2]

    from instructkit.run.pipeline import Pipeline

    yaml = tmp_path / "p.yaml"
    yaml.write_text(f"""
name: evol
seed: 1
out: {tmp_path / "out"}
steps:
  - name: picked
    select: diverseevol
    input: {data}
    options: {{base: "hf:{tiny_llama}", init_size: 3, n_query: 2, n_rounds: 2, max_length: 64, train: {train}}}
""")
    Pipeline.from_yaml(yaml).run(progress=False)
    piped = [json.loads(line) for line in (tmp_path / "out" / "selected.jsonl").read_text().splitlines()]
    assert [r["_select_index"] for r in piped] == [r["_select_index"] for r in got]


def test_row_without_an_answer_is_named_before_training(tmp_path):
    rows = alpaca_rows(5)
    rows[3]["output"] = ""
    info = get("select", "diverseevol")
    with pytest.raises(ValueError, match="row 3"):
        info.func(rows, RunContext(options=info.make_options({"init_size": "2"}), work_dir=tmp_path))
