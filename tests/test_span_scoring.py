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


SMALL = dict(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2)
HEADS = dict(num_attention_heads=4, num_key_value_heads=2)
WIDE = dict(initializer_range=0.5)  # large logits, so that a skipped logit transform would show


def tiny_models() -> dict:
    """Tiny random causal LMs of the architectures users score with, built here (no downloads); the
    logit transforms are made strong so that skipping one would show."""
    import transformers as T

    small, heads, wide = SMALL, HEADS, WIDE
    return {
        "qwen2": T.Qwen2Config(**small, **heads),
        "mistral_sliding_window": T.MistralConfig(**small, **heads, sliding_window=6),
        "gemma2_softcap": T.Gemma2Config(
            **small, **heads, **wide, head_dim=8, sliding_window=6, final_logit_softcapping=2.0
        ),
        "cohere_logit_scale": T.CohereConfig(**small, **heads, **wide, logit_scale=3.0),
        "granite_logits_scaling": T.GraniteConfig(**small, **heads, **wide, logits_scaling=4.0),
        "gpt_neox": T.GPTNeoXConfig(**small, num_attention_heads=4),
    }


def random_pairs(vocab: int, seed: int = 0) -> list[tuple[list[int], list[int]]]:
    g = torch.Generator().manual_seed(seed)
    shared = torch.randint(3, vocab, (16,), generator=g).tolist()
    pairs = []
    for i in range(5):
        q = torch.randint(3, vocab, (2 + i,), generator=g).tolist()
        pairs.append((shared + q, torch.randint(3, vocab, (3 + 2 * i,), generator=g).tolist()))
    pairs.append(([], torch.randint(3, vocab, (6,), generator=g).tolist()))
    return pairs


@pytest.mark.parametrize("arch", list(tiny_models()))
def test_architectures_match_their_own_logits(arch):
    from transformers import AutoModelForCausalLM

    from instructkit.models.span_scoring import head_is_exact

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_models()[arch]).eval()
    pairs = random_pairs(model.config.vocab_size)
    assert head_is_exact(model)
    got = score_spans(model, pairs, pad_id=0, max_rows=2, token_budget=48)
    for (p, a), g in zip(pairs, got):
        np.testing.assert_allclose(g, reference(model, p, a), rtol=1e-5, atol=1e-5)
    if arch.split("_")[0] in ("gemma2", "cohere", "granite"):  # the transform matters here
        full = torch.tensor([pairs[0][0] + pairs[0][1]])
        with torch.no_grad():
            raw = torch.log_softmax(
                model.get_output_embeddings()(model.base_model(full).last_hidden_state), -1
            )
        start = len(pairs[0][0])
        raw_lp = [raw[0, t - 1, full[0, t]].item() for t in range(start, full.shape[1])]
        assert np.abs(np.array(raw_lp) - np.array(got[0])).max() > 1e-3


def test_unknown_logit_transform_is_scored_through_the_whole_model():
    from transformers import LlamaConfig, LlamaForCausalLM

    from instructkit.models.span_scoring import head_is_exact

    class TemperedLlama(LlamaForCausalLM):
        """A causal LM that divides its logits by a temperature inside forward (unknown to us)."""

        def forward(self, *args, **kwargs):
            out = super().forward(*args, **kwargs)
            out.logits = out.logits / 0.25
            return out

    torch.manual_seed(0)
    cfg = LlamaConfig(**SMALL, **HEADS, **WIDE)
    model = TemperedLlama(cfg).eval()
    assert not head_is_exact(model)
    pairs = random_pairs(300, seed=1)
    got = score_spans(model, pairs, pad_id=0, max_rows=2, token_budget=48)
    for (p, a), g in zip(pairs, got):
        np.testing.assert_allclose(g, reference(model, p, a), rtol=1e-5, atol=1e-5)
