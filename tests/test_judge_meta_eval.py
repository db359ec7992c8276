"""Judge meta-evaluation on hand-computed examples (the numbers are worked out in the comments)."""

from __future__ import annotations

import math

import pytest
from instructkit.judge.meta_eval import cohen_kappa, nearest_label, pairwise_metrics, pointwise_metrics


def test_pointwise_hand_computed() -> None:
    # scored rows (pred, gold): (1,1) (2,2) (3,3) (5,4); the fifth row has no score.
    m = pointwise_metrics([1, 2, 3, 5, None], [1, 2, 3, 4, 5])
    assert m["rows"] == 5 and m["scored"] == 4
    assert m["parse_failure_rate"] == pytest.approx(0.2)
    assert m["accuracy"] == pytest.approx(3 / 4) and m["accuracy_all"] == pytest.approx(3 / 5)
    # p_o = 3/4; p_e = (1·1 + 1·1 + 1·1) / 16 = 3/16; kappa = (12/16 - 3/16) / (13/16) = 9/13
    assert m["cohen_kappa"] == pytest.approx(9 / 13)
    assert m["spearman"] == pytest.approx(1.0) and m["kendall"] == pytest.approx(1.0)  # monotone
    assert m["mae"] == pytest.approx(0.25)


def test_pointwise_disorder_hand_computed() -> None:
    m = pointwise_metrics([2, 1, 3, 4], [1, 2, 3, 4])
    # Σd² = 2 -> rho = 1 - 6·2 / (4·15) = 0.8; one discordant pair of 6 -> tau = (5 - 1) / 6
    assert m["spearman"] == pytest.approx(0.8)
    assert m["kendall"] == pytest.approx(4 / 6)
    # p_o = 2/4, p_e = 4·(1·1)/16 = 1/4 -> kappa = (1/2 - 1/4) / (3/4) = 1/3
    assert m["cohen_kappa"] == pytest.approx(1 / 3)


def test_pointwise_ties_hand_computed() -> None:
    m = pointwise_metrics([1, 1, 2, 3], [1, 2, 3, 4])
    # tau-b: C = 5, D = 0, one tie in x: 5 / sqrt((6 - 1)(6 - 0))
    assert m["kendall"] == pytest.approx(5 / math.sqrt(30))
    # Spearman on average ranks x = (1.5, 1.5, 3, 4), y = (1, 2, 3, 4): 4.5 / sqrt(4.5 · 5)
    assert m["spearman"] == pytest.approx(4.5 / math.sqrt(22.5))


def test_expected_scores_are_rounded_to_the_nearest_label() -> None:
    assert nearest_label(3.7, [1, 2, 3, 4, 5]) == 4 and nearest_label(2.5, [1, 2, 3]) == 2
    m = pointwise_metrics([3.7, 1.2], [4, 1])
    assert m["accuracy"] == 1.0
    assert m["spearman"] == pytest.approx(1.0)


def test_pairwise_hand_computed() -> None:
    gold = ["A", "B", "tie", "A", "B"]
    pred = ["A", "B", "A", None, "A"]
    m = pairwise_metrics(pred, gold, [True, True, False, None, True])
    assert m["scored"] == 4 and m["parse_failure_rate"] == pytest.approx(0.2)
    assert m["accuracy"] == pytest.approx(0.5) and m["accuracy_all"] == pytest.approx(0.4)
    assert m["position_consistency"] == pytest.approx(3 / 4)
    # pred A:3 B:1, gold A:1 B:2 tie:1 -> p_e = (3·1 + 1·2) / 16 = 5/16; kappa = (1/2 - 5/16)/(11/16) = 3/11
    assert m["cohen_kappa"] == pytest.approx(3 / 11)


def test_pairwise_labels_accept_numbers_and_reject_junk() -> None:
    m = pairwise_metrics(["A", "tie"], [0, 0.5])
    assert m["accuracy"] == 1.0
    with pytest.raises(ValueError):
        pairwise_metrics(["A"], ["maybe"])


def test_kappa_agrees_with_sklearn_and_handles_degenerate_cases() -> None:
    from sklearn.metrics import cohen_kappa_score

    a = [1, 2, 3, 3, 2, 1, 4, 4, 5, 2]
    b = [1, 2, 3, 2, 2, 1, 4, 5, 5, 3]
    assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b))
    assert cohen_kappa([3, 3], [3, 3]) is None  # one shared category: undefined, not 1 or 0
    assert cohen_kappa([], []) is None
    assert pointwise_metrics([None, None], [1, 2])["accuracy"] is None
