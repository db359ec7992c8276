"""Per-row provenance: where a generated or transformed row came from, in one `provenance` column.

A generator gives every row it writes `provenance(ctx, ...)`: the step and method that made it, the
identity of the model that wrote it, and where its content came from (document and passage, seed
tasks, parent row). A row made from another row keeps that row's provenance under `parent`, so a chain
of steps (documents -> Bonito -> Evol-Instruct) traces back to the first document or seed. Judges and
selectors copy rows whole, so the column survives the pipeline to the export.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

COLUMN = "provenance"
SOURCE_KEYS = ("doc_id", "passage_index", "seed_id", "seed_ids")


def model_label(identity: Any) -> str | None:
    """A model identity ({"family", "model", "endpoint"}) as one short string: `family:model[@endpoint]`."""
    if identity is None or isinstance(identity, str):
        return identity
    if isinstance(identity, Mapping):
        label = f"{identity.get('family', '?')}:{identity.get('model', '?')}"
        return label + (f"@{identity['endpoint']}" if identity.get("endpoint") else "")
    return str(identity)


def model_identity(ctx: Any) -> Any:
    """The identity of the run's model (its spec in a dry run, None without one); never raises."""
    llm = ctx.llm
    if llm is None:
        return None
    if getattr(llm, "dry_run", False):
        return llm.spec
    try:
        return llm.identity
    except Exception as exc:  # identity must never sink a finished run
        return f"{llm.spec} ({type(exc).__name__})"


def provenance(ctx: Any, parent: Mapping[str, Any] | None = None, **source: Any) -> dict[str, Any]:
    """The provenance of one row made by the method running in `ctx`.

    `source`: where its content came from (doc_id, passage_index, seed_id, seed_ids, parent_id, ...;
    None values are left out). `parent`: the input row it was made from, whose own provenance is kept."""
    extras = getattr(ctx, "extras", None) or {}
    prov: dict[str, Any] = {"step": extras.get("step") or ctx.method, "method": ctx.method,
                            "model": model_label(model_identity(ctx))}  # fmt: skip
    prov.update({k: v for k, v in source.items() if v is not None})
    if parent is not None and isinstance(parent.get(COLUMN), Mapping):
        prov["parent"] = dict(parent[COLUMN])
    return prov


def trace(row: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """The row's provenance, then its parent's, back to the first step that made it."""
    prov = row.get(COLUMN)
    while isinstance(prov, Mapping):
        yield dict(prov)
        prov = prov.get("parent")


def origin(row: Mapping[str, Any]) -> dict[str, Any]:
    """Where the row's content first came from: the earliest document, passage and seed in its trace,
    with the methods and models that made it, first step first."""
    chain = list(trace(row))[::-1]
    out: dict[str, Any] = {}
    for prov in chain:
        out.update({k: prov[k] for k in SOURCE_KEYS if k in prov and k not in out})
    out["steps"] = [{"step": p.get("step"), "method": p.get("method"), "model": p.get("model")} for p in chain]
    return out
