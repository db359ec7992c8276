"""Multi-turn rows (`messages`, ShareGPT `conversations`) for judges and scorers: which assistant
turns are scored, and how each becomes the (instruction, input, output) view every method reads.

Turn k's view: the user message it answers as the instruction, with the earlier turns (and a system
message) before it as a plain transcript (`turn_context history`, the default) or nothing
(`turn_context none`); its reply as the output. `turns last` (default) scores the last assistant
turn; `turns all` scores each of them. Judge and score methods never see chat rows when run through
`run.steps.execute`: it runs them on `views_of(records)` and folds their output back into the
original rows (`TurnViews.fold`), each column the method wrote taking the last turn's value and, with `turns all`,
`<column>_turns` the list over turns (a one-item list on Alpaca rows). A chat some of whose turns a
method drops is dropped. Called directly, `judge.common.triplet` gives the default view.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..models.cache import request_key
from .io import SHAREGPT_ROLES, Records, to_turns

CHAT_FIELDS = ("messages", "conversations")
VIEW_FIELDS = ("instruction", "input", "output")
TURNS = ("last", "all")
CONTEXTS = ("history", "none")
_ORIGIN = "_turn_view"  # which record and turn a method's output row came from (removed on folding)


@dataclass(frozen=True)
class TurnOptions:
    """`-o turns last|all` and `-o turn_context history|none`, taken by every judge and scorer."""

    turns: str = "last"
    context: str = "history"

    def __post_init__(self) -> None:
        if self.turns not in TURNS:
            raise ValueError(f"option turns must be one of {', '.join(TURNS)}, not {self.turns!r}")
        if self.context not in CONTEXTS:
            raise ValueError(f"option turn_context must be one of {', '.join(CONTEXTS)}, not {self.context!r}")


OPTION_HELP = [("turns", "last|all", "'last'"), ("turn_context", "history|none", "'history'")]  # (name, type, default)


def split_turn_options(values: Mapping[str, Any] | None) -> tuple[TurnOptions, dict[str, Any]]:
    """The turn options among a method's option values, and the rest for the method's own dataclass."""
    rest = dict(values or {})
    turns = TurnOptions(str(rest.pop("turns", "last")), str(rest.pop("turn_context", "history")))
    return turns, rest


def is_chat(record: Mapping[str, Any]) -> bool:
    """A `messages` / `conversations` row (a row that also has Alpaca fields is read as Alpaca)."""
    if "instruction" in record and ("output" in record or "response" in record):
        return False
    return any(isinstance(record.get(f), list) for f in CHAT_FIELDS)


def _system_of(record: Mapping[str, Any]) -> str:
    msgs = next((record[f] for f in CHAT_FIELDS if isinstance(record.get(f), list)), [])
    for m in msgs:
        if isinstance(m, dict) and SHAREGPT_ROLES.get(m.get("role") or m.get("from")) == "system":
            return str(m.get("content", m.get("value", "")))
    return ""


def transcript(system: str, earlier: list[tuple[str, str]], question: str) -> str:
    """The earlier turns and the current question as one plain-text instruction."""
    if not system and not earlier:
        return question
    lines = [f"System: {system}"] if system else []
    for q, a in earlier:
        lines += [f"User: {q}", f"Assistant: {a}"]
    lines.append(f"User: {question}")
    return "\n\n".join(lines)


def turn_views(record: Mapping[str, Any], context: str = "history") -> list[dict[str, str]]:
    """One {instruction, input, output} view per assistant turn of a chat row (a trailing question
    with no reply is left out unless it is the only turn); an Alpaca row's own fields as one view."""
    if not is_chat(record):
        instruction = record.get("instruction", "")
        output = record.get("output", record.get("response", ""))
        return [{"instruction": str(instruction), "input": str(record.get("input") or ""), "output": str(output)}]
    pairs = to_turns(record)
    if len(pairs) > 1 and pairs[-1][1] == "":
        pairs = pairs[:-1]
    system = _system_of(record) if context == "history" else ""
    views = []
    for k, (question, answer) in enumerate(pairs):
        earlier = pairs[:k] if context == "history" else []
        views.append({"instruction": transcript(system, earlier, question), "input": "", "output": answer})
    return views or [{"instruction": "", "input": "", "output": ""}]


def last_question(record: Mapping[str, Any]) -> tuple[list[dict], str, str] | None:
    """A chat row's (earlier messages, last user message, its reply or "") with OpenAI roles; None for
    other rows. Generators that rewrite a row rewrite this last turn and answer it after the rest."""
    if not is_chat(record):
        return None
    msgs = next(record[f] for f in CHAT_FIELDS if isinstance(record.get(f), list))
    norm = [{"role": SHAREGPT_ROLES.get(m.get("role") or m.get("from"), "user"),
             "content": str(m.get("content", m.get("value", "")))} for m in msgs if isinstance(m, dict)]  # fmt: skip
    last = max((k for k, m in enumerate(norm) if m["role"] == "user"), default=None)
    if last is None:
        return None
    reply = next((m["content"] for m in norm[last + 1 :] if m["role"] == "assistant"), "")
    return norm[:last], norm[last]["content"], reply


