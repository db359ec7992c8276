"""Selectors on a memory-mapped float32 .npy: the same picks as on the in-memory array, and no full copy.

Allocation is read with tracemalloc (numpy reports its buffers to it): a selector that copies or upcasts
the whole N x d matrix allocates at least N * d * 4 bytes, which these checks refuse.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
from instructkit.selection.deita import deita_select
from instructkit.selection.embed import embed_records, load_embeddings
from instructkit.selection.kcenter import kcenter_greedy

from instructkit.registry import get
from instructkit.run.runner import RunContext

N, D = 40_000, 256  # 41 MB of float32


def clustered_npy(path, n: int = N, d: int = D, seed: int = 0) -> np.ndarray:
    """Unit-length rows around 400 centres, with exact duplicates, written as .npy and memory-mapped."""
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(400, d)).astype(np.float32)
    x = c[rng.integers(400, size=n)] + np.float32(0.3) * rng.normal(size=(n, d)).astype(np.float32)
    x[n // 2 : n // 2 + 500] = x[:500]
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    np.save(path, x)
    return np.load(path, mmap_mode="r")


def peak_bytes(fn) -> tuple[object, int]:
    tracemalloc.start()
    try:
        out = fn()
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_kcenter_and_deita_on_a_memmap_pick_the_same_without_copying(tmp_path) -> None:
    mm = clustered_npy(tmp_path / "e.npy")
    assert isinstance(mm, np.memmap) and not mm.flags.writeable
    full = N * D * 4
    ram = np.array(mm)
    want = kcenter_greedy(ram, 300, first_index=5, tile=1 << 18)  # first: torch's import is not traced
    got, peak = peak_bytes(lambda: kcenter_greedy(mm, 300, first_index=5, tile=1 << 18))
    assert got.tolist() == want.tolist()
    assert peak < full / 2, f"k-center allocated {peak} bytes on a {full}-byte memmap"
    scores = np.random.default_rng(1).random(N)
    got, peak = peak_bytes(lambda: deita_select(mm, scores, 2000, tau=0.6, block=1024))
    assert got.tolist() == deita_select(ram, scores, 2000, tau=0.6, block=1024).tolist()
    assert 0 < len(got) <= 2000
    assert peak < full / 2, f"DEITA allocated {peak} bytes on a {full}-byte memmap"


def test_selector_wrappers_read_embeddings_as_a_memmap(tmp_path) -> None:
    mm = clustered_npy(tmp_path / "e.npy", n=3000, d=32)
    records = [{"instruction": f"q{i}", "output": "a", "score": float(i % 17)} for i in range(3000)]

    def run(name: str, **opts) -> list[dict]:
        info = get("select", name)
        return info.func(records, RunContext(options=info.make_options(opts)))

    opts = get("select", "kcenter").make_options({"embeddings": str(tmp_path / "e.npy")})
    assert isinstance(load_embeddings(records, RunContext(options=opts), opts), np.memmap)
    out = run("kcenter", k="40", first_index="0", embeddings=str(tmp_path / "e.npy"))
    assert [r["_select_index"] for r in out] == kcenter_greedy(np.array(mm), 40, first_index=0).tolist()
    out = run("deita", budget="40", tau="0.5", score="score", embeddings=str(tmp_path / "e.npy"))
    scores = np.array([r["score"] for r in records])
    assert [r["_select_index"] for r in out] == deita_select(np.array(mm), scores, 40, 0.5).tolist()


def test_embedding_cache_is_read_back_as_a_memmap(tmp_path) -> None:
    records = [{"instruction": "Say hi", "output": "Hi!"}, {"instruction": "Add 2 and 2", "output": "4"}]
    first = embed_records(records, "local", cache_dir=tmp_path / "cache")
    again = embed_records(records, "local", cache_dir=tmp_path / "cache")
    assert isinstance(first, np.memmap) and isinstance(again, np.memmap)
    assert first.dtype == np.float32 and first.shape == (2, 384)
    np.testing.assert_array_equal(first, again)
