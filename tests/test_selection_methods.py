"""Score and cluster selectors (basic, CaR, Cherry, MoDS, InsTag) and dedup against plain references."""

from __future__ import annotations

import math

import numpy as np
import pytest
from instructkit.selection.basic import random_select, ratio_select, threshold_select, topk_select
from instructkit.selection.car import car_clusters, car_combine, car_select
from instructkit.selection.dedup import embedding_dedup, exact_dedup, minhash_dedup, minhashes, rouge_dedup
from instructkit.selection.instag import instag_select, tag_coverage
from instructkit.selection.mods import mods_select

from instructkit.shared.clustering import cherry_pre_select, middle_confidence_sample


def blobs(n: int, d: int, centers: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centers, d)) * 3
    return (c[rng.integers(centers, size=n)] + rng.normal(size=(n, d))).astype(np.float32)


# ----- threshold / top-k / ratio -------------------------------------------------------------


def test_basic_selectors_stable_ties_and_nan() -> None:
    s = np.array([3.0, 1.0, 3.0, np.nan, 2.0, 3.0])
    assert topk_select(s, 4).tolist() == [0, 2, 5, 4]
    assert topk_select(s, 3, descending=False).tolist() == [1, 4, 0]
    assert topk_select(s, 6).tolist()[-1] == 3  # NaN last
    assert threshold_select(s, 2.0).tolist() == [0, 2, 5, 4]
    assert threshold_select(s, 2.0, strict=True).tolist() == [0, 2, 5]
    assert threshold_select(s, 2.0, above=False, order="index").tolist() == [1, 4]
    assert ratio_select(s, 0.5, order="index").tolist() == [0, 2, 5]  # int(6 * 0.5) = 3
    with pytest.raises(ValueError):
        ratio_select(s, 1.5)


def test_topk_matches_sorted_reference() -> None:
    s = np.random.default_rng(0).integers(0, 20, size=3000).astype(float)
    ref = sorted(range(len(s)), key=lambda i: (-s[i], i))[:700]
    assert topk_select(s, 700).tolist() == ref
    r = random_select(3000, 50, 4)
    assert r.tolist() == np.random.RandomState(4).choice(3000, 50, replace=False).tolist()


# ----- CaR -----------------------------------------------------------------------------------


def ref_car_combine(scores: np.ndarray, labels: np.ndarray, n1: int, n2: int) -> list[int]:
    """The official combine: python sorts over dicts, labels stored as strings."""
    rows = [{"i": i, "score": float(scores[i]), "label": str(labels[i])} for i in range(len(scores))]
    top = sorted(rows, key=lambda r: r["score"], reverse=True)[:n1]
    out = [r["i"] for r in top]
    grouped = sorted(rows, key=lambda r: (r["label"], r["score"]), reverse=True)
    count: dict[str, int] = {}
    for r in grouped:
        if count.get(r["label"], 0) < n2:
            count[r["label"]] = count.get(r["label"], 0) + 1
            if r["i"] not in out:
                out.append(r["i"])
    return out


def test_car_combine_matches_official_order() -> None:
    rng = np.random.default_rng(1)
    scores = rng.random(2000)  # distinct scores: the official reverse sort is then unambiguous
    labels = rng.integers(0, 31, size=2000)
    got = car_combine(scores, labels, 300, 2)
    assert got.tolist() == ref_car_combine(scores, labels, 300, 2)
    as_int = car_combine(scores, labels, 300, 2, label_order="int")
    assert set(as_int.tolist()) == set(got.tolist()) and as_int[:300].tolist() == got[:300].tolist()


def test_car_clusters_and_select() -> None:
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    x = blobs(1200, 20, 8, 2)
    scores = np.random.default_rng(2).random(1200)
    idx, labels = car_select(x, scores, n1=100, n2=1)
    pca = PCA(n_components=0.95, random_state=42).fit_transform(x)
    ref_labels = KMeans(n_clusters=int(math.sqrt(1200 / 2)), random_state=42, n_init="auto").fit_predict(pca)
    assert labels.tolist() == ref_labels.tolist()
    assert idx.tolist() == ref_car_combine(scores, ref_labels, 100, 1)
    assert len(np.unique(car_clusters(x, n_clusters=5))) == 5


