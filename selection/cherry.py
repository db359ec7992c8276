"""Cherry pre-experience sampling (Li et al. 2023, "From Quantity to Quality: Boosting LLM Performance with Self-Guided Data Selection", 2308.12032).

KMeans (100 clusters, random_state 0) on the raw embeddings (the paper: a causal LM's mean last
hidden state of the templated instruction; `instructkit embed --encoder causal:SPEC:mean`), then
per cluster the middle-confidence rows: those with perplexity between the 25th and 75th
percentiles (numpy linear interpolation, bounds inclusive) taken *in dataset-index order* (not
sorted by perplexity, as `data_by_cluster.py` does despite its variable names), evenly spaced with
step len // n, first n. Clusters with fewer than n rows are taken whole. Output is clusters in
label order. This is the one implementation; it lives in instructkit/shared/clustering.py, which the IFD scorer uses too.
K-means runs as the official script ran it (2023, sklearn < 1.4): `n_init=10`, `random_state=0`, both
options (`n_init=auto` is sklearn >= 1.4's single k-means++ run).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from instructkit.registry import method
from instructkit.shared.clustering import cherry_pre_select, parse_n_init

from .common import EmbeddingOptions, score_column, seed_of, take
from .embed import load_embeddings


@dataclass
class CherryOptions(EmbeddingOptions):
    confidence: str = "instruction_ppl"  # column: perplexity of the templated instruction
    n_clusters: int = 100
    n_per_cluster: int = 10
    low: float = 25
    high: float = 75
    n_init: str = "10"  # the official sklearn default (< 1.4); "auto": one k-means++ run
    random_state: int | None = 0
    fields: list[str] = field(default_factory=lambda: ["instruction", "input"])

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "official": {"n_clusters": 100, "n_per_cluster": 10, "low": 25, "high": 75, "n_init": "10", "random_state": 0}
    }


@method("select", "cherry", options=CherryOptions, needs_model=False)
def cherry(records: list[dict], ctx) -> list[dict]:
    """Cherry pre-experience: KMeans clusters, middle-perplexity rows evenly spaced per cluster."""
    o = ctx.options or CherryOptions()
    idx, labels = cherry_pre_select(
        load_embeddings(records, ctx, o),
        score_column(records, o.confidence),
        o.n_clusters,
        o.n_per_cluster,
        o.low,
        o.high,
        seed_of(ctx, o),
        parse_n_init(o.n_init),
    )
    return take(records, idx, {"cherry_cluster": labels[idx]})
