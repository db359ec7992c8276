"""Instruction Mining (Cao et al. 2023, 2307.06290): quality indicators and the paper's linear rule.

Indicators per row: input and output length (tokens of the scoring LM), reward-model score, response
perplexity, MTLD of the response (threshold 0.72, forward/backward mean, partial factors as
`lexicalrichness`), distance to the k-th nearest neighbour in sentence-embedding space (KNN-6), and
UniEval naturalness / coherence / understandability read from columns when the user has them. The rule
predicts the fine-tuned model's log eval loss, log L = intercept + sum(coef * indicator) (v2:
0.0274 - 0.0078 Rew + 0.4421 Und - 0.3212 Nat - 0.1520 Coh); `im_score` = -(sum(coef * indicator)), so
higher is better. Deviations: no official code exists; the rule was fit on dataset means and is applied
per row (as the paper ranks); UniEval is not bundled (no weights offline); the v1 rule is recalled, not
verified, and its "Len" is taken as the output length; no BlendSearch over the subset size.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from instructkit.data.io import INSTRUCTION_FIELD, RESPONSE_FIELD
from instructkit.registry import method
from instructkit.run.runner import RunContext

from .common import LocalModelOptions, local_backend, model_options, triplet
from .perplexity import PerplexityOptions, score_perplexity
from .reward import RewardOptions, question_of, score_reward

RULES: dict[str, tuple[float, dict[str, float]]] = {
    "v2": (0.0274, {"reward": -0.0078, "und": 0.4421, "nat": -0.3212, "coh": -0.1520}),
    "v1": (1.0694, {"reward": -0.1498, "len_out": 8.257e-5, "knn": -0.9350}),  # recalled: verify
}
_WORD = re.compile(r"\w+(?:'\w+)?")


def _mtld_pass(words: list[str], threshold: float) -> float:
    types: set[str] = set()
    count, factors, ttr = 0, 0.0, 1.0
    for w in words:
        count += 1
        types.add(w)
        ttr = len(types) / count
        if ttr <= threshold:
            factors += 1
            types, count = set(), 0
    if count > 0:
        factors += (1 - ttr) / (1 - threshold)
    if factors == 0:  # the text never drops below the threshold (as lexicalrichness)
        ttr = len(set(words)) / len(words)
        factors = 1.0 if ttr == 1 else (1 - ttr) / (1 - threshold)
    return len(words) / factors


def mtld(text: str, threshold: float = 0.72) -> float | None:
    """Measure of Textual Lexical Diversity (McCarthy & Jarvis 2010): mean of forward and backward passes
    over lower-cased words; None for an empty text."""
    words = [w.lower() for w in _WORD.findall(text)]
    if not words:
        return None
    return (_mtld_pass(words, threshold) + _mtld_pass(words[::-1], threshold)) / 2


def knn_distance(emb: np.ndarray, k: int = 6) -> list[float | None]:
    """Euclidean distance of each row to its k-th nearest other row (None when there are <= k rows)."""
    if len(emb) <= k:
        return [None] * len(emb)
    from sklearn.neighbors import NearestNeighbors

    dist, _ = NearestNeighbors(n_neighbors=k + 1).fit(emb).kneighbors(emb)
    return [float(d) for d in dist[:, k]]


def rule_score(
    ind: dict[str, Any], coefficients: dict[str, float], intercept: float
) -> tuple[float | None, float | None, list[str]]:
    """(score = -sum(coef * x), predicted log loss, missing indicators) for one row."""
    missing = [k for k in coefficients if ind.get(k) is None or not math.isfinite(float(ind[k]))]
    if missing:
        return None, None, missing
    total = sum(c * float(ind[k]) for k, c in coefficients.items())
    return -total, intercept + total, []


@dataclass
class InstructionMiningOptions(LocalModelOptions):
    rule: str = "v2"  # v2 (latest paper) | v1 (recalled) ; coefficients override it
    coefficients: dict[str, float] | None = None  # indicator -> coefficient of the log-loss rule
    intercept: float | None = None
    reward_model: str = ""  # sequence-classification RM folder (Rew); empty: no reward indicator
    knn_k: int = 6
    encoder: str | None = None  # sentence encoder folder for KNN; default all-MiniLM-L6-v2
    unieval_columns: dict[str, str] = field(
        default_factory=lambda: {"und": "unieval_und", "nat": "unieval_nat", "coh": "unieval_coh"}
    )
    column: str = "im"


def score_instruction_mining(
    records: list[dict], ctx: RunContext, opts: InstructionMiningOptions
) -> list[dict]:
    """Indicator columns `<c>_len_in`, `_len_out`, `_ppl`, `_mtld`, `_knn`, `_reward`, `_und`, `_nat`,
    `_coh`, and the rule: `<c>_score`, `<c>_pred_log_loss`, `<c>_missing`."""
    from instructkit.models.embeddings import embedder

    c = opts.column
    intercept, coefs = RULES[opts.rule]
    coefs = dict(opts.coefficients) if opts.coefficients else dict(coefs)
    intercept = opts.intercept if opts.intercept is not None else intercept
    backend = local_backend(ctx, opts)
    ppl = score_perplexity(
        records,
        ctx,
        PerplexityOptions(**model_options(opts), column=f"{c}_p"),
        backend,
    )
    rewards: list[Any] = [None] * len(records)
    if opts.reward_model:
        scored = score_reward(
            records,
            ctx,
            RewardOptions(reward_model=opts.reward_model, device=opts.device, column=f"{c}_reward"),
        )
        rewards = [r.get(f"{c}_reward") for r in scored]
    rows = [triplet(r) for r in records]
    texts = [f"{i}\n{x}\n{o}" for i, x, o in rows]
    encoder = embedder(f"hf:{opts.encoder}" if opts.encoder else "local", device=backend.device, cache=False)
    emb = encoder.embed(texts, batch_size=max(1, len(texts)))  # one call: the encoder batches by length
    knn = knn_distance(np.asarray(emb, dtype=np.float64), opts.knn_k)
    tok = backend.tokenizer
    out = []
    for rec, (ins, inp, outp), p, rew, kd in zip(records, rows, ppl, rewards, knn):
        ind: dict[str, Any] = {
            "len_in": len(tok.encode(question_of(ins, inp), add_special_tokens=False)),
            "len_out": len(tok.encode(outp, add_special_tokens=False)),
            "ppl": p.get(f"{c}_p_response"),
            "mtld": mtld(outp),
            "knn": kd,
            "reward": rew,
        }
        for name, col in opts.unieval_columns.items():
            ind[name] = rec.get(col)
        score, pred, missing = rule_score(ind, coefs, intercept)
        new = dict(rec)
        new.update({f"{c}_{k}": v for k, v in ind.items()})
        new.update(
            {f"{c}_score": score, f"{c}_pred_log_loss": pred, f"{c}_missing": ",".join(missing) or None}
        )
        out.append(new)
    return out


@method("score", "instruction_mining", options=InstructionMiningOptions, reads=(INSTRUCTION_FIELD, RESPONSE_FIELD))
def instruction_mining(records: list[dict], ctx: RunContext) -> list[dict]:
    """Instruction Mining indicators (lengths, reward, perplexity, MTLD, KNN, UniEval columns) and linear rule."""
    return score_instruction_mining(records, ctx, ctx.options or InstructionMiningOptions())
