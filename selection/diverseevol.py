"""DiverseEvol (Wu et al. 2023, "Self-Evolved Diverse Data Sampling for Efficient Instruction Tuning", 2311.08182).

Start from `init_size` random rows and fine-tune; then each round embed the whole pool with the latest
model (mean of the last hidden states over each row's training text), add `n_query` rows by exact
k-center with the labelled set as the start set, and retrain the base from scratch on all labelled rows.
Constants and the official code: docs/methods.md.
Deviations: training is TRL's SFTTrainer (`instructkit.training`) on the base's chat template, so the
embedded text is that template's rendering of the row (upstream: Stanford Alpaca's prompt + output +
EOS, which is what upstream trains on); the initial draw comes from `random_state` (upstream unseeded
`torch.randperm`); distances follow sklearn's float64 evaluation and are clamped at 0 (upstream: float32
N x N matrix, unclamped square root, which turns duplicates into NaN); the last round's training is
skipped unless `train_last` (it changes no pick); rows come out by round, each round in pick order
(upstream writes index order).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from instructkit.registry import method

from .common import as_indices, check_random_state, seed_of, state_dir, take, trained_model
from .kcenter import kcenter_greedy


def initial_rows(n: int, size: int, random_state: int | None) -> np.ndarray:
    """Round 0: `size` distinct rows drawn with `RandomState(random_state)`, in index order."""
    return np.sort(check_random_state(random_state).choice(n, size=min(int(size), n), replace=False)).astype(np.int64)


def whiten(x: np.ndarray, n_components: int) -> np.ndarray:
    """`utils.compute_kernel_bias` + `transform_and_normalize`: (x - mu) U diag(1/sqrt(s))[:, :n] from the
    SVD of the (unbiased) covariance, rows L2-normalised."""
    x = np.asarray(x, dtype=np.float64)
    mu = x.mean(axis=0, keepdims=True)
    u, s, _ = np.linalg.svd(np.cov(x.T))
    z = (x - mu) @ (u / np.sqrt(s))[:, : int(n_components)]
    return (z / np.linalg.norm(z, axis=1, keepdims=True)).astype(np.float32)


def query(emb: np.ndarray, labelled: np.ndarray, n_query: int, whiten_n_components: int = -1,
          device: str | None = "auto") -> np.ndarray:
    """One round's new rows in pick order: farthest-first (Euclidean) from the labelled set."""
    x = whiten(emb, whiten_n_components) if whiten_n_components > 0 else emb
    return kcenter_greedy(x, n_query, "euclidean", already_selected=labelled, device=device)


def training_texts(records: list[dict], tokenizer: Any) -> list[str]:
    """Each row's text as the trainer sees it: the tokenizer's chat template over the row's conversation
    (`training.chat_of`); a row without an answer is an error naming it."""
    from instructkit.training import chat_of

    out = []
    for i, rec in enumerate(records):
        chat = chat_of(rec)
        if chat is None:
            raise ValueError(f"row {i}: no instruction and answer to train on")
        out.append(tokenizer.apply_chat_template(chat, tokenize=False))
    return out


def embed_pool(model_path: Path, records: list[dict], max_length: int, device: str | None, batch_size: int = 16
               ) -> np.ndarray:
    """Mean of the last hidden states over every token of each row's training text (float32 [N, hidden]),
    read with a backend of its own that is released afterwards (one model per round)."""
    from instructkit.models import LLM

    spec = f"hf:{Path(model_path)}"
    backend = LLM(spec, cache=False).local_scorer(dtype="float32", device=device or _default_device(), shared=False)
    try:
        texts = training_texts(records, backend.tokenizer)
        return backend.hidden_states(texts, "mean", batch_size=batch_size, max_length=max_length)
    finally:
        del backend


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class DiverseEvolOptions:
    base: str = "local"  # the model trained each round: a spec (local, hf:PATH) or a folder / .gguf
    init_size: int = 100
    n_rounds: int = 10
    n_query: int = 100
    max_length: int = 512  # tokens embedded (and trained, unless `train` says otherwise)
    whiten_n_components: int = -1  # > 0: whiten to that many dimensions first (upstream's option; off)
    train: dict[str, Any] = field(default_factory=dict)  # instructkit.training.TrainOptions fields
    train_last: bool = False  # also train after the last round's picks (upstream does; no pick changes)
    order: str = "round"  # round (round 0 by index, then each round's picks in pick order) | index
    device: str | None = None  # None: cuda when available, else cpu
    random_state: int | None = None  # None: the run's seed

    # `configs/config_example_kc_dolly.yml`: 100 + 10 x 100, 512 tokens, 3 epochs, lr 2e-5, cosine,
    # warmup 0.03, 4 x 4 batch, no weight decay (bf16 + FSDP on GPUs there: set -o train's dtype/device)
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "official": {
            "init_size": 100,
            "n_rounds": 10,
            "n_query": 100,
            "max_length": 512,
            "whiten_n_components": -1,
            "train": {"epochs": 3, "lr": 2e-5, "scheduler": "cosine", "warmup": 0.03, "batch_size": 4,
                      "grad_accum": 4, "weight_decay": 0.0, "max_length": 512},
            "train_last": True,
            "order": "index",
        }
    }


