"""AlpaGasus's score parser against golden outputs of gpt4life/alpagasus's own `parse_score`
(tests/golden/alpagasus/README.md; rating/chatgpt_rating.py = filter.py, and get_scores.py). AlpaGasus has
no preset (a prompt to ChatGPT, not a trained format): where the official parser returns a score on the
0-5 scale ours returns the same, except where it truncates; where it crashes, returns its -1 sentinel, nan
or a value off the scale, ours reads the score the reply states or is null with a status (docs/fidelity.md)."""

from __future__ import annotations

import json
from pathlib import Path

from instructkit.models import Completion
from instructkit.shared.scores import OK, score_completion

GOLDEN = Path(__file__).parent / "alpagasus"
# Official: "Score:" then `.strip('\n')[0]`, the first character only ("Score:\n4.5" -> 4.0).
TRUNCATED = {"Score:\n4.5": 4.5}
# Replies the official parser cannot read (a crash or -1) that state a 0-5 score ours reads.
READ_HERE = {
    "Score: 4.5\nThe answer is good.": 4.5, "score: 4\nGood.": 4.0, "4.5/5\nThe answer is fine.": 4.5,
    "4.5 out of 5\nGood.": 4.5, "Score: 5": 5.0, "Score: 4.5 - accurate": 4.5,
    "score: 3.5 because it misses a step\nmore": 3.5, "Explanation first.\nScore: 2": 2.0,
    "I would rate it score: 1\n": 1.0, "Rating: 4\nno score keyword": 4.0, "Score:\n4.5": 4.5,
}  # fmt: skip


def _ours(review: str) -> tuple[float | None, str]:
    s = score_completion(Completion(text=review), 0, 5, None, mode="text", integer=False)
    return s["value"], s["status"]


def test_golden_alpagasus_scores() -> None:
    rows = [json.loads(line) for line in (GOLDEN / "parse_score.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len({r["review"] for r in rows}) >= 20 and {r["script"] for r in rows} == {"chatgpt_rating.py", "get_scores.py"}
    agree = 0
    for row in rows:
        value, status = _ours(row["review"])
        official = row["score"]
        on_scale = row["error"] is None and isinstance(official, float) and 0 <= official <= 5 and official != -1
        if on_scale and row["review"] not in TRUNCATED:
            assert (value, status) == (official, OK), row
            agree += 1
        elif row["review"] in READ_HERE:
            assert (value, status) == (READ_HERE[row["review"]], OK), row
        else:  # official: a crash, the -1 sentinel, nan or off the scale; here null with its status
            assert value is None and status != OK, row
    assert agree >= 10
    truncated = [r for r in rows if r["review"] in TRUNCATED and r["script"] == "chatgpt_rating.py"]
    assert truncated and all(r["score"] == float(r["review"].split("Score:")[1].strip()[0]) for r in truncated)
