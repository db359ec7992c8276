"""InstructionGPT-4: CLIP score as `full_score.py`, the selector learning labels, the `eval_clus.py` cut,
and the method from the CLI and a pipeline on real PNG files and a tiny random CLIP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from instructkit.selection.instructiongpt4 import (
    clip_features,
    length_score,
    quota_select,
    train_selector,
)

from instructkit.numerics import fp32_tolerance
from instructkit.registry import get
from instructkit.run.runner import RunContext

pytest.importorskip("PIL")


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random CLIP folder (transformers): the MiniLM tokenizer, 32x32 images, 16-d projections."""
    import torch
    from transformers import AutoTokenizer, CLIPConfig, CLIPImageProcessor, CLIPModel

    from instructkit.models.local_files import minilm_path

    path = tmp_path_factory.mktemp("clip")
    tok = AutoTokenizer.from_pretrained(str(minilm_path()))
    torch.manual_seed(0)
    text = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                max_position_embeddings=64, eos_token_id=tok.sep_token_id, bos_token_id=tok.cls_token_id,
                pad_token_id=tok.pad_token_id)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32,
                  patch_size=8)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(str(path))
    tok.save_pretrained(str(path))
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(str(path))
    return path


def pngs(folder: Path, n: int, seed: int = 0) -> list[str]:
    """n small RGB PNGs of different sizes (real files, decoded by PIL)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = folder / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (24 + i % 5 * 4, 40 - i % 3 * 4, 3), dtype=np.uint8)).save(p)
        out.append(str(p))
    return out


def test_clip_score_is_full_score_py_formula(tiny_clip, tmp_path):
    """100 * <unit image feature, mean of the unit features of text.split('.')[:10]>, each piece alone."""
    import torch
    from PIL import Image
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

    texts = ["A cat. A dog on a mat.", "red", ". ".join(f"piece {i}" for i in range(14)), "ends with a stop."]
    images = pngs(tmp_path, len(texts))
    got, feats = clip_features(images, texts, str(tiny_clip), batch_size=3)

    model = CLIPModel.from_pretrained(str(tiny_clip)).eval()
    tok = AutoTokenizer.from_pretrained(str(tiny_clip))
    proc = AutoImageProcessor.from_pretrained(str(tiny_clip), backend="pil")
    want = []
    with torch.no_grad():
        for path, text in zip(images, texts):
            img = model.get_image_features(**proc(images=Image.open(path).convert("RGB"), return_tensors="pt"))
            img = getattr(img, "pooler_output", img)[0]
            pieces = []
            for piece in text.split(".")[:10]:  # first ten pieces, empty ones included
                t = model.get_text_features(**tok(piece, return_tensors="pt"))
                t = getattr(t, "pooler_output", t)[0]
                pieces.append(t / t.norm())
            want.append(float(100 * (img / img.norm()) @ torch.stack(pieces).mean(0)))
            assert np.allclose(feats[len(want) - 1], img.numpy(), atol=1e-5)
    cfg = model.config
    tol = fp32_tolerance(cfg.text_config.intermediate_size + cfg.text_config.max_position_embeddings, 100.0)
    np.testing.assert_allclose(got, want, rtol=0, atol=tol)
    # the ten-piece cut and the empty piece both change the score
    assert abs(got[2] - got[3]) > 10 * tol


def test_length_score_is_full_score_py_times_ten():
    assert length_score("x" * 1009) == pytest.approx(100.0)
    assert length_score("abc") == pytest.approx(10 * (10 * 3 / 1009))


def ref_eval_clus(scores, clusters, k, quota):
    """`selector/eval_clus.py` restated: clusters in order of first appearance (a dict of lists), each
    sorted by int(score) descending (stable), quota max(1, int(quota * size / N)), then all sorted again by
    int(score) descending (stable), the first k."""
    groups: dict[int, list[int]] = {}
    for i, lab in enumerate(clusters):
        groups.setdefault(int(lab), []).append(i)
    selected = []
    for members in groups.values():
        ranked = sorted(members, key=lambda i: int(scores[i]), reverse=True)
        num = int(quota * len(members) / len(scores))
        selected += ranked[: num if num else 1]
    return sorted(selected, key=lambda i: int(scores[i]), reverse=True)[:k]


@pytest.mark.parametrize("seed", [0, 1])
def test_quota_select_is_eval_clus_with_its_constants(seed):
    rng = np.random.default_rng(seed)
    n = 3439
    scores = rng.normal(30, 2, n)  # int() makes ties everywhere
    clusters = rng.permutation(np.repeat(np.arange(10), [700, 600, 500, 450, 400, 350, 250, 150, 34, 5][:10]))
    got = quota_select(scores, clusters, k=200, quota=204, truncate=True)
    assert got.tolist() == ref_eval_clus(scores, clusters, 200, 204)
    # the 5-row cluster: int(204 * 5 / 3439) = 0, still gives its best row to the pool
    small = np.flatnonzero(clusters == 9)
    pool = quota_select(scores, clusters, k=n, quota=204, truncate=True)
    assert len(set(pool.tolist()) & set(small.tolist())) == 1
    # without truncation, ties cannot happen here and the order is by exact score
    exact = quota_select(scores, np.zeros(n, dtype=int), k=200, quota=204)
    assert exact.tolist() == np.argsort(-scores, kind="stable")[:200].tolist()


def synthetic(n: int, seed: int = 0) -> tuple[list[dict], np.ndarray]:
    """Rows whose GPT score carries a hidden quality q; reward and CLIP are noise."""
    rng = np.random.default_rng(seed)
    q = rng.normal(size=n)
    rows = [
        {"instruction": "Describe this image in detail.", "output": "w " * int(rng.integers(5, 60)),
         "gpt_score": float(60 + 10 * q[i]), "reward": float(rng.normal()), "clip_score": float(rng.normal(25, 2))}
        for i in range(n)
    ]
    return rows, q


@pytest.mark.parametrize("selector", ["mlp", "attention"])
def test_selector_learns_row_labels(selector, tmp_path):
    rows, q = synthetic(200)
    for i in range(100):
        rows[i]["label"] = float(q[i])  # half the pool labelled
    np.save(tmp_path / "emb.npy", np.random.default_rng(1).normal(size=(200, 8)).astype(np.float32))
    info = get("select", "instructiongpt4")
    opts = info.make_options({"embeddings": str(tmp_path / "emb.npy"), "k": "20", "n_clusters": "1",
                              "selector": selector, "random_state": "3"})
    out = info.func(rows, RunContext(options=opts, work_dir=tmp_path))
    picked = [r["_select_index"] for r in out]
    best = set(np.argsort(-q)[:20].tolist())
    assert len(picked) == 20 and len(best & set(picked)) >= 14  # random picks share about 2
    assert [r["instructiongpt4_score"] for r in out] == sorted((r["instructiongpt4_score"] for r in out), reverse=True)


def test_selector_learns_from_subset_means():
    """The paper's labels: one number per subset, the mean over its rows of the selector's row scores."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(480, 4)).astype(np.float32)
    w = np.array([1.0, -0.5, 0.0, 0.25])
    sets = [rng.choice(480, 16, replace=False) for _ in range(60)]
    labels = np.array([(x[s] @ w).mean() for s in sets])
    for kind in ("mlp", "attention"):
        model = train_selector(x, sets, labels, kind, epochs=60, lr=0.01, random_state=0)
        import torch

        with torch.no_grad():
            pred = model(torch.from_numpy(x)[:, None, :]).squeeze(1).numpy()
        assert np.corrcoef(pred, x @ w)[0, 1] > 0.95, kind


