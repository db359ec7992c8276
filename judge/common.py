"""Row helpers shared by the judges: record fields, chat messages, merging with explicit null columns."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from instructkit.runner import RowResult, RunContext, merge_results
from instructkit.turns import last_view


def triplet(rec: dict) -> tuple[str, str, str]:
    """(instruction, input, output) of a record: Alpaca fields as they are; a chat row's last assistant
    turn, the earlier turns before its question (instructkit.turns; `-o turns all` scores each)."""
    view = last_view(rec)
    return view["instruction"], view["input"], view["output"]


def finish(
    records: list[dict], results: list[RowResult], stage: str, prefix: str, columns: Iterable[str]
) -> list[dict]:
    """Merge row results; a row whose call failed still gets every column (null) and parse "error"."""
    out = merge_results(records, results, stage)
    for rec, res in zip(out, results):
        if not res.ok:
            for col in columns:
                rec.setdefault(col, None)
            rec[f"{prefix}_parse"] = "pending" if res.pending else "error"
    return out


def llm_of(ctx: RunContext) -> Any:
    if ctx.llm is None:
        raise ValueError(f"{ctx.method or 'this judge'} needs a model (--model)")
    return ctx.llm


def chat_messages(system: str, user: str) -> list[dict]:
    """[system, user] messages; an empty system template (a user's choice) sends no system message."""
    head = [{"role": "system", "content": system}] if system.strip() else []
    return [*head, {"role": "user", "content": user}]
