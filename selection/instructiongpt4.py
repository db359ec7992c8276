"""InstructionGPT-4 (Wei et al. 2023, "InstructionGPT-4: A 200-Instruction Paradigm for Fine-Tuning MiniGPT-4", 2308.12067).

Indicators per (image, instruction, answer) row -- CLIP score, answer (and optionally instruction)
length, reward score, GPT score, and the image and text embeddings each reduced by PCA -- feed a
trainable selector (the paper's self-attention network, or a per-row MLP) fit to quality labels; the
pool is scored, spectrally clustered on the image features, and each cluster gives its quota of best
rows (`selector/eval_clus.py`). Constants and the official code: docs/methods.md.
Deviations: CLIP runs through transformers' `CLIPModel` (any folder; open_clip's ViT-bigG-14 upstream);
labels come from the user (a `label` column per row, or per subset with `group`) or from our loop
(`labels=loop`: the paper's K-means++ subsets, each fine-tuned with `instructkit.training` and labelled by
minus its held-out answer loss, where the paper fine-tuned MiniGPT-4 and averaged four benchmarks); the attention is over the
rows of a subset (upstream's modules lack `batch_first`, so training attends across subsets); one PCA is
fit on the pool (upstream fits one per training subset); inputs and labels are standardised unless
`standardize=false` (the official preset); NaN indicators get the pool's mean, counted in the summary.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from instructkit.registry import method

from .common import EmbeddingOptions, as_indices, score_column, seed_of, state_dir, take, trained_model
from .embed import load_embeddings

INDICATORS = ("clip", "reward", "length", "instruction_length", "gpt")
MAX_CAPTION_CHARS = 1009  # MiniGPT-4's longest caption (`full_score.py`): length score = 10 * len / 1009
CLIP_PIECES = 10  # `text.split('.')[:10]`: the caption's first ten "."-separated pieces


# ----- indicators -----------------------------------------------------------------------------


def clip_features(
    images: Sequence[str], texts: Sequence[str], model_path: str, device: str = "cpu", batch_size: int = 16
) -> tuple[np.ndarray, np.ndarray]:
    """(CLIP score [N], raw image features [N, d]) as `full_score.py`: 100 * <unit image feature, mean of
    the unit text features of the text's first ten "."-pieces> (the mean is not re-normalised)."""
    import importlib.util

    import torch
    from PIL import Image
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

    from instructkit.models.local_files import set_offline

    set_offline()
    model = CLIPModel.from_pretrained(model_path).to(device).eval()
    tok = AutoTokenizer.from_pretrained(model_path)
    # without torchvision, ask for PIL's processor by name (transformers otherwise warns it falls back to it)
    proc = AutoImageProcessor.from_pretrained(
        model_path, **({} if importlib.util.find_spec("torchvision") else {"backend": "pil"})
    )
    max_len = model.config.text_config.max_position_embeddings
    scores = np.zeros(len(images), dtype=np.float64)
    feats: list[np.ndarray] = []
    with torch.inference_mode():
        for lo in range(0, len(images), batch_size):
            hi = min(len(images), lo + batch_size)
            pics = []
            for path in images[lo:hi]:
                with Image.open(path) as im:
                    pics.append(im.convert("RGB"))
            img = _features(model.get_image_features(**proc(images=pics, return_tensors="pt").to(device)))
            pieces = [str(t).split(".")[:CLIP_PIECES] for t in texts[lo:hi]]
            flat = [p for ps in pieces for p in ps]
            enc = tok(flat, padding=True, truncation=True, max_length=max_len, return_tensors="pt").to(device)
            txt = _features(model.get_text_features(**enc))
            txt = txt / txt.norm(p=2, dim=-1, keepdim=True)
            unit = img / img.norm(p=2, dim=-1, keepdim=True)
            start = 0
            for j, ps in enumerate(pieces):
                mean_text = txt[start : start + len(ps)].mean(dim=0)
                scores[lo + j] = float(100.0 * (unit[j] @ mean_text))
                start += len(ps)
            feats.append(img.float().cpu().numpy())
    return scores, np.concatenate(feats).astype(np.float32)


