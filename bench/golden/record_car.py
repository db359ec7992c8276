"""Record CaR's golden selections by running the official `Clustering/cluster.py` unchanged.

Not run by CI: it needs the official code (IronBeliever/CaR, outside this repo) and a Python with
the scikit-learn that the official lock pins (see tests/golden/car/README.md for the command).
The script embeds with `SentenceTransformer('sentence_bert')`; a stand-in module on PYTHONPATH
answers `encode` with the synthetic vectors of each dataset in row order, so the official PCA,
K-means and combine run on inputs we control (ties in score, duplicate and near-duplicate vectors).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[2] / "tests" / "golden" / "car"

STAND_IN = '''
import numpy as np
_VECS = iter(np.load({path!r}))
class SentenceTransformer:
    def __init__(self, name):
        assert name == "sentence_bert"
    def encode(self, text):
        return next(_VECS)
'''


def datasets() -> dict[str, tuple[np.ndarray, list[float]]]:
    """Three synthetic sets beyond the hard-coded n1=1000, with ties in score and in vectors."""
    rng = np.random.default_rng(25)
    out = {}
    # blobs whose scores depend on the blob (so low blobs send their best row past n1), on a
    # half-point grid (many ties); every 50th vector repeated exactly
    centers = rng.normal(size=(30, 12))
    blob = rng.integers(0, 30, 2000)
    x = centers[blob] + 0.3 * rng.normal(size=(2000, 12))
    x[::50] = x[1::50]
    s = np.round((blob % 10 + rng.uniform(0, 2, 2000)) * 2) / 2
    out["blobs_half_point_ties"] = (x, s.tolist())
    # overlapping blobs; scores that differ in the last bits (near ties) and exact ties
    centers = rng.normal(size=(8, 8)) * 0.5
    blob = rng.integers(0, 8, 4000)
    x = centers[blob] + rng.normal(size=(4000, 8))
    s = np.round(2 * x[:, 0] + rng.uniform(0, 0.5, 4000), 2)
    s[::3] = s[::3] + 1e-12
    out["overlapping_near_ties"] = (x, s.tolist())
    # no cluster structure at all (where initialisations disagree most); integer scores 1-5 that
    # fall along the first axis
    x = rng.uniform(-1, 1, size=(3600, 4))
    s = np.clip(np.round(3 + 2 * x[:, 0] + rng.normal(0, 0.2, 3600)), 1, 5)
    out["uniform_integer_scores"] = (x, s.tolist())
    return {k: (v[0].astype(np.float32), v[1]) for k, v in out.items()}


def run_official(official: Path, vecs: np.ndarray, scores: list[float], python: str) -> tuple[list[int], list[str]]:
    """cluster.py on rows "id"/instruction/input/output/score; (selected ids in order, label per row)."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "data").mkdir()
        np.save(work / "vecs.npy", vecs)
        (work / "fake").mkdir()
        (work / "fake" / "sentence_transformers.py").write_text(STAND_IN.format(path=str(work / "vecs.npy")))
        rows = [
            {"id": i, "instruction": f"task {i}", "input": "", "output": f"answer {i}", "score": s}
            for i, s in enumerate(scores)
        ]
        (work / "data" / "ranking_IQS_result.json").write_text(json.dumps(rows))
        env = dict(os.environ, PYTHONPATH=str(work / "fake"))
        subprocess.run([python, str(official / "Clustering" / "cluster.py")], cwd=work, env=env, check=True,
                       stdout=subprocess.DEVNULL)
        labelled = json.loads((work / "data" / "clustering_result.json").read_text())
        chosen = json.loads((work / "data" / "CaR_selected_result.json").read_text())
    return [r["id"] for r in chosen], [r["label"] for r in labelled]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("official", type=Path, help="checkout of IronBeliever/CaR")
    ap.add_argument("--python", default=sys.executable, help="interpreter with the official code's deps")
    args = ap.parse_args()
    versions = subprocess.run(
        [args.python, "-c", "import sklearn, numpy; print(sklearn.__version__, numpy.__version__)"],
        check=True, capture_output=True, text=True,
    ).stdout.split()
    OUT.mkdir(parents=True, exist_ok=True)
    for name, (vecs, scores) in datasets().items():
        selected, labels = run_official(args.official, vecs, scores, args.python)
        np.save(OUT / f"{name}.npy", vecs)
        record = {"scikit_learn": versions[0], "numpy": versions[1], "embeddings": f"{name}.npy",
                  "scores": scores, "labels": labels, "selected": selected}
        (OUT / f"{name}.json").write_text(json.dumps(record) + "\n")
        print(f"{name}: {len(scores)} rows, {len(set(labels))} clusters, {len(selected)} selected")


if __name__ == "__main__":
    main()
