"""MoDS model-oriented data selection (Du et al. 2023, "MoDS: Model-oriented Data Selection for Instruction Tuning", 2311.15653).

Three stages, the selection logic only (reward scores come from the scorers, as columns or arrays):
1. quality: keep rows with reward > quality_threshold (strict; README value 0.0);
2. coverage: k-center greedy (Euclidean, raw vectors, the official picks on float32 embeddings) over
   the high-quality rows, `n_seeds` picks; the official embedding is BERT's [CLS] state of the
   instruction, unnormalised, 96 tokens (`-o preset official -o encoder hf:BERT_FOLDER`);
3. necessity: given the reward of the seed-trained model's own answers on all high-quality rows,
   keep those with reward < necessity_threshold (strict) and append them to the seeds.
Deviations: the official first center is unseeded `np.random.choice`; ours comes from random_state.
The official final list concatenates seeds and the necessity set without deduplication (a seed
can appear twice); `dedupe=True` (default) keeps the first occurrence, `dedupe=False` reproduces it.
The necessity set is in dataset order, as the official script writes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from instructkit.registry import method

from .common import EmbeddingOptions, as_indices, score_column, seed_of, take
from .embed import load_embeddings
from .kcenter import kcenter_greedy


def mods_quality(quality: np.ndarray, threshold: float = 0.0) -> np.ndarray:
    """Rows with reward > threshold, in dataset order (NaN, i.e. failed scoring, is dropped)."""
    q = np.asarray(quality, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return np.flatnonzero(q > threshold).astype(np.int64)


def mods_seeds(
    emb: np.ndarray,
    quality: np.ndarray,
    n_seeds: int = 1000,
    quality_threshold: float = 0.0,
    random_state: int | None = 0,
    first_index: int | None = None,
    device: str | None = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """(seed indices in pick order, high-quality indices). first_index is a position in the pool."""
    pool = mods_quality(quality, quality_threshold)
    if len(pool) == 0:
        return np.zeros(0, dtype=np.int64), pool
    sub = np.asarray(emb[pool], dtype=np.float64 if np.asarray(emb[:1]).dtype == np.float64 else np.float32)
    picks = kcenter_greedy(
        sub, n_seeds, "euclidean", first_index=first_index, random_state=random_state, device=device
    )
    return pool[picks], pool


def mods_necessity(necessity_reward: np.ndarray, pool: np.ndarray, threshold: float) -> np.ndarray:
    """High-quality rows whose model-answer reward is < threshold (strict), in dataset order."""
    r = np.asarray(necessity_reward, dtype=np.float64)
    pool = as_indices(pool)
    with np.errstate(invalid="ignore"):
        return pool[r[pool] < threshold]


def mods_select(
    emb: np.ndarray,
    quality: np.ndarray,
    n_seeds: int = 1000,
    quality_threshold: float = 0.0,
    necessity_reward: np.ndarray | None = None,
    necessity_threshold: float = 0.0,
    random_state: int | None = 0,
    first_index: int | None = None,
    dedupe: bool = True,
    device: str | None = "auto",
) -> np.ndarray:
    """Seeds (pick order) then, when necessity rewards are given, the necessity set."""
    seeds, pool = mods_seeds(emb, quality, n_seeds, quality_threshold, random_state, first_index, device)
    if necessity_reward is None:
        return seeds
    extra = mods_necessity(necessity_reward, pool, necessity_threshold)
    if dedupe:
        extra = extra[~np.isin(extra, seeds)]
    return as_indices(np.concatenate([seeds, extra]))


@dataclass
class MoDSOptions(EmbeddingOptions):
    quality: str = "reward"  # stage-1 reward column
    quality_threshold: float = 0.0
    n_seeds: int = 1000
    necessity: str | None = None  # column: reward of the seed model's answer (stage 3); None: seeds only
    necessity_threshold: float = 0.0
    dedupe: bool = True
    first_index: int | None = None
    random_state: int | None = None
    fields: list[str] = field(default_factory=lambda: ["instruction"])
    device: str = "auto"

    # `diverse-data-selection/run.py` (bert-base-uncased [CLS] of the instruction, unnormalised, 96 tokens:
    # give the folder with -o encoder hf:PATH), README threshold 0.0, `merge.py` without deduplication
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "official": {
            "fields": ["instruction"],
            "text_template": None,
            "encoder_pooling": "cls",
            "encoder_max_length": 96,
            "quality_threshold": 0.0,
            "dedupe": False,
        }
    }


@method("select", "mods", options=MoDSOptions, needs_model=False)
def mods(records: list[dict], ctx) -> list[dict]:
    """MoDS: reward > threshold, k-center seeds, plus rows the seed model still answers badly."""
    o = ctx.options or MoDSOptions()
    necessity = score_column(records, o.necessity) if o.necessity else None
    idx = mods_select(
        load_embeddings(records, ctx, o),
        score_column(records, o.quality),
        o.n_seeds,
        o.quality_threshold,
        necessity,
        o.necessity_threshold,
        seed_of(ctx, o),
        o.first_index,
        o.dedupe,
        o.device,
    )
    return take(records, idx)