def _features(out: Any) -> Any:
    """A projected feature tensor from `get_*_features` (a tensor, or an output with `pooler_output`)."""
    return out if hasattr(out, "norm") else out.pooler_output


def length_score(text: str) -> float:
    """`full_score.py`'s caption length score, 10 * len / 1009, times the 10 `train.py` applies."""
    return 100.0 * len(text) / MAX_CAPTION_CHARS


def indicator_matrix(
    records: list[dict], indicators: Sequence[str], clip: np.ndarray | None, reward: str, gpt: str
) -> tuple[np.ndarray, dict[str, int]]:
    """[N, len(indicators)] in the selector's scale (reward x10, lengths 100 * len / 1009) and, per
    indicator, how many rows lacked it (those get the pool's mean)."""
    cols, missing = [], {}
    for name in indicators:
        if name == "clip":
            if clip is None:
                raise ValueError("indicator clip needs -o clip_model (a CLIP folder) or a clip_score column")
            col = np.asarray(clip, dtype=np.float64)
        elif name == "reward":
            col = 10.0 * score_column(records, reward)
        elif name == "gpt":
            col = score_column(records, gpt)
        elif name == "length":
            col = np.array([length_score(str(r.get("output") or "")) for r in records])
        elif name == "instruction_length":
            col = np.array([length_score(str(r.get("instruction") or "")) for r in records])
        else:
            raise ValueError(f"unknown indicator {name!r}; known: {', '.join(INDICATORS)}")
        bad = np.isnan(col)
        missing[name] = int(bad.sum())
        if bad.any():
            col = np.where(bad, np.nanmean(col), col)
        cols.append(col)
    return np.stack(cols, axis=1) if cols else np.zeros((len(records), 0)), missing


def reduce_dims(x: np.ndarray, n_components: int, random_state: int | None) -> np.ndarray:
    """PCA to n_components (the official 6), fit on the whole pool."""
    from sklearn.decomposition import PCA

    x = np.asarray(x, dtype=np.float64)
    n = min(int(n_components), x.shape[0], x.shape[1])
    if n <= 0:
        return np.zeros((len(x), 0))
    return PCA(n_components=n, random_state=random_state).fit_transform(x)


# ----- the selector ---------------------------------------------------------------------------


def build_selector(kind: str, d: int, heads: int = 4, layers: int = 2, hidden: int = 32) -> Any:
    """The paper's attention selector (`selector/model/models.py`: per layer x = x + MHA(x, x, x), then a
    d x d linear when there is more than one layer; a final linear to one score) over the rows of a set,
    or a per-row MLP. Both map [B, L, d] (+ padding mask) to per-row scores [B, L]."""
    import torch
    from torch import nn

    width = -(-d // heads) * heads  # inputs zero-padded to a multiple of the heads (upstream: 16 = 4 x 4)

    class Attention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attns = nn.ModuleList(nn.MultiheadAttention(width, heads, batch_first=True) for _ in range(layers))
            self.linears = nn.ModuleList(nn.Linear(width, width) for _ in range(layers))
            self.out = nn.Linear(width, 1)

        def forward(self, x: torch.Tensor, pad: torch.Tensor | None = None) -> torch.Tensor:
            x = nn.functional.pad(x, (0, width - d))
            for attn, lin in zip(self.attns, self.linears):
                x = x + attn(x, x, x, key_padding_mask=pad, need_weights=False)[0]
                x = lin(x) if layers > 1 else x
            return self.out(x).squeeze(-1)

    class MLP(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, 1))

        def forward(self, x: torch.Tensor, pad: torch.Tensor | None = None) -> torch.Tensor:
            return self.net(x).squeeze(-1)

    if kind == "attention":
        return Attention()
    if kind == "mlp":
        return MLP()
    raise ValueError(f"selector must be attention or mlp, not {kind!r}")


