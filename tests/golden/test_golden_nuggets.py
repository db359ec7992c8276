"""Nuggets' k-means anchors under `-o preset official` against `kmeans_sample.py` recorded from the official
code (tests/golden/nuggets/README.md): the rows nearest the 100 centroids, in centroid order."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from instructkit.scorers.nuggets import nearest_to_centroids

from instructkit.registry import get
from instructkit.shared.clustering import parse_n_init

GOLDEN = Path(__file__).parent / "nuggets"


@pytest.mark.parametrize("name", sorted(p.stem for p in GOLDEN.glob("*.json")))
def test_official_preset_picks_the_official_anchors(name):
    rec = json.loads((GOLDEN / f"{name}.json").read_text())
    opts = get("score", "nuggets").make_options({"preset": "official"})
    got = nearest_to_centroids(np.load(GOLDEN / rec["embeddings"]), opts.n_anchors, opts.kmeans_random_state,
                               parse_n_init(opts.kmeans_n_init), opts.legacy_sklearn)
    # the official list names a row once per centroid nearest to it; ours once (documented)
    assert got == list(dict.fromkeys(rec["anchors"]))
