"""Official presets and official tie/order rules of the selection side, each against an independent
re-statement of the official code's behaviour (docs/fidelity.md names the repositories and commits)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from instructkit.scorers.ifd import SuperfilteringOptions, finish_selection

from instructkit.registry import get

# ----- presets -----------------------------------------------------------------------------------


def test_preset_is_an_option_set_that_explicit_options_override():
    info = get("score", "superfiltering")
    assert info.make_options({"preset": "official"}).top_k == 5200  # int(52002 * 0.1), select_data.py
    assert info.make_options({"preset": "official", "top_k": "7"}).top_k == 7
    with pytest.raises(ValueError, match="unknown preset 'paper'; known: official"):
        info.make_options({"preset": "paper"})
    assert info.option_help()[0][0] == "preset"


# ----- Superfiltering selection ------------------------------------------------------------------


def _official_select_data(rows: list[dict], key: str, sample_num: int) -> list[dict]:
    """`code_ifd/select_data.py` restated: numeric values < 1 kept, NaN sorted as (0, 0), Python's
    stable sort with reverse=True, the first sample_num."""

    def sort_key(x):
        return (0, 0) if math.isnan(x[key]) else (1, x[key])

    kept = [x for x in rows if isinstance(x[key], (int, float)) and x[key] < 1]
    return sorted(kept, key=sort_key, reverse=True)[:sample_num]


@pytest.mark.parametrize("top_k", [1, 2, 3, 4, 5])
def test_superfiltering_ties_and_order_follow_select_data(top_k):
    values = [0.5, 0.9, 1.2, 0.9, 0.7, 0.9, 0.5, 0.7]
    rows = [{"id": i, "sf": v, "sf_status": "gt1" if v >= 1 else "ok"} for i, v in enumerate(values)]
    want = [r["id"] for r in _official_select_data(rows, "sf", top_k)]
    got = [r["id"] for r in finish_selection(rows, SuperfilteringOptions(top_k=top_k))]
    assert got == want


# ----- k-center on float32 embeddings --------------------------------------------------------------


def tight_clusters(seed: int, n: int = 1500, d: int = 32, centers: int = 30, noise: float = 0.01) -> np.ndarray:
    """float32 rows around far-apart centers (|x|^2 ~ d, within-cluster squared distances ~ 2 d noise^2):
    float32 arithmetic alone cannot tell the farthest rows apart here."""
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centers, d))
    return (c[rng.integers(centers, size=n)] + noise * rng.normal(size=(n, d))).astype(np.float32)


def official_kcenter(x: np.ndarray, k: int, first: int) -> list[int]:
    """google/active-learning `kCenterGreedy` (MoDS's copy) restated on an N x N float64 matrix:
    sklearn's float32 path computes -2 x.c + ||x||^2 + ||c||^2 in float64, stores it as float32,
    clamps at 0 and takes a float32 sqrt; then min-update and np.argmax (ties: lowest index)."""
    x64 = x.astype(np.float64)
    sq = np.einsum("ij,ij->i", x64, x64)
    d2 = -2 * (x64 @ x64.T)
    d2 += sq[:, None]
    d2 += sq[None, :]
    dist = np.sqrt(np.maximum(d2.astype(np.float32), 0))
    m = dist[first].copy()
    picks = [first]
    while len(picks) < k:
        i = int(np.argmax(m))
        assert i not in picks
        picks.append(i)
        m = np.minimum(m, dist[i])
    return picks


@pytest.mark.parametrize("k", [100, 300, 500])
@pytest.mark.parametrize("seed", range(6))
def test_kcenter_float32_picks_equal_the_official_float64_loop(seed, k):
    from instructkit.selection.kcenter import kcenter_greedy

    x = tight_clusters(seed)
    first = seed * 101 % len(x)
    ref = official_kcenter(x, k, first)
    assert kcenter_greedy(x, k, first_index=first).tolist() == ref
    assert kcenter_greedy(x, k, first_index=first, device="numpy", dense_fraction=0.0).tolist() == ref
    assert kcenter_greedy(x, k, first_index=first, resident=True, tile=1 << 14).tolist() == ref


def test_official_restatement_is_sklearns_pairwise_distances():
    from sklearn.metrics import pairwise_distances

    x = tight_clusters(0, n=300)
    x64 = x.astype(np.float64)
    sq = np.einsum("ij,ij->i", x64, x64)
    mine = np.sqrt(np.maximum((-2 * (x64 @ x64[:7].T) + sq[:, None] + sq[None, :7]).astype(np.float32), 0))
    theirs = pairwise_distances(x, x[:7])
    assert theirs.dtype == np.float32
    np.testing.assert_array_max_ulp(mine, theirs, maxulp=1)  # float64 sums in another order


def test_kcenter_ties_where_sklearn_stores_equal_float32_distances():
    """Rows 1 and 2 are 1 and sqrt(1 + 2^-26) from row 0: different in float64, the same float32 distance
    as sklearn stores it, so the official argmax takes the lower index."""
    from instructkit.selection.kcenter import kcenter_greedy
    from sklearn.metrics import pairwise_distances

    x = np.array([[0, 0], [1, 0], [1, 2.0**-13], [-0.5, 0]], dtype=np.float32)
    stored = pairwise_distances(x, x[:1])[:, 0]
    assert stored[1] == stored[2] and x[2].astype(np.float64) @ x[2] > 1
    assert kcenter_greedy(x, 3, first_index=0).tolist() == official_kcenter(x, 3, 0) == [0, 1, 3]


# ----- K-means as the official scripts ran it (sklearn < 1.4: n_init=10; random_state 0) -------------


def test_cherry_select_kmeans_is_the_official_run(tmp_path):
    from sklearn.cluster import KMeans

    from instructkit.run.runner import RunContext

    x = np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32)
    official = KMeans(12, random_state=0, n_init=10).fit_predict(x)  # data_by_cluster.py, sklearn < 1.4
    assert (official != KMeans(12, random_state=0, n_init="auto").fit_predict(x)).any()  # n_init matters here
    np.save(tmp_path / "emb.npy", x)
    rows = [{"instruction": f"q{i}", "ppl": float(i % 17)} for i in range(len(x))]
    info = get("select", "cherry")
    for options in ({}, {"preset": "official"}):
        opts = info.make_options({"embeddings": str(tmp_path / "emb.npy"), "confidence": "ppl", "n_clusters": "12", **options})
        out = info.func(rows, RunContext(options=opts, random_state=7))
        got = {r["_select_index"]: r["cherry_cluster"] for r in out}
        assert all(official[i] == lab for i, lab in got.items())


def test_cherry_pre_experience_clusters_with_the_official_seed_and_n_init(tiny_gpt2):
    from instructkit.scorers.ifd import IFDOptions, get_template, instruction_features, pre_experience

    from instructkit.run.runner import RunContext
    from instructkit.shared.clustering import cherry_pre_select

    rows = [{"instruction": f"Add {a} and {b}.", "input": "", "output": str(a + b)} for a in range(8) for b in range(5)]
    opts = IFDOptions(model=f"hf:{tiny_gpt2.path}", pre_experience=True, pre_clusters=6, pre_per_cluster=3)
    ctx = RunContext(options=opts, random_state=7, progress=False)
    pre_experience(rows, ctx, opts)
    texts = [get_template("alpaca").prompt(r["instruction"], "") for r in rows]
    emb, ppl = instruction_features(tiny_gpt2, texts)
    official, _ = cherry_pre_select(emb, ppl, 6, 3, 25, 75, random_state=0, n_init=10)
    before, _ = cherry_pre_select(emb, ppl, 6, 3, 25, 75, random_state=7, n_init="auto")
    assert official.tolist() != before.tolist()  # the run's seed and one k-means++ run pick others here
    assert ctx.extras["cherry_pre_sample"] == official.tolist()


def test_nuggets_anchors_are_the_official_kmeans(tiny_gpt2, tmp_path):
    import json

    from instructkit.scorers.nuggets import NuggetsOptions, kmeans_anchors, nuggets_text, score_nuggets
    from sklearn.cluster import KMeans

    from instructkit.run.runner import RunContext

    rows = [{"instruction": f"Name a color number {i}.", "input": "", "output": c} for i, c in enumerate("red blue green gray pink teal gold navy lime rust plum sand".split())]
    texts = [nuggets_text(r["instruction"], r["input"], r["output"]) for r in rows]
    emb = tiny_gpt2.hidden_states(texts, "mean", special_tokens=True, max_length=512)
    assert emb.dtype == np.float32
    km = KMeans(4, random_state=0, n_init=10).fit(list(emb))  # kmeans_sample.py: a list, so float64
    official = [int(((list(emb) - c) ** 2).sum(1).argmin()) for c in km.cluster_centers_]
    assert kmeans_anchors(tiny_gpt2, rows, 4) == list(dict.fromkeys(official))
    (tmp_path / "anchors.json").write_text(json.dumps([rows[i] for i in dict.fromkeys(official)]))
    opts = NuggetsOptions(model=f"hf:{tiny_gpt2.path}", n_anchors=4)
    with_kmeans = score_nuggets(rows, RunContext(options=opts, random_state=7, progress=False), opts)
    given = NuggetsOptions(model=f"hf:{tiny_gpt2.path}", anchors_path=str(tmp_path / "anchors.json"))
    with_file = score_nuggets(rows, RunContext(options=given, progress=False), given)
    assert [r["nuggets"] for r in with_kmeans] == [r["nuggets"] for r in with_file]


# ----- embedding texts and encoders as the official code embedded -----------------------------------


def test_text_templates_render_the_official_strings():
    from instructkit.selection.common import row_texts

    rows = [
        {"instruction": "Add 2 and 3.", "input": "", "output": "5"},
        {"instruction": "Translate.", "input": "Hallo", "output": "Hello"},
        {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"},
                           {"from": "human", "value": "Bye"}, {"from": "gpt", "value": "Bye!"}]},
    ]
    # CaR Clustering/cluster.py: "Instruction: " + instruction + ' Input: ' + input + ' Response: ' + output
    car = ["Instruction: " + r["instruction"] + " Input: " + r["input"] + " Response: " + r["output"] for r in rows[:2]]
    assert row_texts(rows[:2], template="car_iqs") == car
    # DEITA embed_datasets.py: FastChat vicuna_v1.1 get_prompt (ADD_COLON_TWO, sep " ", sep2 "</s>")
    system = (
        "A chat between a curious user and an artificial intelligence assistant. "
        "The assistant gives helpful, detailed, and polite answers to the user's questions."
    )
    seps, prompt = [" ", "</s>"], system + " "
    for i, (role, msg) in enumerate([("USER", "Hi"), ("ASSISTANT", "Hello!"), ("USER", "Bye"), ("ASSISTANT", "Bye!")]):
        prompt += role + ": " + msg + seps[i % 2]
    assert row_texts(rows[2:], template="vicuna_v1.1") == [prompt]
    assert row_texts(rows[:1], template="{{ instruction }} => {{ output }}") == ["Add 2 and 3. => 5"]
    with pytest.raises(ValueError, match="row 0: text_template .*'score' is undefined"):
        row_texts(rows[:1], template="{{ score }}")


def test_car_official_preset_clusters_the_iqs_string(tmp_path):
    from instructkit.selection.car import car_select
    from instructkit.selection.embed import embed_texts

    from instructkit.run.runner import RunContext

    rows = [
        {"instruction": f"Task {i}: {w}", "input": "x" * (i % 3), "output": f"answer {i * 7 % 11}", "score": (i * 37) % 23}
        for i, w in enumerate("sort reverse count split join strip upper lower title swap fold wrap".split() * 3)
    ]
    info = get("select", "car")
    opts = info.make_options({"preset": "official", "n1": "5"})
    out = info.func(rows, RunContext(options=opts, work_dir=tmp_path))
    strings = ["Instruction: " + r["instruction"] + " Input: " + r["input"] + " Response: " + r["output"] for r in rows]
    want, labels = car_select(embed_texts(strings, "local"), np.array([r["score"] for r in rows], float), 5, 1,
                              n_init=10, legacy_sklearn=True)
    assert [r["_select_index"] for r in out] == want.tolist()
    assert [r["car_cluster"] for r in out] == labels[want].tolist()


def _cls_states(folder, texts, max_length):
    """MoDS `run.py` restated: BERT tokenizer over all texts (padding, truncation at max_length), the
    last hidden state at position 0, unnormalised."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModel.from_pretrained(str(folder)).eval()
    enc = tok(texts, return_tensors="pt", truncation=True, padding=True, max_length=max_length)
    with torch.no_grad():
        return model(**enc).last_hidden_state[:, 0, :].numpy()


def test_mods_official_preset_is_bert_cls_of_the_instruction(tmp_path):
    from instructkit.models.embeddings import embedder
    from instructkit.models.local_files import minilm_path
    from instructkit.run.runner import RunContext

    folder = minilm_path()  # a BERT encoder: the same code path as bert-base-uncased
    long = "word " * 150  # beyond 96 tokens: the cut matters
    texts = [f"Explain topic {i} briefly." + (long if i % 4 == 0 else "") for i in range(24)]
    ref = _cls_states(folder, texts, 96)
    got = embedder(f"hf:{folder}:cls", max_length=96, cache=False).embed(texts)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4)  # fp32, batches padded differently
    assert abs(np.linalg.norm(got, axis=1) - 1).max() > 0.1  # not normalised
    rows = [{"instruction": t, "input": "ignored", "output": "ignored", "reward": 1.0} for t in texts]
    info = get("select", "mods")
    opts = info.make_options({"preset": "official", "encoder": f"hf:{folder}", "n_seeds": "8", "first_index": "3"})
    out = info.func(rows, RunContext(options=opts, work_dir=tmp_path))
    assert [r["_select_index"] for r in out] == official_kcenter(ref.astype(np.float32), 8, 3)


