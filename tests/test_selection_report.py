"""Diversity metrics on hand-computed examples; registered wrappers on records; embeddings to .npy."""

from __future__ import annotations

import numpy as np
import pytest
from instructkit.selection.deita import deita_select
from instructkit.selection.kcenter import kcenter_greedy
from instructkit.selection.report import (
    cluster_stats,
    compare_with_random,
    distinct_n,
    diversity_report,
    format_table,
    mean_pairwise_cosine_distance,
    vendi_score_dual,
)

from instructkit.registry import get
from instructkit.run.runner import RunContext

SQUARE = np.array([[1, 0], [0, 1], [-1, 0], [0, -1]], dtype=np.float32)


def test_report_on_square() -> None:
    rep = diversity_report(
        SQUARE, [0, 1], scores=np.array([1.0, 2.0, 3.0, 4.0]), texts=["a b a", "b c", "", ""]
    )
    # min cosine distances of the 4 points to {e1, e2}: 0, 0, 1, 1
    assert rep["covering_radius"] == pytest.approx(1.0)
    assert rep["coverage_mean"] == pytest.approx(0.5)
    assert rep["facility_location"] == pytest.approx(2.0)  # 1 + 1 + 0 + 0
    assert rep["mean_nn_distance"] == pytest.approx(1.0)
    assert rep["mean_pairwise_distance"] == pytest.approx(1.0)
    assert rep["vendi"] == pytest.approx(2.0)
    assert rep["distinct_1"] == pytest.approx(3 / 5)  # a b a b c: 3 unique of 5
    assert rep["distinct_2"] == pytest.approx(1.0)  # (a b) (b a) (b c)
    assert rep["score"]["mean"] == pytest.approx(1.5)
    opposite = diversity_report(SQUARE, [0, 2])
    assert opposite["covering_radius"] == pytest.approx(1.0)
    assert opposite["mean_pairwise_distance"] == pytest.approx(2.0)


def test_vendi_dual_equals_primal_and_bounds() -> None:
    x = np.random.default_rng(0).normal(size=(300, 12))
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    w = np.linalg.eigvalsh(xn @ xn.T / len(x))
    w = w[w > 1e-12]
    assert vendi_score_dual(x) == pytest.approx(float(np.exp(-(w * np.log(w)).sum())), rel=1e-9)
    assert vendi_score_dual(np.ones((10, 4))) == pytest.approx(1.0)
    assert vendi_score_dual(np.eye(5)) == pytest.approx(5.0)
    pair = (xn @ xn.T)[np.triu_indices(300, 1)]
    assert mean_pairwise_cosine_distance(x) == pytest.approx(float((1 - pair).mean()), rel=1e-9)


def test_cluster_stats_and_distinct() -> None:
    labels = np.array([0, 0, 1, 1, 2, 2, 2, 3])
    st = cluster_stats(labels, [0, 2])
    assert st["coverage"] == pytest.approx(0.5)
    # p = (1/2, 1/2, 0, 0), q = (2/8, 2/8, 3/8, 1/8): KL = 2 * 0.5 * log(0.5 / 0.25)
    assert st["kl_to_pool"] == pytest.approx(np.log(2))
    assert st["entropy"] == pytest.approx(np.log(2))
    assert distinct_n(["A a"], 1) == pytest.approx(0.5)
    assert distinct_n([""], 2) == 0.0


def test_compare_with_random_and_table() -> None:
    x = np.random.default_rng(1).normal(size=(500, 8)).astype(np.float32)
    picks = kcenter_greedy(x, 40, metric="cosine", first_index=0)
    both = compare_with_random(x, picks, random_state=0, n_clusters=10)
    assert both["selection"]["n"] == both["random"]["n"] == 40
    # farthest-first in cosine geometry covers better than random
    assert both["selection"]["covering_radius"] < both["random"]["covering_radius"]
    table = format_table({"kcenter": both["selection"], "random": both["random"]})
    assert "covering_radius" in table and "clusters.coverage" in table


# ----- registered wrappers -------------------------------------------------------------------


def make_records(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [
        {
            "instruction": f"task {i}",
            "output": f"answer {i % 7}",
            "score": float(rng.integers(1, 6)),
            "reward": float(rng.normal()),
            "tags": [f"t{j}" for j in rng.choice(20, size=rng.integers(1, 4), replace=False)],
        }
        for i in range(n)
    ]


def test_registered_selectors_on_records(tmp_path) -> None:
    records = make_records(400)
    emb = np.random.default_rng(2).normal(size=(400, 16)).astype(np.float32)
    path = tmp_path / "emb.npy"
    np.save(path, emb)
    scores = np.array([r["score"] for r in records])

    def run(name: str, **opts) -> list[dict]:
        info = get("select", name)
        assert info.needs_model is False
        return info.func(records, RunContext(options=info.make_options(opts), random_state=3))

    out = run("deita", budget="50", tau="0.5", score="score", embeddings=str(path))
    assert [r["_select_rank"] for r in out] == list(range(len(out)))
    assert [r["_select_index"] for r in out] == deita_select(emb, scores, 50, 0.5).tolist()
    assert [r["instruction"] for r in out] == [
        records[i]["instruction"] for i in deita_select(emb, scores, 50, 0.5)
    ]
    out = run("kcenter", k="20", embeddings=str(path), first_index="4")
    assert [r["instruction"] for r in out] == [
        records[i]["instruction"] for i in kcenter_greedy(emb, 20, first_index=4)
    ]
    assert len(run("topk", k="10")) == 10
    assert len(run("threshold", threshold="4")) == int((scores >= 4).sum())
    assert len(run("ratio", ratio="0.1")) == 40
    assert len(run("random", k="12")) == 12
    car = run("car", n1="30", embeddings=str(path))
    assert len(car) >= 30 and "car_cluster" in car[0]
    assert len(run("mods", n_seeds="15", embeddings=str(path))) == 15
    assert len(run("dq", budget="40", n_bins="4", embeddings=str(path))) == 40
    assert len(run("instag", n="25")) == 25
    assert len(run("dedup", mode="exact", fields="output")) == 7
    assert len(run("dedup", mode="embedding", threshold="0.5", embeddings=str(path))) < 400
    cherry = [dict(r, instruction_ppl=r["reward"]) for r in records]
    info = get("select", "cherry")
    got = info.func(
        cherry, RunContext(options=info.make_options({"n_clusters": "5", "embeddings": str(path)}))
    )
    assert len(got) == 50 and "cherry_cluster" in got[0]
    np.save(tmp_path / "short.npy", emb[:5])
    with pytest.raises(ValueError, match="does not match"):
        run("kcenter", k="5", embeddings=str(tmp_path / "short.npy"))


def test_embed_records_local_encoder_and_cache(tmp_path) -> None:
    from instructkit.selection.embed import embed_records

    records = [
        {"instruction": "Say hi", "output": "Hi!"},
        {"instruction": "Add 2 and 2", "input": "", "output": "4"},
    ]
    out = tmp_path / "e.npy"
    emb = embed_records(records, "local", out_path=out, cache_dir=tmp_path / "cache")
    assert emb.shape == (2, 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(np.load(out), emb)
    cached = list((tmp_path / "cache").glob("*.npy"))
    assert len(cached) == 1
    np.save(cached[0], np.zeros((2, 384), dtype=np.float32))  # the cache is what is read back
    assert not embed_records(records, "local", cache_dir=tmp_path / "cache").any()
