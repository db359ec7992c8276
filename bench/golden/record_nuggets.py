"""Record Nuggets' golden anchors by running the official `kmeans_sample.py` unchanged.

Not run by CI: it needs the official code (pldlgb/nuggets, outside this repo) and a Python with a
scikit-learn of the paper's time (tests/golden/nuggets/README.md has the command). The script reads an
.npy of instruction embeddings and writes the rows nearest its 100 centroids; the sets below hold
repeated vectors (ties for the nearest row) and near-duplicates.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[2] / "tests" / "golden" / "nuggets"


def datasets() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(2312)
    out = {}
    centers = rng.normal(size=(60, 8))
    x = centers[rng.integers(0, 60, 400)] + 0.05 * rng.normal(size=(400, 8))
    x[0:399:7] = x[3::7]  # exact repeats: equal distances to a centroid
    out["blobs_with_repeats"] = x
    x = rng.normal(size=(300, 6))
    x[150:] = x[:150] + 1e-6 * rng.normal(size=(150, 6))  # near-duplicate pairs
    out["near_duplicate_pairs"] = x
    out["uniform"] = rng.uniform(-1, 1, size=(250, 5))
    return {k: v.astype(np.float32) for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("official", type=Path, help="checkout of pldlgb/nuggets")
    ap.add_argument("--python", default=sys.executable, help="interpreter with the official code's deps")
    args = ap.parse_args()
    version = subprocess.run([args.python, "-c", "import sklearn; print(sklearn.__version__)"],
                             check=True, capture_output=True, text=True).stdout.strip()  # fmt: skip
    OUT.mkdir(parents=True, exist_ok=True)
    for name, vecs in datasets().items():
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            np.save(work / "emb.npy", vecs)
            (work / "rows.json").write_text(json.dumps([{"id": i} for i in range(len(vecs))]))
            subprocess.run([args.python, str(args.official / "kmeans_sample.py"), "--embedding_path",
                            str(work / "emb.npy"), "--instruction_path", str(work / "rows.json"),
                            "--save_path", str(work / "anchors.json")],
                           check=True, stdout=subprocess.DEVNULL)  # fmt: skip
            anchors = [r["id"] for r in json.loads((work / "anchors.json").read_text())]
        np.save(OUT / f"{name}.npy", vecs)
        (OUT / f"{name}.json").write_text(json.dumps({"scikit_learn": version, "embeddings": f"{name}.npy",
                                                      "anchors": anchors}) + "\n")  # fmt: skip
        print(f"{name}: {len(vecs)} rows, {len(anchors)} anchors, {len(set(anchors))} distinct")


if __name__ == "__main__":
    main()
