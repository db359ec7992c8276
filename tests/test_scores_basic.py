"""Perplexity and reward-model scores against independent per-row computations in the test."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from instructkit.scorers.ifd import get_template  # noqa: E402
from instructkit.scorers.perplexity import PerplexityOptions, score_perplexity  # noqa: E402
from instructkit.scorers.reward import RewardOptions, score_reward  # noqa: E402

from instructkit.models import LLM  # noqa: E402
from instructkit.models.local import load_local_backend  # noqa: E402
from instructkit.run.runner import RunContext  # noqa: E402

ROWS = [
    {"instruction": "Name a fruit that is yellow.", "input": "", "output": "A banana is yellow."},
    {"instruction": "Add the numbers.", "input": "3 and 4", "output": "3 + 4 = 7"},
    {"instruction": "Give a one-word greeting.", "input": "", "output": "Hello"},
]


def test_perplexity_matches_hf_loss(tmp_path):
    backend = load_local_backend("local", dtype="float32")
    opts = PerplexityOptions(batch_size=2)
    ctx = RunContext(llm=LLM("local"), options=opts, method="perplexity", work_dir=tmp_path, progress=False)
    ours = score_perplexity(ROWS, ctx, opts, backend)
    tok, model = backend.tokenizer, backend.model
    tpl = get_template("alpaca")
    for rec, got in zip(ROWS, ours):
        text = tpl.prompt(rec["instruction"], rec["input"]) + rec["output"]
        ids = tok.encode(text, return_tensors="pt")
        start = len(tok.encode(text[: text.rfind(rec["output"])]))
        labels = ids.clone()
        labels[0, :start] = -100
        with torch.no_grad():
            whole = float(model(ids, labels=ids).loss)
            resp = float(model(ids, labels=labels).loss)
        assert abs(got["ppl_text_loss"] - whole) < 1e-5
        assert abs(got["ppl_response_loss"] - resp) < 1e-5
        assert abs(got["ppl_response"] - math.exp(resp)) / math.exp(resp) < 1e-5
        assert got["ppl_tokens"] == ids.shape[1] - start
    # a second run is answered from the journal: same values
    again = score_perplexity(ROWS, ctx, opts, backend)
    assert [r["ppl_response"] for r in again] == [r["ppl_response"] for r in ours]
    assert ctx.stats.reused == len(ROWS)


@pytest.fixture(scope="module")
def tiny_rm(tmp_path_factory):
    """A randomly initialised DeBERTa-v2 reward model with a real (BERT word-piece) tokenizer."""
    from transformers import AutoTokenizer, DebertaV2Config, DebertaV2ForSequenceClassification

    from instructkit.models.local_files import minilm_path

    tok = AutoTokenizer.from_pretrained(str(minilm_path()))
    torch.manual_seed(0)
    cfg = DebertaV2Config(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        type_vocab_size=2,
        num_labels=1,
        pad_token_id=tok.pad_token_id,
    )
    model = DebertaV2ForSequenceClassification(cfg).eval()
    path = tmp_path_factory.mktemp("rm")
    model.save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path, model, tok


def test_reward_matches_per_row_logit(tiny_rm, tmp_path):
    path, model, tok = tiny_rm
    rows = ROWS + [{"instruction": "Long", "input": "", "output": "word " * 80}]
    opts = RewardOptions(reward_model=str(path), batch_size=3, device="cpu")
    ctx = RunContext(options=opts, method="reward", work_dir=tmp_path, progress=False)
    ours = score_reward(rows[:3], ctx, opts)
    for rec, got in zip(rows, ours):
        q = rec["instruction"] + ("\n" + rec["input"] if rec["input"] else "")
        with torch.no_grad():
            ref = float(model(**tok(q, rec["output"], return_tensors="pt")).logits[0, 0])
        assert abs(got["reward"] - ref) < 1e-4 and got["reward_truncated"] is False
    long = score_reward(rows[3:], ctx, RewardOptions(reward_model=str(path), max_length=64, device="cpu"))
    assert long[0]["reward_truncated"] is True and isinstance(long[0]["reward"], float)


def test_reward_logits_come_through_the_model_layer_cached_by_content(tiny_rm, tmp_path):
    """The reward model is a `ClassifierBackend` behind `LLM`: logits cached per (question, answer)
    under the weights' id, a second run reads them all from the cache, and a changed setting
    (truncation) is another identity."""
    from instructkit.models.cache import ResponseCache
    from instructkit.models.classifier import classifier

    path, model, tok = tiny_rm
    pairs = [(r["instruction"], r["output"]) for r in ROWS]
    cache = ResponseCache(tmp_path / "cache")
    first = classifier(path, batch_size=2, cache=cache)
    got = first.classify(pairs)
    assert first.stats.calls == 1 and first.stats.cache_hits == 0
    again = classifier(path, batch_size=2, cache=cache)
    assert again.classify(pairs[::-1]) == got[::-1] and again.stats.cache_hits == len(pairs)
    assert again.stats.calls == 0
    for (q, a), value in zip(pairs, got):
        with torch.no_grad():
            ref = float(model(**tok(q, a, return_tensors="pt")).logits[0, 0])
        assert abs(value - ref) < 1e-4
    cut = classifier(path, max_length=16, cache=cache)
    assert cut.identity != again.identity and cut.identity["model"].endswith(":max16")
    cut.classify(pairs[:1])
    assert cut.stats.calls == 1


def test_scorers_are_registered():
    import instructkit.scorers  # noqa: F401  (registered on import)

    from instructkit.registry import get

    names = [
        "ifd",
        "superfiltering",
        "perplexity",
        "reward",
        "uncertainty",
        "nuggets",
        "iqs",
        "instruction_mining",
    ]
    for name in names:
        info = get("score", name)
        assert info.summary and info.options is not None
    opts = get("score", "ifd").make_options({"template": "vicuna", "ratio": "0.1", "drop_gt1": "false"})
    assert opts.template == "vicuna" and opts.ratio == 0.1 and opts.drop_gt1 is False
    im = get("score", "instruction_mining").make_options({"coefficients": '{"mtld": -0.1}'})
    assert im.coefficients == {"mtld": -0.1}