# ----- Cherry --------------------------------------------------------------------------------


def ref_middle(labels: np.ndarray, conf: np.ndarray, n: int, low: float, high: float) -> list[int]:
    """A transcription of Cherry_LLM's sample_middle_confidence_data."""
    out: list[int] = []
    for c in range(len(np.unique(labels))):
        members = np.where(labels == c)[0]
        cc = conf[members]
        if len(members) < n:
            out.extend(members.tolist())
            continue
        lo, hi = np.percentile(cc, low), np.percentile(cc, high)
        mid = members[np.where((cc >= lo) & (cc <= hi))[0]]
        if len(mid) < n:
            out.extend(mid.tolist())
        else:
            out.extend(mid[:: len(mid) // n][:n].tolist())
    return out


def test_middle_confidence_matches_official() -> None:
    rng = np.random.default_rng(3)
    labels = np.concatenate([rng.integers(0, 40, size=3000), np.full(5, 40)])  # cluster 40 is small
    conf = np.round(rng.lognormal(size=len(labels)), 2)  # ties at the percentiles
    for low, high in [(25, 75), (1, 99)]:
        got = middle_confidence_sample(labels, conf, 10, low, high)
        assert got.tolist() == ref_middle(labels, conf, 10, low, high)
    assert len(middle_confidence_sample(labels, conf, 10)) == 40 * 10 + 5
    assert middle_confidence_sample(labels, conf, 0).size == 0


def test_cherry_pre_select_uses_kmeans_labels() -> None:
    from sklearn.cluster import KMeans

    x = blobs(900, 16, 6, 4)
    conf = np.random.default_rng(4).random(900)
    idx, labels = cherry_pre_select(x, conf, n_clusters=12, n_per_cluster=5)
    ref_labels = KMeans(n_clusters=12, random_state=0, n_init=10).fit_predict(x)  # the official run (sklearn < 1.4)
    assert labels.tolist() == ref_labels.tolist()
    assert idx.tolist() == ref_middle(ref_labels, conf, 5, 25, 75)


# ----- MoDS ----------------------------------------------------------------------------------


def test_mods_matches_reference_pipeline() -> None:
    rng = np.random.default_rng(5)
    x = blobs(1500, 12, 10, 5).astype(np.float64)
    quality = rng.normal(size=1500)
    necessity = rng.normal(size=1500)
    pool = [i for i in range(1500) if quality[i] > 0.0]
    sub = x[pool]
    d = np.sqrt(np.maximum(((sub[:, None, :] - sub[None, :, :]) ** 2).sum(-1), 0))
    m = d[0].copy()
    picks = [0]
    m[0] = -1
    while len(picks) < 60:
        i = int(np.argmax(m))
        picks.append(i)
        m = np.minimum(m, d[i])
        m[picks] = -1
    seeds = [pool[i] for i in picks]
    extra = [i for i in pool if necessity[i] < -0.5]
    got = mods_select(x, quality, 60, 0.0, necessity, -0.5, first_index=0, dedupe=False)
    assert got.tolist() == seeds + extra
    deduped = mods_select(x, quality, 60, 0.0, necessity, -0.5, first_index=0)
    assert deduped.tolist() == seeds + [i for i in extra if i not in seeds]
    assert mods_select(x, quality, 60, 0.0, first_index=0).tolist() == seeds


# ----- InsTag --------------------------------------------------------------------------------


def ref_instag(tags: list[set], n: int) -> list[int]:
    """Algorithm 1, literally: stable sort by tag count, reset coverage each pass."""
    pool = sorted(range(len(tags)), key=lambda i: -len(tags[i]))
    out: list[int] = []
    while len(out) < n and pool:
        covered: set = set()
        added = False
        for i in list(pool):
            if len(out) == n:
                break
            if not tags[i] <= covered:
                out.append(i)
                covered |= tags[i]
                pool.remove(i)
                added = True
        if not added:
            break
    return out


def test_instag_toy_cases() -> None:
    tags = [{"a"}, {"a", "b"}, {"c"}, {"a", "b"}, set(), {"b", "c", "d"}]
    # order by tag count (stable): 5, 1, 3, 0, 2, 4. pass 1: 5 (b c d), 1 (adds a); pass 2 (reset):
    # 3 (a b), 2 (c); pass 3: 0; pass 4 adds nothing (row 4 has no tags): stop, or fill.
    assert instag_select(tags, 10).tolist() == [5, 1, 3, 2, 0]
    assert instag_select(tags, 10, fill="complexity").tolist() == [5, 1, 3, 2, 0, 4]
    assert instag_select(tags, 2).tolist() == [5, 1]
    assert instag_select([["A ", "b"], ["a"], "b,c"], 3).tolist() == [0, 2, 1]  # normalised tags
    assert instag_select([[{"tag": "x"}], [{"tag": "y"}]], 2).tolist() == [0, 1]


def test_instag_matches_reference_and_first_pass_covers_all() -> None:
    rng = np.random.default_rng(6)
    vocab = [f"t{i}" for i in range(60)]
    tags = [set(rng.choice(vocab, size=rng.integers(0, 6), replace=False).tolist()) for _ in range(2000)]
    got = instag_select(tags, 900)
    assert got.tolist() == ref_instag(tags, 900)
    first_pass = ref_instag(tags, 2000)
    universe = set().union(*tags)
    assert tag_coverage(tags, got[:60]) <= 1.0
    covered: set = set()
    for i in first_pass:
        if tags[i] <= covered:
            break
        covered |= tags[i]
    assert covered == universe


# ----- dedup ---------------------------------------------------------------------------------


def test_exact_dedup() -> None:
    texts = ["Hello  world", "hello world", "other", "Other ", "x"]
    assert exact_dedup(texts).tolist() == [0, 2, 4]
    assert exact_dedup(texts, normalize=False).tolist() == [0, 1, 2, 3, 4]


def near_dup_texts(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(300)]
    base = [" ".join(rng.choice(words, size=30)) for _ in range(n)]
    out = []
    for i, t in enumerate(base):
        out.append(t)
        if i % 3 == 0:  # a near copy: one word changed at the end
            out.append(t.rsplit(" ", 1)[0] + " changed")
    return out


def test_minhash_dedup_brute_matches_reference_and_lsh_finds_planted() -> None:
    texts = near_dup_texts(150, 7)
    hashes = minhashes(texts)
    keep: list[int] = []
    for i, m in enumerate(hashes):
        if all(hashes[j].jaccard(m) < 0.8 for j in keep):
            keep.append(i)
    assert minhash_dedup(texts, lsh=False).tolist() == keep
    lsh = minhash_dedup(texts)
    assert lsh.tolist() == keep  # planted copies are far above the threshold: LSH finds every one
    assert len(keep) == 150


def test_rouge_dedup_matches_rouge_score() -> None:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    texts = near_dup_texts(60, 8) + ["w1 w2 w3", "w1 w2 w3 w4"]
    keep: list[int] = []
    for i, t in enumerate(texts):
        if all(scorer.score(texts[j], t)["rougeL"].fmeasure <= 0.7 for j in keep):
            keep.append(i)
    assert rouge_dedup(texts, 0.7).tolist() == keep


def test_embedding_dedup_reference() -> None:
    x = blobs(1000, 8, 30, 9).astype(np.float64)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    sim = xn @ xn.T
    keep: list[int] = []
    for i in range(len(x)):
        if not keep or sim[i, keep].max() <= 0.97:
            keep.append(i)
    assert embedding_dedup(x, 0.97).tolist() == keep


def test_deita_evol_score_multi_turn() -> None:
    from instructkit.selection.deita import evol_scores

    recs = [
        {"c": 2.0, "q": 3.0},
        {"c": [1.0, 2.0], "q": [3.0, 4.0]},  # 1*3 + 2*4
        {"c": [1.0], "q": [1.0, 2.0]},  # mismatched turns: no score
        {"c": None, "q": 1.0},
    ]
    got = evol_scores(recs, "c", "q")
    assert got[:2].tolist() == [6.0, 11.0] and np.isnan(got[2:]).all()
