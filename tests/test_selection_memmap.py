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


def mapped_bytes(path) -> int:
    """Bytes of `path` this process has resident through its mappings (Linux's /proc/self/smaps)."""
    total, inside = 0, False
    with open("/proc/self/smaps", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            first = line.split(maxsplit=1)[0]
            if "-" in first and not first.endswith(":"):  # a mapping's header line
                inside = line.rstrip().endswith(str(path))
            elif inside and first == "Rss:":
                total += int(line.split()[1]) * 1024
    return total


def test_release_pages_unmaps_a_read_only_file_and_keeps_its_values(tmp_path) -> None:
    """A pass over a memory-mapped file leaves about one block mapped, not the file; values read again
    are the same (the page cache still holds them); arrays in memory and writable maps are left alone."""
    from instructkit.selection.common import read_blocks, release_pages, row_norms_sq

    path = tmp_path / "e.npy"
    mm = clustered_npy(path)  # 41 MB
    want = np.einsum("ij,ij->i", np.array(mm, dtype=np.float64), np.array(mm, dtype=np.float64))
    assert mapped_bytes(path) >= mm.nbytes * 0.9  # np.array read every page
    release_pages(mm)
    assert mapped_bytes(path) == 0
    most = 0
    for _, hi, rows in read_blocks(mm, 1024):  # blocks of 1 MB
        assert float(rows[-1, -1]) == float(mm[hi - 1, -1])
        most = max(most, mapped_bytes(path))
    assert most < mm.nbytes / 4  # a block and what the kernel maps around it (fault-around, large folios)
    assert np.array_equal(row_norms_sq(mm, np.dtype(np.float64), block=1024), want)
    assert mapped_bytes(path) < mm.nbytes / 4
    release_pages(mm[5000:6000])  # a slice releases its own rows
    ram = np.array(mm)
    release_pages(ram)  # no mapping: nothing to do
    rw = np.load(path, mmap_mode="r+")
    rw[0, 0] = 7.0
    release_pages(rw)  # a writable map's pages may hold what the file does not: kept
    assert rw[0, 0] == 7.0


def test_page_budget_releases_every_so_many_rows_once_over_budget(tmp_path, monkeypatch) -> None:
    """`PageBudget` looks every `every` rows read, and releases the map only when the process's mapped
    file pages pass the budget; k-center's picks are the same when it releases at every look."""
    import functools

    import instructkit.selection.common as common
    import instructkit.selection.kcenter as kc
    from instructkit.selection.common import PageBudget

    path = tmp_path / "e.npy"
    mm = clustered_npy(path)
    np.array(mm)
    over, under = PageBudget(mm, budget=0, every=10), PageBudget(mm, budget=1 << 50, every=10)
    under.took(10)
    assert mapped_bytes(path) >= mm.nbytes * 0.9
    over.took(9)
    assert mapped_bytes(path) >= mm.nbytes * 0.9  # one row short of a look
    over.took(1)
    assert mapped_bytes(path) == 0
    want = kcenter_greedy(np.array(mm), 300, first_index=5, tile=1 << 18)
    releases = []
    real = common.release_pages
    monkeypatch.setattr(common, "release_pages", lambda x, *a: (releases.append(a), real(x, *a)))
    monkeypatch.setattr(kc, "PageBudget", functools.partial(common.PageBudget, budget=0, every=64))
    assert kcenter_greedy(mm, 300, first_index=5, tile=1 << 18).tolist() == want.tolist()
    assert () in releases  # the budget released the whole map