def test_deita_official_preset_embeds_the_vicuna_conversation_last_token(tiny_gpt2, tmp_path, capsys):
    import torch
    from instructkit.selection.common import row_texts
    from instructkit.selection.deita import deita_select

    from instructkit.run.runner import RunContext

    rows = [
        {"conversations": [{"from": "human", "value": f"Question {i}?" + " more" * (i * 20)},
                           {"from": "gpt", "value": f"Answer {i}."}], "deita_score": float(i % 4)}
        for i in range(6)
    ]
    texts = row_texts(rows, template="vicuna_v1.1")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # DEITA's Embedder: torch_dtype bfloat16 (embed_datasets.py passes bfloat16=True), use_fast=False
    tok = AutoTokenizer.from_pretrained(str(tiny_gpt2.path), use_fast=False)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_gpt2.path), dtype=torch.bfloat16).eval()
    ref = []
    for t in texts:  # embed_datasets.py: tokenizer(max_length=..., truncation=True), last non-pad state
        ids = tok(t, max_length=64, truncation=True, return_tensors="pt").input_ids
        with torch.no_grad():
            ref.append(model.base_model(input_ids=ids).last_hidden_state[0, -1].float().numpy())
    assert max(len(tok(t).input_ids) for t in texts) > 64  # the cut matters (the preset's 2048 > tiny GPT-2's 1024)
    info = get("select", "deita")
    opts = info.make_options(
        {"preset": "official", "encoder": f"causal:hf:{tiny_gpt2.path}", "encoder_max_length": "64", "budget": "4",
         "tau": "0.999"}
    )
    out = info.func(rows, RunContext(options=opts, work_dir=tmp_path))
    want = deita_select(np.stack(ref), np.array([r["deita_score"] for r in rows]), 4, 0.999)
    assert [r["_select_index"] for r in out] == want.tolist()
    from pathlib import Path

    from instructkit.models import local

    # the preset embedded with the bf16 weights and the slow tokenizer, as DEITA's Embedder loads them
    assert (str(Path(tiny_gpt2.path).resolve()), "bfloat16", "cpu", "slow") in local._BACKENDS
    assert "warning" not in capsys.readouterr().err
    # tau with another embedder than the one it was tuned on: said once, on stderr
    plain = info.make_options({"budget": "2", "encoder": f"causal:hf:{tiny_gpt2.path}:mean"})
    info.func(rows, RunContext(options=plain, work_dir=tmp_path))
    err = capsys.readouterr().err
    assert err.count("[deita] warning: tau=0.9 was tuned on") == 1


def test_cli_embed_takes_the_text_template(tmp_path):
    import json

    from instructkit.selection.embed import embed_texts

    from instructkit.cli import main

    rows = [{"instruction": f"Do task {i}.", "input": "x" if i % 2 else "", "output": f"done {i}"} for i in range(5)]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "e.npy"
    assert main(["embed", str(tmp_path / "rows.jsonl"), "--out", str(out), "--text-template", "car_iqs", "--no-cache"]) == 0
    strings = [f"Instruction: {r['instruction']} Input: {r['input']} Response: {r['output']}" for r in rows]
    np.testing.assert_allclose(np.load(out), embed_texts(strings, "local"), atol=1e-5)  # same model, other batches
