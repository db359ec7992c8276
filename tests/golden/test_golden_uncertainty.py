"""Prompt uncertainty against Active-IT's `random_drop_word` and `get_uncertainty_mean_var_bald` recorded from
the official code (tests/golden/uncertainty/README.md)."""

from __future__ import annotations

import json
import math
import random
import sys
from pathlib import Path

import pytest
from instructkit.scorers.uncertainty import drop_words, uncertainty_of

GOLDEN = Path(__file__).parent / "uncertainty"
DROPS = json.loads((GOLDEN / "random_drop_word.json").read_text())
BALD = json.loads((GOLDEN / "uncertainty_bald.json").read_text())


@pytest.mark.parametrize("case", DROPS, ids=[str(i) for i in range(len(DROPS))])
def test_drop_rule_is_random_drop_word(case):
    # the same generator state gives the same words: the keep rule and the whitespace handling are upstream's
    assert drop_words(case["text"], case["p"], random.Random(case["seed"])) == case["kept"]


@pytest.mark.parametrize("i", range(len(BALD["losses"])))
def test_example_uncertainty_is_the_official_bald_figure(i):
    losses = BALD["losses"][i]
    probs = [math.exp(-v) for v in losses]
    # float64: k differences and a sum of k terms, each within one ulp of the largest probability
    tol = (len(losses) + 2) * sys.float_info.epsilon * max(probs)
    assert uncertainty_of(probs) == pytest.approx(BALD["spread"][f"task{i}"], abs=tol)
    assert probs[0] == pytest.approx(BALD["mean"][f"task{i}"], abs=sys.float_info.epsilon * probs[0])
