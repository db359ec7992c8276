"""Row helpers the families share: record fields, the run's model, chat messages, constrained replies, and
merging results with explicit null columns."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from instructkit.data.turns import last_view
from instructkit.run.runner import RowResult, RunContext, merge_results


def triplet(rec: dict) -> tuple[str, str, str]:
    """(instruction, input, output) of a record: Alpaca fields as they are; a chat row's last assistant
    turn, the earlier turns before its question (instructkit.data.turns; `-o turns all` scores each)."""
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
    """The run's model, or a clear error when a method that needs one was started without it."""
    if ctx.llm is None:
        raise ValueError(f"{ctx.method or 'this method'} needs a model (--model)")
    return ctx.llm


def chat_messages(system: str, user: str) -> list[dict]:
    """[system, user] messages; an empty system template (a user's choice) sends no system message."""
    head = [{"role": "system", "content": system}] if system.strip() else []
    return [*head, {"role": "user", "content": user}]


CONSTRAINED_MODES = ("auto", "off")


def use_constraint(llm: Any, mode: str, method: str) -> bool:
    """Whether `-o constrained` (auto|off) asks this model for schema-constrained output: `auto` where
    the backend honours a JSON Schema (grammar on llama.cpp and transformers, `response_format` on
    servers), `off` never (the method's own free-text format, as its paper)."""
    if mode not in CONSTRAINED_MODES:
        raise ValueError(f"{method}: -o constrained must be auto or off, not {mode!r}")
    return mode == "auto" and bool(llm.supports_json_schema)


def score_schema(scores: list[float], *, explanation: str = "explanation", score_first: bool = True) -> dict:
    """The JSON Schema of a constrained rating: `score` restricted to the method's scale (an enum of
    its allowed values) and a free-text `explanation`, in the order the method's format puts them."""
    fields = [("score", {"enum": list(scores)}), (explanation, {"type": "string"})]
    if not score_first:
        fields.reverse()
    return {
        "type": "object",
        "properties": dict(fields),
        "required": [name for name, _ in fields],
        "additionalProperties": False,
    }


def with_json_reply(msgs: list[dict], schema: dict) -> list[dict]:
    """`msgs` with one sentence asking for the constrained JSON form (the grammar enforces it; saying
    so keeps the model's words and the enforced form in agreement)."""
    keys = ", ".join(f'"{k}"' for k in schema.get("properties", {}))
    last = msgs[-1]
    note = f"\n\nReply with one JSON object with the keys {keys}, in that order."
    return [*msgs[:-1], {**last, "content": last["content"] + note}]
