"""Nuggets golden score (Li et al. 2023, "One Shot Learning as Instruction Data Prospector", 2312.10302).

GS(c) = fraction of anchor tasks j whose answer log-likelihood rises when candidate c is put before
them as a one-shot example: s1_j(c) = sum log p(a_j | c_full + q_j) > s0_j = sum log p(a_j | q_j).
As the official code: text "Instruction:\\n..\\n[Input:\\n..\\n]Response:\\n" + output (fields stripped),
anchors without BOS truncated to 200 tokens, the candidate (with special tokens) prepended with no
separator, strict ">", 100 k-means anchors nearest to their centroids (float32 vectors, KMeans with
random_state 0 and n_init 10 in float64, sklearn < 1.4's default that the 2023 script ran with; both options;
`-o preset official` also restates sklearn < 1.3's k-means++ draws, `legacy_sklearn`, which today's
sklearn changed: tests/golden/nuggets).
Deviations: the anchor embedding is the masked mean of the scoring model's last hidden states (the
official mean includes padding to 512); two centroids sharing a nearest row give one anchor (the
official list repeats it); the candidate is re-run per anchor in length-sorted batches
instead of reusing its KV cache (same numbers, more compute); candidates are cut at `max_length`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from instructkit.data.io import INSTRUCTION_FIELD, RESPONSE_FIELD
from instructkit.registry import method
from instructkit.run.runner import RunContext
from instructkit.shared.clustering import parse_n_init
from instructkit.templates import exact_template, template_source

from .common import LocalModelOptions, SpanBatcher, finish, local_backend, map_sorted, row_items, triplet


def nuggets_text(instruction: str, input: str, output: str = "") -> str:
    """The Nuggets prompt text (fields stripped), with the output appended."""
    tpl = exact_template(template_source("nuggets.jinja"))
    return tpl.render(instruction=instruction.strip(), input=input.strip()) + output.strip()


def anchor_pair(tokenizer: Any, rec: dict, max_tokens: int = 200) -> tuple[list[int], list[int]]:
    """(query ids, answer ids) of an anchor: no special tokens, the whole text cut at `max_tokens`."""
    ins, inp, out = triplet(rec)
    query = nuggets_text(ins, inp)
    q_ids = tokenizer.encode(query, add_special_tokens=False)
    ids = tokenizer.encode(query + out.strip(), add_special_tokens=False)[:max_tokens]
    return ids[: len(q_ids)], ids[len(q_ids) :]


def nearest_to_centroids(
    emb: np.ndarray, n: int = 100, random_state: int = 0, n_init: int | str = 10, legacy_sklearn: bool = False
) -> list[int]:
    """`kmeans_sample.py`: KMeans(n, random_state), then the row nearest each centroid (first on ties), in
    centroid order, each row once; in float64, as there (it hands sklearn a list of the float32 vectors,
    which sklearn converts to float64); `legacy_sklearn` runs k-means as the sklearn < 1.3 of the paper's
    time (`instructkit.shared.sklearn_legacy`)."""
    from sklearn.cluster import KMeans

    from instructkit.shared import sklearn_legacy

    emb = np.asarray(emb, dtype=np.float64)
    k = min(n, len(emb))
    if legacy_sklearn:
        centers = sklearn_legacy.kmeans(emb, k, random_state, int(n_init))[1]
    else:
        centers = KMeans(n_clusters=k, random_state=random_state, n_init=n_init).fit(emb).cluster_centers_
    return list(dict.fromkeys(int(np.argmin(((emb - c) ** 2).sum(1))) for c in centers))


def kmeans_anchors(
    backend: Any,
    records: list[dict],
    n: int = 100,
    random_state: int = 0,
    n_init: int | str = 10,
    legacy_sklearn: bool = False,
) -> list[int]:
    """Indices of the rows nearest to each of n k-means centroids of the model's mean hidden states
    (texts with special tokens, cut at 512 tokens, as `embedding_of_ins.py`), as `kmeans_sample.py`."""
    texts = [nuggets_text(*triplet(r)) for r in records]
    emb = backend.hidden_states(texts, pooling="mean", special_tokens=True, max_length=512)
    return nearest_to_centroids(emb, n, random_state, n_init, legacy_sklearn)


def golden_score(zero_shot: list[float], one_shot: list[float]) -> float:
    """Fraction of anchors with s1 > s0 (strict)."""
    return sum(s1 > s0 for s0, s1 in zip(zero_shot, one_shot)) / len(zero_shot)


@dataclass
class NuggetsOptions(LocalModelOptions):
    anchors_path: str | None = None  # JSON/JSONL anchor rows; default: k-means anchors of the input
    n_anchors: int = 100
    kmeans_n_init: str = "10"  # the official sklearn default (< 1.4); "auto": one k-means++ run
    kmeans_random_state: int = 0  # `kmeans_sample.py`: KMeans(n_clusters=100, random_state=0)
    legacy_sklearn: bool = False  # k-means as sklearn < 1.3 (the official run's); today's draws differ
    anchor_max_tokens: int = 200
    max_length: int = 512  # candidate tokens kept
    column: str = "nuggets"

    # `kmeans_sample.py` and `instruction_main.py` as released (100 anchors of 200 tokens)
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "official": {"n_anchors": 100, "anchor_max_tokens": 200, "kmeans_n_init": "10", "kmeans_random_state": 0,
                     "legacy_sklearn": True}
    }


def score_nuggets(
    records: list[dict], ctx: RunContext, opts: NuggetsOptions, backend: Any | None = None
) -> list[dict]:
    """Column `<c>`: the golden score in [0, 1] (a multiple of 1 / number of anchors)."""
    from instructkit.data.io import read_records

    backend = backend or local_backend(ctx, opts)
    tok = backend.tokenizer
    if opts.anchors_path:
        anchors = list(read_records(opts.anchors_path))
    else:
        picked = kmeans_anchors(
            backend,
            records,
            opts.n_anchors,
            opts.kmeans_random_state,
            parse_n_init(opts.kmeans_n_init),
            opts.legacy_sklearn,
        )
        anchors = [records[i] for i in picked]
    pairs = [anchor_pair(tok, a, opts.anchor_max_tokens) for a in anchors]
    zero = [
        sum(s.token_logprobs)
        for s in backend.span_scores(pairs, opts.batch_size, token_budget=opts.token_budget or None)
    ]
    batcher = SpanBatcher(backend, opts)
    anchors_id = hashlib.sha256(json.dumps(pairs).encode()).hexdigest()[:16]
    c = opts.column

    async def one(item: dict) -> dict:
        cand = tok.encode(nuggets_text(item["instruction"], item["input"], item["output"]))[: opts.max_length]
        scores = await batcher.score([(cand + q, a) for q, a in pairs])
        return {c: golden_score(zero, [sum(s.token_logprobs) for s in scores])}

    items, lengths = row_items(records, model=backend.model_id, anchors=anchors_id)
    return finish(records, map_sorted(ctx, items, one, "nuggets", lengths, in_flight=16), "nuggets", c, [c])


def anchors_from_input(opts: NuggetsOptions) -> str:
    """The cross-row need Nuggets declares: without `anchors_path` its anchors are k-means picks of the input."""
    return "" if opts.anchors_path else "its anchors are k-means picks over all rows (give -o anchors_path to score rows alone)"


@method("score", "nuggets", options=NuggetsOptions, reads=(INSTRUCTION_FIELD, RESPONSE_FIELD), cross_row=anchors_from_input)
def nuggets(records: list[dict], ctx: RunContext) -> list[dict]:
    """Nuggets golden score: share of anchor tasks whose answer likelihood rises with the row as a one-shot."""
    return score_nuggets(records, ctx, ctx.options or NuggetsOptions())