def test_bad_image_path_is_named_before_clip_loads(tmp_path):
    rows, _ = synthetic(4)
    for i, r in enumerate(rows):
        r.update(label=float(i), image=str(tmp_path / f"missing{i}.png"))
    info = get("select", "instructiongpt4")
    opts = info.make_options({"clip_model": str(tmp_path / "no-such-clip"), "k": "2"})
    with pytest.raises(ValueError, match=r"row 0: 'image'"):
        info.func(rows, RunContext(options=opts, work_dir=tmp_path))


def test_cli_and_pipeline_on_png_rows(tiny_clip, tmp_path):
    rows, q = synthetic(24)
    for i, (r, path) in enumerate(zip(rows, pngs(tmp_path / "img", 24))):
        r["image"] = path
        del r["clip_score"]
        if i % 2 == 0:
            r["label"] = float(q[i])
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "sel.jsonl"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    args = ["-o", "clip_model", str(tiny_clip), "-o", "k", "6", "-o", "n_clusters", "2", "-o", "selector", "mlp"]
    run = subprocess.run([sys.executable, "-m", "instructkit.cli", "select", "instructiongpt4", str(data), "--out",
                          str(out), *args], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(got) == 6 and all("clip_score" in r and "instructiongpt4_cluster" in r for r in got)

    from instructkit.run.pipeline import Pipeline

    yaml = tmp_path / "p.yaml"
    yaml.write_text(f"""
name: igpt4
out: {tmp_path / "out"}
steps:
  - name: picked
    select: instructiongpt4
    input: {data}
    options: {{clip_model: {tiny_clip}, k: 6, n_clusters: 2, selector: mlp}}
""")
    result = Pipeline.from_yaml(yaml).run(progress=False)
    assert result["steps"][-1]["rows_out"] == 6
    piped = [json.loads(line) for line in (tmp_path / "out" / "selected.jsonl").read_text().splitlines()]
    assert [r["_select_index"] for r in piped] == [r["_select_index"] for r in got]  # same seed, same picks


def ref_average_py(labels, size):
    """`cluster/kmeans++/average.py` restated on a dict of lists keyed by cluster, in first-appearance order."""
    data: dict[int, list[int]] = {}
    for i, lab in enumerate(labels):
        data.setdefault(int(lab), []).append(i)
    counts = {k: len(v) for k, v in data.items()}
    for folder in data:
        if counts[folder] > size:
            for target in data:
                if counts[target] < size:
                    move = min(size - counts[target], counts[folder] - size)
                    if move > 0:
                        data[target].extend(data[folder][:move])
                        data[folder] = data[folder][move:]
                        counts[folder] -= move
                        counts[target] += move
                    if counts[folder] <= size:
                        break
    return [v[:size] for v in data.values()]


def test_balanced_subsets_are_average_py():
    from instructkit.selection.instructiongpt4 import balanced_subsets

    rng = np.random.default_rng(0)
    labels = rng.choice(30, 3439, p=rng.dirichlet(np.ones(30) * 0.7))  # uneven clusters, as K-means gives
    got = balanced_subsets(labels, 114)
    assert [s.tolist() for s in got] == ref_average_py(labels, 114)
    assert max(len(s) for s in got) == 114 and sum(len(s) for s in got) <= 3420


def test_loop_labels_train_each_subset_and_measure_heldout_loss(tiny_llama, tmp_path):
    pytest.importorskip("trl")
    from instructkit.selection.instructiongpt4 import label_subsets

    from instructkit.training import heldout_loss

    rows, _ = synthetic(12)
    held = tmp_path / "held.jsonl"
    held.write_text("".join(json.dumps({"instruction": "Describe this image in detail.", "output": f"A picture {i}."})
                            + "\n" for i in range(3)))
    emb = np.random.default_rng(2).normal(size=(12, 8)).astype(np.float32)
    np.save(tmp_path / "emb.npy", emb)
    info = get("select", "instructiongpt4")
    opts = info.make_options({"labels": "loop", "eval_data": str(held), "base": f"hf:{tiny_llama}", "n_subsets": "3",
                              "subset_size": "4", "train": '{"max_steps": 1, "batch_size": 2, "lr": 0.01}',
                              "embeddings": str(tmp_path / "emb.npy"), "k": "4", "n_clusters": "1",
                              "selector": "mlp", "epochs": "5", "random_state": "0"})
    out = info.func(rows, RunContext(options=opts, work_dir=tmp_path))
    assert len(out) == 4
    folder = next((tmp_path / "instructiongpt4").iterdir())
    saved = [json.loads((folder / f"subset_{j}" / "heldout.json").read_text()) for j in range(3)]
    assert [s["rows"] for s in saved] == [s.tolist() for s in label_subsets(emb, 3, 4, 0)]  # the text vectors
    again = heldout_loss(folder / "subset_1" / "model", str(held)).loss
    assert again == pytest.approx(saved[1]["loss"], rel=1e-6)  # the label is that model's held-out loss
    assert len({round(s["loss"], 6) for s in saved}) == 3  # each subset trained its own model


def test_loop_needs_eval_data_before_any_work(tmp_path):
    info = get("select", "instructiongpt4")
    with pytest.raises(ValueError, match="eval_data"):
        info.func(synthetic(4)[0], RunContext(options=info.make_options({"labels": "loop"}), work_dir=tmp_path))
