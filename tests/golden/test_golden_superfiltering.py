"""Superfiltering's selection under `-o preset official` against `put_analysis_to_data.py` and `select_data.py`
recorded from the official code (tests/golden/superfiltering/README.md): equal IFDs at the cut, IFDs at and
above 1, empty outputs, and rows whose scoring raised (scored 0 and kept last upstream)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from instructkit.scorers.ifd import finish_selection

from instructkit.registry import get

GOLDEN = json.loads((Path(__file__).parent / "superfiltering" / "select_data.json").read_text())


def scored_rows(case: dict) -> list[dict]:
    """The rows `score_ifd` writes for what data_analysis.py saw: a scored row (status gt1 at IFD >= 1),
    an empty output (`empty_answer`), or a row whose scoring raised (no status: the runner's failure)."""
    rows = []
    for i, (line, ifd) in enumerate(zip(case["analysis"], case["ifd_ppl"])):
        if not line:
            rows.append({"id": i, "sf": None, "sf_status": "empty_answer"})
        elif 0 in (line["ppl"][1], line["ppl"][3]):
            rows.append({"id": i, "sf": None, "sf_status": None})
        else:
            rows.append({"id": i, "sf": ifd, "sf_status": "gt1" if ifd >= 1 else "ok"})
    return rows


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_official_preset_selects_as_select_data(name):
    case = GOLDEN[name]
    for rate, want in case["selected"].items():
        opts = get("score", "superfiltering").make_options({"preset": "official", "top_k": str(int(52002 * float(rate)))})
        got = finish_selection(scored_rows(case), opts)
        assert [r["id"] for r in got] == want, rate
        # an error row scores 0 upstream (its value in the file), here too
        assert all(r["sf"] == case["ifd_ppl"][r["id"]] for r in got)


def test_the_official_top_k_is_the_hard_coded_sample_rate():
    assert get("score", "superfiltering").make_options({"preset": "official"}).top_k == int(52002 * 0.1)
    assert all(math.isnan(v) for c in GOLDEN.values() for v, a in zip(c["ifd_ppl"], c["analysis"]) if not a)