def train_options(o: DiverseEvolOptions, seed: int) -> Any:
    """The round's TrainOptions: `max_length` and the seed unless `train` sets them (checked up front)."""
    from instructkit.training import make_train_options

    return make_train_options({"max_length": o.max_length, "seed": seed, **(o.train or {})})


def diverseevol_loop(records: list[dict], o: DiverseEvolOptions, seed: int, folder: Path,
                     progress: bool = True) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """(rows in pick order, their rounds, per-round log). Each round's state (`state.json`: labelled rows
    and rounds) and model are kept in `folder/rd_N`; a finished round is read back, not recomputed."""
    from instructkit.training import chat_of

    topts = train_options(o, seed)
    if o.order not in ("round", "index"):
        raise ValueError(f"order must be round or index, not {o.order!r}")
    bad = [i for i, r in enumerate(records) if chat_of(r) is None]
    if bad:
        raise ValueError(f"row {bad[0]}: no instruction and answer to train on ({len(bad)} such rows)")
    picks = list(initial_rows(len(records), o.init_size, seed))
    rounds = [0] * len(picks)
    log: list[dict] = []
    for rd in range(0, o.n_rounds + 1):
        rd_dir = folder / f"rd_{rd}"
        state = rd_dir / "state.json"
        if state.is_file():
            saved = json.loads(state.read_text())
            picks, rounds = saved["picks"], saved["rounds"]
        elif rd > 0:
            emb = embed_pool(folder / f"rd_{rd - 1}" / "out" / "model", records, o.max_length, o.device)
            new = query(emb, as_indices(picks), o.n_query, o.whiten_n_components, o.device or "auto")
            picks += new.tolist()
            rounds += [rd] * len(new)
        rd_dir.mkdir(parents=True, exist_ok=True)
        state.write_text(json.dumps({"picks": [int(i) for i in picks], "rounds": rounds}))
        entry: dict[str, Any] = {"round": rd, "labelled": len(picks)}
        last = rd == o.n_rounds or len(picks) == len(records)
        if not last or o.train_last:  # the base trained from scratch on every labelled row
            _, result = trained_model([records[i] for i in sorted(picks)], o.base, rd_dir / "out", topts)
            if result is not None:
                entry.update(steps=result.steps, loss=result.losses[-1] if result.losses else None)
        log.append(entry)
        if progress:
            print(f"[diverseevol] round {rd}/{o.n_rounds}: {len(picks)} rows labelled"
                  + (f", trained {entry['steps']} steps" if "steps" in entry else ""), file=sys.stderr)
        if last:
            break
    return as_indices(picks), np.asarray(rounds, dtype=np.int64), log


@method("select", "diverseevol", options=DiverseEvolOptions, needs_model=False)
def diverseevol(records: list[dict], ctx) -> list[dict]:
    """DiverseEvol: rounds of train, embed the pool with the model, add k-center picks from the labelled set."""
    from instructkit.run.manifest import write_method_summary

    o = ctx.options or DiverseEvolOptions()
    seed = seed_of(ctx, o)
    with state_dir(ctx, "diverseevol", records, o, seed) as folder:
        idx, rounds, log = diverseevol_loop(records, o, seed, folder, bool(getattr(ctx, "progress", True)))
    if o.order == "index":
        keep = np.argsort(idx, kind="stable")
        idx, rounds = idx[keep], rounds[keep]
    write_method_summary(ctx, "select", {"rows": len(records), "selected": len(idx), "rounds": log},
                         name="diverseevol", options=o)
    return take(records, idx, {"diverseevol_round": rounds})
