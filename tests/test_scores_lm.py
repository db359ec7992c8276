"""Prompt uncertainty and Nuggets on the real local model against per-row HF computations in the test."""

from __future__ import annotations

import json
import math
import random

import pytest

torch = pytest.importorskip("torch")

from instructkit.scorers.ifd import get_template  # noqa: E402
from instructkit.scorers.nuggets import NuggetsOptions, kmeans_anchors, score_nuggets  # noqa: E402
from instructkit.scorers.uncertainty import (  # noqa: E402
    UncertaintyOptions,
    drop_words,
    perturbations,
    score_uncertainty,
)

from instructkit.models import LLM  # noqa: E402
from instructkit.models.local import load_local_backend  # noqa: E402
from instructkit.run.runner import RunContext  # noqa: E402

ROWS = [
    {"instruction": "List two animals that live in the ocean.", "input": "", "output": "Whales and sharks."},
    {"instruction": "Convert the temperature to Fahrenheit.", "input": "100 C", "output": "212 F"},
    {"instruction": "Write the opposite of the word.", "input": "hot", "output": "cold"},
]


@pytest.fixture(scope="module")
def backend():
    return load_local_backend("local", dtype="float32")


def _answer_logprob_sum(model, tok, prompt_ids: list[int], answer_ids: list[int]) -> float:
    ids = torch.tensor([prompt_ids + answer_ids])
    labels = ids.clone()
    labels[0, : len(prompt_ids)] = -100
    with torch.no_grad():
        return -float(model(ids, labels=labels).loss) * len(answer_ids)


def test_drop_words_rule():
    rng, ref = random.Random(7), random.Random(7)
    words = "one two three four five six seven eight".split()
    expected = " ".join(w for w in words if ref.uniform(0, 1) > 0.3)
    assert drop_words(" ".join(words), 0.3, rng) == expected
    variants = perturbations("a b c d e f", "in put", k=4, p=0.5, seed=1)
    assert variants[0] == ("a b c d e f", "in put") and len(variants) == 5
    assert all(inp == "in put" for _, inp in variants)  # inputs untouched unless perturb_input
    assert variants == perturbations("a b c d e f", "in put", k=4, p=0.5, seed=1)  # seeded per row


def test_uncertainty_matches_reference(backend):
    opts = UncertaintyOptions(k=2, p=0.3, batch_size=8)
    ctx = RunContext(llm=LLM("local"), options=opts, method="uncertainty", progress=False)
    ours = score_uncertainty(ROWS, ctx, opts, backend)
    tok, model, tpl = backend.tokenizer, backend.model, get_template("alpaca")
    for rec, got in zip(ROWS, ours):
        probs = []
        for ins, inp in perturbations(rec["instruction"], rec["input"], 2, 0.3, 0):
            text = tpl.prompt(ins, inp) + rec["output"]
            ids = tok.encode(text)
            start = len(tok.encode(text[: text.rfind(rec["output"])]))
            lp = _answer_logprob_sum(model, tok, ids[:start], ids[start:])
            probs.append(math.exp(lp / (len(ids) - start)))
        ref = sum(abs(p - probs[0]) for p in probs[1:]) / 2
        assert abs(got["uncertainty"] - ref) < 1e-5 and abs(got["uncertainty_p0"] - probs[0]) < 1e-5


def test_nuggets_golden_score_matches_reference(backend, tmp_path):
    anchors = [
        {"instruction": "Name a color.", "input": "", "output": "Blue."},
        {"instruction": "Spell the word backwards.", "input": "cat", "output": "tac"},
    ]
    path = tmp_path / "anchors.jsonl"
    path.write_text("\n".join(json.dumps(a) for a in anchors))
    opts = NuggetsOptions(anchors_path=str(path), batch_size=8)
    ctx = RunContext(llm=LLM("local"), options=opts, method="nuggets", progress=False)
    ours = score_nuggets(ROWS, ctx, opts, backend)
    tok, model = backend.tokenizer, backend.model

    def fmt(r: dict) -> str:
        inp = f"Input:\n{r['input']}\n" if r["input"] else ""
        return f"Instruction:\n{r['instruction']}\n{inp}Response:\n"

    for rec, got in zip(ROWS, ours):
        cand = tok.encode(fmt(rec) + rec["output"])
        wins = 0
        for a in anchors:
            q = tok.encode(fmt(a), add_special_tokens=False)
            ans = tok.encode(fmt(a) + a["output"], add_special_tokens=False)[len(q) :]
            s0 = _answer_logprob_sum(model, tok, q, ans)
            s1 = _answer_logprob_sum(model, tok, cand + q, ans)
            wins += s1 > s0
        assert got["nuggets"] == wins / len(anchors)


def test_kmeans_anchors_pick_distinct_rows(backend):
    picked = kmeans_anchors(backend, ROWS, n=2)
    assert 1 <= len(picked) <= 2 and len(set(picked)) == len(picked) and all(0 <= i < 3 for i in picked)
