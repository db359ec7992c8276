"""DQ's GraphCut bins against `alpaca_sample.dataset_quantization` recorded from the official code
(tests/golden/dq/README.md): exact repeats, mirror-symmetric ties and float32 near ties."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from instructkit.selection.dq import dq_bins

from instructkit.registry import get

GOLDEN = json.loads((Path(__file__).parent / "dq" / "bins.json").read_text())


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_bins_are_the_official_bins(name):
    case = GOLDEN[name]
    emb = np.asarray(case["embeddings"], dtype=case["dtype"])
    opts = get("select", "dq").make_options({"preset": "official", "n_bins": str(case["k"])})
    bins = dq_bins(emb, opts.n_bins, opts.lam, device="cpu", float32_matrix=opts.float32_matrix)
    assert [b.tolist() for b in bins] == case["bins"]


def test_the_running_vector_default_differs_only_where_rounding_decides():
    """Without ties decided by rounding the default O(N d) path gives the same bins; the mirror-symmetric
    circle is where it does not (so the golden set can tell the two apart)."""
    for name, case in GOLDEN.items():
        emb = np.asarray(case["embeddings"], dtype=case["dtype"])
        same = [b.tolist() for b in dq_bins(emb, case["k"], device="cpu")] == case["bins"]
        assert same == (name != "circle_ties_float64"), name
