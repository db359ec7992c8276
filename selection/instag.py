"""InsTag complexity-first diverse sampling (Lu et al. 2023, "#InsTag: Instruction Tagging for Analyzing SFT", 2308.07074).

Algorithm 1 of the paper (no official selection code exists): visit queries by tag count
(descending), take a query only if it adds a tag not yet covered in this pass, reset the covered set
at the start of every pass, until n are taken. Choices the paper leaves open, made explicit here:
ties in tag count keep the original order (stable sort); tags are compared after strip+lowercase
(normalize=True; False compares them verbatim); a pass adds nothing only when every remaining row
has no tags: then we stop, or with fill="complexity" top up with those rows in order. Cost is
O(passes x N) set tests; passes stay few unless many rows share one small tag set.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from instructkit.registry import method

from .common import as_indices, take


def _norm_tags(tags: Iterable | None, normalize: bool) -> frozenset:
    if tags is None:
        return frozenset()
    if isinstance(tags, str):
        tags = [t for t in tags.split(",")]
    out = []
    for t in tags:
        if isinstance(t, dict):  # InsTagger / ChatGPT output: {"tag": ..., "explanation": ...}
            t = t.get("tag", "")
        t = str(t)
        out.append(t.strip().lower() if normalize else t)
    return frozenset(t for t in out if t)


def instag_select(
    tags: Sequence[Iterable | None], n: int, fill: str = "stop", normalize: bool = True
) -> np.ndarray:
    """Indices in pick order (pass by pass). fill: "stop" or "complexity"."""
    sets = [_norm_tags(t, normalize) for t in tags]
    counts = np.array([len(s) for s in sets], dtype=np.int64)
    remaining = list(np.argsort(-counts, kind="stable"))
    n = min(int(n), len(sets))
    picks: list[int] = []
    while len(picks) < n and remaining:
        covered: set = set()
        left = []
        for i in remaining:
            s = sets[i]
            if len(picks) < n and not s <= covered:
                picks.append(int(i))
                covered |= s
            else:
                left.append(i)
        if len(left) == len(remaining):  # a pass that added nothing: no tags left to cover
            if fill == "complexity":
                picks.extend(int(i) for i in left[: n - len(picks)])
            elif fill != "stop":
                raise ValueError(f"fill must be stop or complexity, not {fill!r}")
            break
        remaining = left
    return as_indices(picks)


def tag_coverage(tags: Sequence[Iterable | None], idx: np.ndarray, normalize: bool = True) -> float:
    """|union of tags over the subset| / |union over all rows| (1.0 when nothing has tags)."""
    sets = [_norm_tags(t, normalize) for t in tags]
    universe = set().union(*sets) if sets else set()
    if not universe:
        return 1.0
    got = set().union(*(sets[int(i)] for i in idx)) if len(idx) else set()
    return len(got) / len(universe)


@dataclass
class InsTagOptions:
    n: int = 1000
    tags: str = "tags"  # column: a list of tags (strings or {"tag": ...}), or a comma-separated string
    fill: str = "stop"  # stop, or complexity: top up when no pass can add a tag
    normalize: bool = True


@method("select", "instag", options=InsTagOptions, needs_model=False)
def instag(records: list[dict], ctx) -> list[dict]:
    """InsTag: most tags first, only rows adding a new tag in each pass, until n."""
    o = ctx.options or InsTagOptions()
    idx = instag_select([r.get(o.tags) for r in records], o.n, o.fill, o.normalize)
    return take(records, idx)