def _padded(x: np.ndarray, sets: Sequence[np.ndarray]) -> tuple[Any, Any]:
    """[S, L, d] rows of each set (zero padded) and the padding mask [S, L] (True = padding)."""
    import torch

    width = max(len(s) for s in sets)
    out = np.zeros((len(sets), width, x.shape[1]), dtype=np.float32)
    pad = np.ones((len(sets), width), dtype=bool)
    for i, s in enumerate(sets):
        out[i, : len(s)] = x[s]
        pad[i, : len(s)] = False
    return torch.from_numpy(out), torch.from_numpy(pad)


def set_means(model: Any, x: Any, pad: Any) -> Any:
    """The prediction for each set: the mean of its rows' scores (`train.py`: mean over the subset)."""
    scores = model(x, pad).masked_fill(pad, 0.0)
    return scores.sum(dim=1) / (~pad).sum(dim=1)


def train_selector(
    x: np.ndarray,
    sets: Sequence[np.ndarray],
    labels: np.ndarray,
    kind: str = "attention",
    epochs: int = 20,
    lr: float = 0.01,
    batch_size: int = 30,
    heads: int = 4,
    layers: int = 2,
    hidden: int = 32,
    random_state: int | None = 42,
) -> Any:
    """Fit the selector so that each set's mean row score matches its label (MSE, Adam: `train.py`),
    shuffled batches of sets from a generator seeded by random_state. Returns the model (eval mode)."""
    import torch

    if len(sets) != len(labels) or not len(sets):
        raise ValueError(f"{len(sets)} labelled sets and {len(labels)} labels: need one label per set, at least one")
    torch.manual_seed(int(random_state or 0))
    gen = torch.Generator().manual_seed(int(random_state or 0))
    model = build_selector(kind, x.shape[1], heads, layers, hidden)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    y = torch.as_tensor(np.asarray(labels, dtype=np.float32))
    model.train()
    for _ in range(int(epochs)):
        order = torch.randperm(len(sets), generator=gen).tolist()
        for lo in range(0, len(order), max(1, int(batch_size))):
            batch = order[lo : lo + max(1, int(batch_size))]
            xb, pad = _padded(x, [sets[i] for i in batch])
            loss = torch.nn.functional.mse_loss(set_means(model, xb, pad), y[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def score_rows(model: Any, x: np.ndarray, per_row: bool) -> np.ndarray:
    """Each row's score: alone (per_row) or with the whole pool as one set (`eval_clus.py`)."""
    import torch

    with torch.inference_mode():
        if per_row:
            xb = torch.from_numpy(np.asarray(x, dtype=np.float32))[:, None, :]
            return model(xb).squeeze(1).double().numpy()
        return model(torch.from_numpy(np.asarray(x, dtype=np.float32))[None]).squeeze(0).double().numpy()


# ----- the final cut --------------------------------------------------------------------------


def diversity_clusters(x: np.ndarray, n_clusters: int, random_state: int | None = 0) -> np.ndarray:
    """`SpectralClustering(n, affinity="nearest_neighbors", random_state)` labels (all 0 when n <= 1)."""
    if n_clusters <= 1 or len(x) <= n_clusters:
        return np.zeros(len(x), dtype=np.int64)
    from sklearn.cluster import SpectralClustering

    sc = SpectralClustering(
        n_clusters=n_clusters, affinity="nearest_neighbors", n_neighbors=min(10, len(x) - 1), random_state=random_state
    )
    return sc.fit_predict(np.asarray(x, dtype=np.float64)).astype(np.int64)


def quota_select(
    scores: np.ndarray, clusters: np.ndarray, k: int = 200, quota: int | None = None, truncate: bool = False
) -> np.ndarray:
    """`eval_clus.py`'s cut: clusters visited in order of first appearance, each giving its best
    max(1, int(quota * size / N)) rows (stable: ties keep data order), then all of those sorted again
    (stable) and the first k kept. quota None: k + the number of clusters, which always yields k rows
    (each cluster's int() loses less than one; upstream's 204 for 200 can fall short). truncate: int(score)."""
    s = np.asarray(scores, dtype=np.float64)
    key = -(np.trunc(s) if truncate else s)
    labels = np.asarray(clusters)
    _, first = np.unique(labels, return_index=True)
    quota = k + len(first) if quota is None else int(quota)
    picked: list[int] = []
    for lab in labels[np.sort(first)]:
        members = np.flatnonzero(labels == lab)
        best = members[np.argsort(key[members], kind="stable")]
        picked.extend(best[: max(1, int(quota * len(members) / len(s)))].tolist())
    pool = as_indices(picked)
    return pool[np.argsort(key[pool], kind="stable")][: max(0, int(k))]


# ----- labels from the train / evaluate loop --------------------------------------------------


def balanced_subsets(labels: np.ndarray, size: int) -> list[np.ndarray]:
    """`cluster/kmeans++/average.py`: clusters (in order of first appearance, rows in data order) larger
    than `size` hand their first rows to smaller clusters, visited in the same order, until they fit;
    anything still over is cut. Returns each subset's rows."""
    labels = np.asarray(labels)
    _, first = np.unique(labels, return_index=True)
    groups = [np.flatnonzero(labels == lab).tolist() for lab in labels[np.sort(first)]]
    for g in groups:
        if len(g) <= size:
            continue
        for t in groups:
            if len(t) < size:
                move = min(size - len(t), len(g) - size)
                if move > 0:
                    t.extend(g[:move])
                    del g[:move]
                if len(g) <= size:
                    break
    return [np.asarray(g[:size], dtype=np.int64) for g in groups]


def label_subsets(x: np.ndarray, n_subsets: int = 30, size: int | None = None, random_state: int | None = 0
                  ) -> list[np.ndarray]:
    """`kmeans_pp.py` + `average.py`: KMeans(n_subsets, k-means++, n_init 10) on the features, then
    subsets of `size` rows (default N // n_subsets: 114 of 3,439 for 30)."""
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=min(n_subsets, len(x)), init="k-means++", n_init=10, random_state=random_state)
    labels = km.fit_predict(np.asarray(x, dtype=np.float64))
    return [s for s in balanced_subsets(labels, size or len(x) // n_subsets) if len(s)]


def loop_labels(records: list[dict], sets: list[np.ndarray], o: InstructionGPT4Options, folder: Path,
                train_options: Any, eval_rows: list[dict], progress: bool = True) -> np.ndarray:
    """Each subset's label: minus the held-out answer loss (`training.heldout_loss` on `eval_rows`) of the
    base fine-tuned on that subset alone (the paper: one MiniGPT-4 per subset, its benchmark mean). Each
    subset's model and loss are kept in `folder/subset_J`, so a rerun resumes."""
    from instructkit.training import heldout_loss

    out = []
    for j, rows in enumerate(sets):
        done = folder / f"subset_{j}" / "heldout.json"
        if done.is_file():
            loss = json.loads(done.read_text())["loss"]
        else:
            model, _ = trained_model([records[i] for i in rows], o.base, done.parent, train_options)
            loss = heldout_loss(model, eval_rows).loss
            done.write_text(json.dumps({"loss": loss, "rows": rows.tolist()}))
        out.append(-float(loss))
        if progress:
            print(f"[instructiongpt4] subset {j + 1}/{len(sets)}: {len(rows)} rows, held-out loss {loss:.4f}",
                  file=sys.stderr)
    return np.asarray(out)


# ----- the method -----------------------------------------------------------------------------


@dataclass
class InstructionGPT4Options(EmbeddingOptions):
    k: int = 200
    labels: str = "column"  # column: the `label` column; loop: train on each subset, label = -held-out loss
    label: str = "label"  # quality label column (per row, or per subset with `group`)
    group: str | None = None  # column naming each labelled row's subset; its label is the subset's
    n_subsets: int = 30  # loop: K-means++ subsets (upstream 30)
    subset_size: int | None = None  # loop: rows per subset; None: N // n_subsets (upstream 114)
    base: str = "local"  # loop: the model fine-tuned on each subset
    eval_data: str | None = None  # loop: held-out rows (a records file) for the held-out loss
    train: dict[str, Any] = field(default_factory=dict)  # loop: instructkit.training.TrainOptions fields
    clip_model: str | None = None  # CLIP folder (transformers); None: read the `clip_score` column
    clip_column: str = "clip_score"
    image_field: str = "image"
    reward: str = "reward"  # column of `score reward` (the OpenAssistant DeBERTa upstream)
    gpt: str = "gpt_score"  # column of a 0-100 judge score (GPT-4 upstream)
    indicators: list[str] = field(default_factory=lambda: ["clip", "reward", "length", "gpt"])
    pca_components: int = 6
    selector: str = "attention"  # attention (the paper) or mlp
    heads: int = 4
    layers: int = 2
    hidden: int = 32  # MLP width
    epochs: int = 20
    lr: float = 0.01
    batch_size: int = 30
    standardize: bool = True  # z-score inputs and labels (upstream: raw values)
    score_sets: str = "auto"  # pool (the whole pool as one set, upstream) | row | auto (pool when grouped)
    n_clusters: int = 10  # spectral clusters for the quota (0 or 1: none)
    quota: int | None = None  # quota numerator; None: k + the number of clusters (upstream 204 for 200)
    truncate_scores: bool = False  # compare int(score) as upstream
    order: str = "score"  # score (best first) | index (upstream writes image-id order)
    fields: list[str] = field(default_factory=lambda: ["output"])  # the caption is the embedded text
    device: str = "cpu"
    random_state: int | None = None  # the selector's seed; None: the run's
    cluster_seed: int | None = None  # K-means (loop) and spectral clustering; None: random_state (upstream 0)

    # `selector/train.sh` + `eval_clus.sh`: 6 PCA dims, 4 heads, 2 layers, lr 0.01, 20 epochs, seed 42,
    # raw inputs; 10 spectral clusters, quota 204, int() scores, top 200 in image-id order; the text
    # feature is a causal LM's last-token state of the caption (give -o encoder causal:FOLDER)
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "official": {
            "indicators": ["clip", "reward", "length", "gpt"],
            "pca_components": 6,
            "selector": "attention",
            "heads": 4,
            "layers": 2,
            "epochs": 20,
            "lr": 0.01,
            "batch_size": 30,
            "standardize": False,
            "score_sets": "pool",
            "n_clusters": 10,
            "k": 200,
            "quota": 204,
            "truncate_scores": True,
            "order": "index",
            "fields": ["output"],
            "encoder_pooling": "last",
            "random_state": 42,
            "cluster_seed": 0,
        }
    }


def labelled_sets(records: list[dict], label: str, group: str | None) -> tuple[list[np.ndarray], np.ndarray]:
    """(row sets, labels): each labelled row alone, or the labelled rows of each group (in order of first
    appearance) with the group's label, which must be one value."""
    values = score_column(records, label)
    rows = np.flatnonzero(~np.isnan(values))
    if group is None:
        return [np.array([i]) for i in rows], values[rows]
    sets: dict[Any, list[int]] = {}
    for i in rows:
        g = records[i].get(group)
        if g is None:
            raise ValueError(f"row {i}: labelled but has no {group!r}")
        sets.setdefault(str(g), []).append(int(i))
    labels = []
    for name, members in sets.items():
        distinct = set(values[members].tolist())
        if len(distinct) > 1:
            raise ValueError(f"group {name!r}: its rows carry different labels {sorted(distinct)}")
        labels.append(distinct.pop())
    return [np.asarray(m) for m in sets.values()], np.asarray(labels)


def _cluster_seed(ctx: Any, o: InstructionGPT4Options) -> int:
    return int(o.cluster_seed) if o.cluster_seed is not None else seed_of(ctx, o)


def _standardized(x: np.ndarray) -> np.ndarray:
    sd = x.std(axis=0)
    return (x - x.mean(axis=0)) / np.where(sd > 0, sd, 1.0)


def _check_images(records: list[dict], fieldname: str) -> list[str]:
    paths = []
    for i, rec in enumerate(records):
        p = rec.get(fieldname)
        if not p or not Path(str(p)).is_file():
            raise ValueError(f"row {i}: {fieldname!r} is {p!r}, not an image file")
        paths.append(str(p))
    return paths


def instructiongpt4_features(records: list[dict], ctx: Any, o: InstructionGPT4Options) -> dict[str, Any]:
    """The selector's inputs [N, d] (image PCA, text PCA, indicators), the image features (for the
    clusters; None without CLIP), the CLIP scores and the per-indicator missing counts."""
    rs = seed_of(ctx, o)
    clip, image = None, None
    if o.clip_model:
        paths = _check_images(records, o.image_field)  # every path checked before the model loads
        clip, image = clip_features(paths, [str(r.get("output") or "") for r in records], o.clip_model, o.device)
    elif "clip" in o.indicators:
        clip = score_column(records, o.clip_column)
    ind, missing = indicator_matrix(records, o.indicators, clip, o.reward, o.gpt)
    text_raw = np.asarray(load_embeddings(records, ctx, o))
    text = reduce_dims(text_raw, o.pca_components, rs)
    parts = ([reduce_dims(image, o.pca_components, rs)] if image is not None else []) + [text, ind]
    x = np.concatenate(parts, axis=1)
    return {"x": _standardized(x) if o.standardize else x, "image": image, "clip": clip, "missing": missing,
            "cluster_on": image if image is not None else text_raw}


@method("select", "instructiongpt4", options=InstructionGPT4Options, needs_model=False)
def instructiongpt4(records: list[dict], ctx) -> list[dict]:
    """InstructionGPT-4: a selector trained on quality labels scores indicators; best rows per spectral cluster."""
    from instructkit.run.manifest import write_method_summary

    o = ctx.options or InstructionGPT4Options()
    if o.score_sets not in ("auto", "pool", "row") or o.order not in ("score", "index"):
        raise ValueError(f"score_sets must be auto|pool|row and order score|index (got {o.score_sets}, {o.order})")
    if o.labels not in ("column", "loop"):
        raise ValueError(f"labels must be column or loop, not {o.labels!r}")
    if o.labels == "loop":  # everything the loop needs is checked before any model loads
        from instructkit.training import load_rows, make_train_options

        if not o.eval_data:
            raise ValueError("labels=loop needs -o eval_data: held-out rows (a records file) to measure each subset")
        train_options = make_train_options({"seed": seed_of(ctx, o), **(o.train or {})})
        eval_rows = load_rows(o.eval_data)
    else:
        sets, labels = labelled_sets(records, o.label, o.group)
    f = instructiongpt4_features(records, ctx, o)
    if o.labels == "loop":
        sets = label_subsets(f["cluster_on"], o.n_subsets, o.subset_size, _cluster_seed(ctx, o))
        with state_dir(ctx, "instructiongpt4", records, o, seed_of(ctx, o)) as folder:
            labels = loop_labels(records, sets, o, folder, train_options, eval_rows, bool(ctx.progress))
    mean, sd = (labels.mean(), labels.std() or 1.0) if o.standardize else (0.0, 1.0)
    model = train_selector(
        f["x"], sets, (labels - mean) / sd, o.selector, o.epochs, o.lr, o.batch_size, o.heads, o.layers, o.hidden,
        seed_of(ctx, o),
    )
    per_row = o.score_sets == "row" or (o.score_sets == "auto" and o.group is None and o.labels == "column")
    scores = score_rows(model, f["x"], per_row) * sd + mean
    clusters = diversity_clusters(f["image"] if f["image"] is not None else f["x"], o.n_clusters, _cluster_seed(ctx, o))
    idx = quota_select(scores, clusters, o.k, o.quota, o.truncate_scores)
    if o.order == "index":
        idx = np.sort(idx)
    counts = {"rows": len(records), "labelled_sets": len(sets), "selected": len(idx), "features": f["x"].shape[1],
              "missing_indicators": {k: v for k, v in f["missing"].items() if v}}
    if counts["missing_indicators"]:
        print(f"[instructiongpt4] warning: rows without an indicator got the pool's mean: "
              f"{counts['missing_indicators']}", file=sys.stderr)
    write_method_summary(ctx, "select", counts, name="instructiongpt4", options=o)
    extra: dict[str, Any] = {"instructiongpt4_score": scores[idx], "instructiongpt4_cluster": clusters[idx]}
    if f["clip"] is not None and o.clip_model:
        extra["clip_score"] = np.asarray(f["clip"])[idx]
    return take(records, idx, extra)
