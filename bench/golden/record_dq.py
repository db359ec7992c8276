"""Record Dataset Quantization's golden bins by running the official `alpaca_sample.dataset_quantization`.

Not run by CI: it needs the official code (magic-research/Dataset_Quantization, outside this repo), numpy,
tqdm and torch (its `util.utils` imports torch and prefetch_generator; a stand-in prefetch_generator is
enough, nothing of it runs; the `dq` and `dq.methods` package files, which import the image models, are
skipped: only `dq/methods/methods_utils` is loaded); tests/golden/dq/README.md has the command. The function reads
`alpaca_embeds.npy` from the working directory; `NaiveGreedy.select` is wrapped to record each bin it
returns (the per-bin sampling after it is unseeded upstream and is not recorded).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import types
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[2] / "tests" / "golden" / "dq" / "bins.json"


def datasets() -> dict[str, tuple[np.ndarray, int]]:
    """(vectors, k) per set: unit vectors as ada-002's, with exact repeats and symmetric ties."""
    rng = np.random.default_rng(2308)
    out = {}
    x = rng.normal(size=(60, 8))
    x[30:40] = x[0:10]  # exact repeats: equal gains
    out["repeats_float64"] = (x / np.linalg.norm(x, axis=1, keepdims=True), 5)
    angles = np.arange(48) * (2 * np.pi / 48)  # points on a circle: every gain has a mirror twin
    out["circle_ties_float64"] = (np.stack([np.cos(angles), np.sin(angles)], axis=1), 4)
    x = rng.normal(size=(75, 16)).astype(np.float32)
    x[::5] += 1e-4 * x[1::5]  # near-duplicates a few float32 ulps of gain apart
    out["near_ties_float32"] = ((x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("official", type=Path, help="checkout of magic-research/Dataset_Quantization")
    args = ap.parse_args()
    sys.modules.setdefault("prefetch_generator", types.SimpleNamespace(BackgroundGenerator=object))
    for pkg in ("dq", "dq.methods"):  # their __init__ files import the image models (torchvision): skip them
        mod = types.ModuleType(pkg)
        mod.__path__ = [str(args.official / pkg.replace(".", "/"))]
        sys.modules[pkg] = mod
    sys.path.insert(0, str(args.official))
    import alpaca_sample
    from dq.methods.methods_utils.submodular_optimizer import NaiveGreedy

    bins: list[list[int]] = []
    real_select = NaiveGreedy.select

    def recording_select(self, *a, **k):
        picked = real_select(self, *a, **k)
        bins.append([int(i) for i in picked])
        return picked

    NaiveGreedy.select = recording_select
    record = {}
    cwd = os.getcwd()
    for name, (vecs, k) in datasets().items():
        bins.clear()
        with tempfile.TemporaryDirectory() as tmp:
            os.chdir(tmp)
            try:
                np.save("alpaca_embeds.npy", vecs)
                alpaca_sample.dataset_quantization(list(range(len(vecs))), ratio=0.5, k=k)
            finally:
                os.chdir(cwd)
        record[name] = {"embeddings": vecs.tolist(), "dtype": str(vecs.dtype), "k": k, "bins": list(bins)}
        print(name, [len(b) for b in bins])
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