def chat_with(history: list[dict], question: str, answer: str) -> list[dict]:
    """`messages` of a rewritten chat: the earlier turns, the new last question and its answer."""
    return [*history, {"role": "user", "content": question}, {"role": "assistant", "content": answer}]


def last_view(record: Mapping[str, Any]) -> dict[str, str]:
    """The default view of a row: its last assistant turn, earlier turns as context."""
    return turn_views(record)[-1]


@dataclass
class TurnViews:
    """The turn views of some records, what a judge or scorer runs on in their place, and how its
    output rows fold back into the records (`fold`). Made by `views_of`; plain data, no driver."""

    records: list[dict]
    rows: Records  # the views, with the line each came from
    per_turn: bool  # `turns all`: every column also as `<column>_turns`
    owner: dict[str, tuple[int, int]]  # record id -> (record index, views of it)

    def fold(self, out: list[dict]) -> list[dict]:
        """The records with the columns the method wrote on their views, in the method's order; rows
        the method passed through (no `_turn_view`) as they are; a chat some of whose turns it dropped, dropped."""
        inputs = {row[_ORIGIN]: row for row in self.rows if _ORIGIN in row}
        grouped: dict[str, list[tuple[dict, dict]]] = {}
        order: list[Any] = []  # record ids at their first output row, and rows passed through, in the method's order
        for row in out:
            marker = row.get(_ORIGIN)
            if marker is None:
                order.append(row)
                continue
            rid = marker.rsplit(":", 1)[0]
            if rid not in grouped:
                grouped[rid] = []
                order.append(rid)
            grouped[rid].append((inputs[marker], {k: v for k, v in row.items() if k != _ORIGIN}))
        folded = []
        for item in order:
            if isinstance(item, dict):
                folded.append(item)
                continue
            index, n_views = self.owner[item]
            pairs = sorted(grouped[item], key=lambda p: int(p[0][_ORIGIN].rsplit(":", 1)[1]))
            if len(pairs) == n_views:  # else the method dropped one of this chat's turns: the chat goes
                folded.append(fold(self.records[index], pairs, self.per_turn))
        return folded


def views_of(records: list[dict], opts: TurnOptions | None = None) -> TurnViews | None:
    """The turn views a judge or scorer runs on in place of `records` (fold its output back with
    `TurnViews.fold`); None where it runs on them as they are (`turns last` and no chat row).

    Each view carries `_turn_view` = "<digest of its record>:<turn>" (with "#n" for the n-th copy of a
    record), so output rows find their record whatever the method drops or reorders, and a view's
    journal key depends on content, not position. Alpaca rows carry none, except under `turns all`."""
    opts = opts or TurnOptions()
    if opts.turns == "last" and not any(is_chat(r) for r in records):
        return None
    rows: list[dict] = []
    lines: list[int | None] = []
    owner: dict[str, tuple[int, int]] = {}
    copies: dict[str, int] = {}
    for i, rec in enumerate(records):
        line = records.line_of(i) if isinstance(records, Records) else i + 1
        if not is_chat(rec) and opts.turns == "last":
            rows.append(rec)
            lines.append(line)
            continue
        digest = request_key(rec)[:16]
        copies[digest] = copies.get(digest, 0) + 1
        rid = digest if copies[digest] == 1 else f"{digest}#{copies[digest]}"
        if is_chat(rec):
            views = list(enumerate(turn_views(rec, opts.context)))
            views = views if opts.turns == "all" else views[-1:]
            base = {k: v for k, v in rec.items() if k not in CHAT_FIELDS}
            picked = [{**base, **view, _ORIGIN: f"{rid}:{k}"} for k, view in views]
        else:
            picked = [{**rec, _ORIGIN: f"{rid}:0"}]
        owner[rid] = (i, len(picked))
        rows.extend(picked)
        lines.extend([line] * len(picked))
    source = records.source if isinstance(records, Records) else "<memory>"
    return TurnViews(records, Records(rows, source, lines), opts.turns == "all", owner)


def fold(record: dict, pairs: list[tuple[dict, dict]], per_turn: bool) -> dict:
    """`record` with the columns a method wrote on its turn views: the last turn's values, and with
    `per_turn` the list over turns as `<column>_turns`; errors of every turn kept in `_errors`."""
    out = dict(record)
    changed: list[str] = []
    for view, new in pairs:
        for key, value in new.items():
            if key not in VIEW_FIELDS and key != _ORIGIN and (key not in view or view[key] != value):
                if key not in changed:
                    changed.append(key)
    for key in changed:
        if key == "_errors":
            errors = dict(record.get("_errors") or {})
            for n, (_, new) in enumerate(pairs, 1):
                for stage, message in (new.get("_errors") or {}).items():
                    errors[stage if len(pairs) == 1 else f"{stage} (turn {n})"] = message
            out["_errors"] = errors
            continue
        out[key] = pairs[-1][1].get(key)
        if per_turn:
            out[f"{key}_turns"] = [new.get(key) for _, new in pairs]
    return out
