"""Helpers shared by the generators: model access, seeds, side files, documents."""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from instructkit.data.documents import Document, Passage, load_documents, passages_from, record_documents
from instructkit.data.io import Records
from instructkit.run.runner import RunContext


def word_count(text: str) -> int:
    return len(text.split())


def seeded(ctx: RunContext, *salt: Any) -> random.Random:
    """A random generator derived from the run's explicit seed and a salt (stable across runs)."""
    return random.Random(json.dumps([ctx.random_state, *salt], default=str))


def call_seed(ctx: RunContext, *salt: Any) -> int:
    """A per-call sampling seed derived from the run's seed (recorded in the cache key)."""
    return seeded(ctx, "call", *salt).randrange(2**31)


def side_path(ctx: RunContext, name: str) -> Path | None:
    if ctx.work_dir is None:
        return None
    return Path(ctx.work_dir) / f"{ctx.method or 'generate'}.{name}"


def write_side(ctx: RunContext, name: str, rows: Iterable[dict]) -> Path | None:
    """Write rows (e.g. rejected items with their raw model text) as JSONL in the work dir."""
    path = side_path(ctx, name)
    if path is None:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    return path


def documents_for(
    records: list[dict], ctx: RunContext, text_field: str, id_field: str | None = None
) -> list[Document]:
    """Documents from the input records (one per record) or, when there are none, from the input path."""
    if records:
        return record_documents(records if isinstance(records, Records) else Records(records), text_field, id_field)
    path = ctx.extras.get("input_path")
    if not path:
        raise ValueError(
            f"{ctx.method}: give documents (a file, a folder, or records with a {text_field!r} field)"
        )
    return load_documents(path, text_field=text_field, id_field=id_field)


def passages_for(
    records: list[dict], ctx: RunContext, text_field: str, max_tokens: int, id_field: str | None = None
) -> list[Passage]:
    """Documents chunked with the local tokenizer when the model is local, else the word estimate."""
    docs = documents_for(records, ctx, text_field, id_field)
    tokenizer = None
    llm = ctx.llm
    if llm is not None and not llm.dry_run and llm.supports("count_tokens"):
        # The model's own tokenizer (llama.cpp's for a GGUF: no transformers load for chunking).
        tokenizer = llm.count_tokens
    return passages_from(docs, max_tokens=max_tokens, tokenizer=tokenizer)


async def complete(llm: Any, messages: Any, *, raw: bool = False, **params: Any) -> dict[str, Any]:
    """One chat call (or, with `raw=True`, one raw-text completion of the prompt string, no chat
    template) as a JSON-serialisable row value: text, finish reason, completion tokens."""
    comp = await (llm.acomplete(messages, **params) if raw else llm.achat(messages, **params))
    return {
        "text": comp.text,
        "finish_reason": comp.finish_reason,
        "completion_tokens": comp.usage.completion_tokens,
    }


def require_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    """A clear error for an option outside its allowed values."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")


def run_registered(kind: str, name: str, records: list[dict], ctx: RunContext, options: dict[str, Any],
                   llm: Any = None) -> list[dict]:
    """Run another family's registered method (e.g. `select kcenter`) on `records` inside this run: a
    generator reuses selection or judging through the registry, never through a family's internals.
    The method journals under `<this method>.<name>` in the same work dir, with the run's seed and stats."""
    from instructkit.registry import get

    info = get(kind, name)
    sub = RunContext(llm=llm if llm is not None else ctx.llm, options=info.make_options(options),
                     method=f"{ctx.method or 'generate'}.{name}", work_dir=ctx.work_dir,
                     concurrency=ctx.concurrency, random_state=ctx.random_state, progress=ctx.progress,
                     stats=ctx.stats, extras=ctx.extras, stage_end=ctx.stage_end)  # fmt: skip
    return info.func(records, sub)
