"""DEITA under `-o preset official` against golden outputs of hkust-nlp/deita's own code
(tests/golden/deita/README.md): `Scorer.infer_score` on vLLM's top log-probs (softmax over the tokens
"1".."6", 3.0 when one is missing) and the vicuna_v1.1 text its embedder builds from a conversation."""

from __future__ import annotations

import json
from pathlib import Path

from instructkit.judge.deita import official_server_score
from instructkit.selection.common import row_texts

from instructkit.models import TokenLogprob
from instructkit.numerics import gamma
from instructkit.registry import get

GOLDEN = Path(__file__).parent / "deita"
# Σ s·p(s) over six softmax terms in float64, ours and numpy's: exp, the division and the six-term sums
# each add rounding; the bound is Higham's gamma for that many operations times the largest value (6).
TOLERANCE = 2 * gamma(6 + 6, 2.0**-53) * 6


def _rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (GOLDEN / name).read_text(encoding="utf-8").splitlines()]


def _as_logprobs(top: list[list]) -> list[TokenLogprob]:
    """What an OpenAI-compatible server returns for the first position: the sampled token (the most
    likely, at T 0) and its top alternatives as text; nothing when no log-probs came back."""
    if not top:
        return []
    best = max(top, key=lambda t: t[2])
    return [TokenLogprob(token=best[1], logprob=best[2], top=[(text, lp) for _, text, lp in top])]


def test_official_preset_asks_for_the_released_code_s_logprobs() -> None:
    opts = get("judge", "deita").make_options({"preset": "official"})
    assert (opts.mode, opts.scorer_logprobs, opts.top_logprobs) == ("scorer", "official", 1000)


def test_golden_server_scores_are_infer_scores() -> None:
    rows = _rows("server_scores.jsonl")
    assert len(rows) >= 20 and sum(r["score"] == 3.0 for r in rows) >= 4
    for row in rows:
        ours = official_server_score(_as_logprobs(row["top_logprobs"]))
        assert abs(ours - row["score"]) <= TOLERANCE, row


def test_golden_embedding_text_is_the_embedders() -> None:
    """The official select preset's text template against DEITA's `preprocess` (no `ASSISTANT:` after a
    final human turn; a leading assistant turn dropped; an empty answer as `ASSISTANT:`)."""
    opts = get("select", "deita").make_options({"preset": "official"})
    rows = _rows("embed_text.jsonl")
    texts = row_texts([{"conversations": r["conversations"]} for r in rows], template=opts.text_template)
    for row, text in zip(rows, texts):
        assert text == row["text"], row["conversations"]
