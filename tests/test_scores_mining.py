"""Instruction Mining indicators and rule against independent computations in the test."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("torch")

from instructkit.scorers.instruction_mining import (  # noqa: E402
    InstructionMiningOptions,
    mtld,
    score_instruction_mining,
)

from instructkit.models import LLM  # noqa: E402
from instructkit.models.embeddings import load_encoder  # noqa: E402
from instructkit.run.runner import RunContext  # noqa: E402

ROWS = [
    {"instruction": f"Describe item {i}.", "input": "", "output": text}
    for i, text in enumerate(
        [
            "A red ball.",
            "The cat sat on the mat and the cat slept.",
            "Water boils at one hundred degrees.",
            "Use a hammer to drive the nail.",
            "Bread is made from flour, water and yeast.",
            "Trains run on rails between cities.",
        ]
    )
]


def test_mtld_by_hand():
    assert mtld("a b a b a b") == 3.0  # two full factors each way
    partial = 4 / ((1 - 0.75) / (1 - 0.72))  # never reaches the threshold: one partial factor
    assert math.isclose(mtld("a b c a"), partial)
    assert mtld("") is None


def test_indicators_and_rule(tmp_path):
    coefs = {"len_out": 0.01, "mtld": -0.02, "knn": 0.5, "ppl": 0.001}
    opts = InstructionMiningOptions(coefficients=coefs, intercept=1.0, knn_k=2, batch_size=8)
    ctx = RunContext(
        llm=LLM("local"), options=opts, method="instruction_mining", work_dir=tmp_path, progress=False
    )
    out = score_instruction_mining(ROWS, ctx, opts)
    emb = load_encoder(None).encode([f"{r['instruction']}\n\n{r['output']}" for r in ROWS]).astype(np.float64)
    dist = np.sqrt(((emb[:, None, :] - emb[None, :, :]) ** 2).sum(-1))
    tok = LLM("local").backend.tokenizer
    for i, (rec, got) in enumerate(zip(ROWS, out)):
        assert got["im_len_out"] == len(tok.encode(rec["output"], add_special_tokens=False))
        assert abs(got["im_knn"] - np.sort(dist[i])[2]) < 1e-5  # index 0 is the row itself
        assert got["im_mtld"] == mtld(rec["output"]) and got["im_ppl"] > 1
        total = sum(c * got[f"im_{k}"] for k, c in coefs.items())
        assert abs(got["im_score"] + total) < 1e-9 and abs(got["im_pred_log_loss"] - (1.0 + total)) < 1e-9
        assert got["im_missing"] is None
    # the paper's v2 rule needs reward and UniEval values: reported missing, not guessed
    v2 = InstructionMiningOptions(knn_k=2, batch_size=8)
    rows = [dict(r, unieval_und=0.9, unieval_nat=0.8, unieval_coh=0.7) for r in ROWS[:3]]
    got = score_instruction_mining(rows, RunContext(llm=LLM("local"), options=v2, progress=False), v2)
    assert got[0]["im_score"] is None and got[0]["im_missing"] == "reward" and got[0]["im_und"] == 0.9
