"""Shared-prefix span scoring (instructkit/models/span_scoring.py) against full forward passes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from instructkit.models.local import load_local_backend
from instructkit.models.span_scoring import length_batches, plan_groups, score_spans

PREAMBLE = "Below is a task for you. Answer it as well as you can, briefly and truthfully.\n\n### Task:\n"
TASKS = [
    ("Name a primary color.", "Red is a primary color."),
    ("What is the capital of France?", "The capital of France is Paris."),
    ("Add 2 and 3.", "2 + 3 = 5."),
    ("Give a synonym for happy.", "Joyful."),
    ("Translate 'gato' to English.", "Cat."),
]


@pytest.fixture(scope="module")
def backend():
    return load_local_backend("local")


def pairs_of(backend) -> list[tuple[list[int], list[int]]]:
    """Templated pairs (long shared prefix), bare answers (empty prompt) and one short unrelated prompt."""
    out = [backend.span_ids(PREAMBLE + q + "\n\n### Answer:", " " + a) for q, a in TASKS]
    out += [([], backend.tokenizer.encode(a)) for _, a in TASKS[:2]]
    out.append(backend.span_ids("Hi", " there"))
    return out


def reference(model, prompt: list[int], answer: list[int]) -> list[float]:
    """One pair at a time: full logits of the whole sequence, log_softmax, the answer tokens."""
    full = torch.tensor([prompt + answer])
    with torch.no_grad():
        logp = torch.log_softmax(model(full).logits[0].float(), dim=-1)
    return [logp[t - 1, full[0, t]].item() for t in range(max(len(prompt), 1), full.shape[1])]


def test_plan_groups_shares_the_template_prefix(backend):
    pairs = pairs_of(backend)
    groups = plan_groups([p for p, _ in pairs])
    shared = [g for g in groups if g.prefix]
    assert len(shared) == 1 and sorted(shared[0].members) == list(range(len(TASKS)))
    preamble = backend.tokenizer.encode(PREAMBLE)
    # the whole preamble except possibly its last token (merged with the task text) is shared
    assert len(shared[0].prefix) >= len(preamble) - 1
    assert all(len(shared[0].prefix) < len(pairs[i][0]) for i in shared[0].members)
    assert sorted(i for g in groups for i in g.members) == list(range(len(pairs)))
    assert plan_groups([p for p, _ in pairs], min_prefix=0)[0].prefix == []


def test_length_batches_respect_rows_and_tokens():
    lengths = [5, 100, 7, 7, 300, 50]
    batches = length_batches(lengths, range(6), max_rows=3, token_budget=120)
    assert [i for b in batches for i in b] == [0, 2, 3, 5, 1, 4]
    for b in batches:
        assert len(b) <= 3 and (len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 120)


@pytest.mark.parametrize("which", ["local", "gpt2"])
@pytest.mark.parametrize("budget", [64, 4096])
def test_shared_prefix_scores_equal_full_passes(backend, tiny_gpt2, which, budget):
    be = backend if which == "local" else tiny_gpt2
    pairs = pairs_of(backend)
    got = score_spans(be.model, pairs, pad_id=be.pad_id, token_budget=budget, max_rows=4)
    plain = score_spans(be.model, pairs, pad_id=be.pad_id, token_budget=budget, reuse_prefix=False)
    for (p, a), g, q in zip(pairs, got, plain):
        ref = reference(be.model, p, a)
        assert len(g) == len(ref) > 0
        np.testing.assert_allclose(g, ref, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(q, ref, rtol=1e-5, atol=1e-5)
