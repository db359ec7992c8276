"""The trainable quality scorer (CaR IQS style): fit, save, load, score, held-out accuracy."""

from __future__ import annotations

import functools
import json
import random

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from instructkit.scorers.iqs import IQSOptions, QualityScorer, iqs, iqs_text  # noqa: E402

from instructkit.run.runner import RunContext  # noqa: E402

TOPICS = [
    ("Name a fruit.", "An apple is a fruit."),
    ("Name a color.", "Blue is a color."),
    ("Name an animal.", "A dog is an animal."),
    ("Name a planet.", "Mars is a planet."),
    ("Name a city.", "Paris is a city."),
    ("Name a metal.", "Iron is a metal."),
    ("Name a tree.", "An oak is a tree."),
    ("Name a sport.", "Tennis is a sport."),
    ("Name a flower.", "A rose is a flower."),
    ("Name a bird.", "A robin is a bird."),
    ("Name an ocean.", "The Pacific is an ocean."),
    ("Name a vegetable.", "A carrot is a vegetable."),
]


def _rows(seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for ins, good in TOPICS:
        junk = " ".join(rng.choice(["zq", "xx", "lorem", "qwv", "blip", "##"]) for _ in range(6))
        rows.append({"instruction": ins, "input": "", "output": good, "score": 1.0})
        rows.append({"instruction": ins, "input": "", "output": junk, "score": 0.0})
    return rows


@functools.cache
def _minilm() -> tuple:
    from transformers import AutoModel, AutoTokenizer

    from instructkit.models.local_files import minilm_path

    return AutoTokenizer.from_pretrained(str(minilm_path())), AutoModel.from_pretrained(
        str(minilm_path())
    ).eval()


def _minilm_embed(texts: list[str]) -> np.ndarray:
    """Independent mean pooling + L2 norm with plain transformers."""
    tok, model = _minilm()
    out = []
    for t in texts:
        enc = tok(t, return_tensors="pt", truncation=True, max_length=256)
        with torch.no_grad():
            h = model(**enc).last_hidden_state[0]
        v = h.mean(0)
        out.append((v / v.norm()).numpy())
    return np.array(out, dtype=np.float64)


def test_ridge_scorer_matches_sklearn_and_generalises(tmp_path):
    from sklearn.linear_model import Ridge

    train, valid = _rows(0)[:16], _rows(1)[16:]
    texts = [iqs_text(r["instruction"], r["input"], r["output"]) for r in train]
    scorer = QualityScorer(kind="ridge", alpha=1.0, device="cpu").fit(texts, [r["score"] for r in train])
    ref = Ridge(alpha=1.0).fit(_minilm_embed(texts), [r["score"] for r in train])
    vt = [iqs_text(r["instruction"], r["input"], r["output"]) for r in valid]
    assert np.allclose(scorer.score(vt), ref.predict(_minilm_embed(vt)), atol=1e-4)
    report = scorer.evaluate(vt, [r["score"] for r in valid])
    assert report["pairwise_accuracy"] >= 0.75 and report["n"] == len(valid)
    loaded = QualityScorer.load(scorer.save(tmp_path / "s"), device="cpu")
    assert np.allclose(loaded.score(vt), scorer.score(vt))


def test_pairs_and_finetune_roundtrip(tmp_path):
    rows = _rows(2)
    pairs = [
        (iqs_text(g["instruction"], "", g["output"]), iqs_text(b["instruction"], "", b["output"]))
        for g, b in zip(rows[0::2], rows[1::2])
    ]
    lin = QualityScorer(kind="ridge", device="cpu").fit(pairs=pairs[:8])
    assert lin.evaluate(pairs=pairs[8:])["pair_accuracy"] >= 0.75
    ft = QualityScorer(kind="finetune", device="cpu").fit(pairs=pairs[:4], epochs=1, lr=1e-5, batch_size=4)
    texts = [t for p in pairs[8:] for t in p]
    before = ft.score(texts)
    again = QualityScorer.load(ft.save(tmp_path / "ft"), device="cpu").score(texts)
    assert np.isfinite(before).all() and np.allclose(before, again, atol=1e-5)


def test_registered_method_trains_saves_and_scores(tmp_path):
    train, valid = tmp_path / "train.jsonl", tmp_path / "valid.jsonl"
    train.write_text("\n".join(json.dumps(r) for r in _rows(3)[:16]))
    valid.write_text("\n".join(json.dumps(r) for r in _rows(4)[16:]))
    opts = IQSOptions(
        scorer=str(tmp_path / "scorer"), train_path=str(train), valid_path=str(valid), device="cpu"
    )
    ctx = RunContext(options=opts, method="iqs", work_dir=tmp_path, progress=False)
    rows = [
        {"instruction": "Name a fruit.", "input": "", "output": o}
        for o in ("A pear is a fruit.", "zq xx blip")
    ]
    out = iqs(rows, ctx)
    assert out[0]["iqs"] > out[1]["iqs"]
    assert ctx.extras["iqs_validation"]["n"] == 8


def test_scores_read_the_embeddings_the_fit_cached():
    """The encoder is an `LLM` embedder: vectors computed while fitting are cached per text, so
    scoring the same texts embeds nothing again and gives the same scores."""
    rows = _rows(5)[:8]
    texts = [iqs_text(r["instruction"], r["input"], r["output"]) for r in rows]
    scorer = QualityScorer(kind="ridge", device="cpu").fit(texts, [r["score"] for r in rows])
    encoder = scorer._encoder
    calls, hits = encoder.stats.calls, encoder.stats.cache_hits
    first = scorer.score(texts)
    assert encoder.stats.calls == calls and encoder.stats.cache_hits == hits + len(texts)
    assert np.array_equal(first, scorer.score(texts))
