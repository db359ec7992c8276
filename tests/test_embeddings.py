"""Local sentence embeddings (all-MiniLM-L6-v2) and causal-LM hidden-state embeddings."""

from __future__ import annotations

import numpy as np
import pytest

from instructkit.models.embeddings import embedder, load_encoder
from instructkit.models.local_files import minilm_path

TEXTS = ["hello world", "The quick brown fox jumps over the lazy dog. " * 3, "a", "Instruction tuning data"]


@pytest.fixture(scope="module")
def encoder():
    return load_encoder()


def test_matches_sentence_transformers(encoder):
    from sentence_transformers import SentenceTransformer

    ours = encoder.encode(TEXTS)
    ref = SentenceTransformer(str(minilm_path()), device="cpu").encode(TEXTS)
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    one_by_one = np.stack([encoder.encode([t])[0] for t in TEXTS])
    np.testing.assert_allclose(ours, one_by_one, atol=1e-5)


def test_embedder_caches_per_text(tmp_path, encoder):
    llm = embedder("local", cache_dir=str(tmp_path))
    assert llm.identity["family"] == "local" and llm.identity["model"] == encoder.model_id
    first = llm.embed(TEXTS)
    again = llm.embed(TEXTS[::-1])
    assert llm.stats.cache_hits == len(TEXTS)
    np.testing.assert_array_equal(first[::-1], again)
    same = embedder(f"hf:{minilm_path()}", cache_dir=str(tmp_path)).embed(TEXTS[:1])
    np.testing.assert_allclose(same[0], first[0], atol=1e-6)


def test_causal_hidden_state_embedder(tmp_path):
    mean = embedder("causal:local:mean", cache_dir=str(tmp_path))
    last = embedder("causal:local:last", cache_dir=str(tmp_path))
    assert mean.identity["model"] != last.identity["model"]
    vecs = mean.embed(TEXTS[:2])
    assert vecs.shape == (2, 576) and np.isfinite(vecs).all()
