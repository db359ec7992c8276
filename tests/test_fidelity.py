"""Official presets and official tie/order rules of the selection side, each against an independent
re-statement of the official code's behaviour (docs/fidelity.md names the repositories and commits)."""

from __future__ import annotations

import math

import pytest
from instructkit.judge.scores.ifd import SuperfilteringOptions, finish_selection

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
