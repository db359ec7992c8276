"""Tree-Instruct: make instructions more complex by adding nodes to their semantic tree, then answer them.

Paper: Zhao et al., "A Preliminary Study of the Intrinsic Relationship between Complexity and Alignment"
(LREC-COLING 2024, arXiv 2308.05696); behaviour follows xiuzbl/Tree-Instruct
(generate_tree_instructions.py, generate_tree_responses.py).

As the official code: one model call parses the instruction into a tree, adds N nodes (3 by default)
and writes it back, under the prompt's constraints (at most 100 words, at least 12 words longer, no
procedure words, no answer); 6 nodes come from repeated application (`steps=2`, as the authors
produced their 6-node set; how the 10-node set was made is not in the code: use `n_nodes=10`, or run
again with `n_nodes=4` on the 6-node output); rewriter max_tokens 400 and
temperature 1.0 (the API default the code relied on); leading/trailing quotes are stripped; an empty or
"NONE" reply fails; then one response call per new instruction (max_tokens 1500).

`-o preset official` (`rules=official`) prepares the old instruction and keeps replies as the official
script does (one quote cut from each end, then whitespace; every reply but "NONE" and the API's error
text kept as returned: tests/golden/tree_instruct).
Deviations, and why: the prompts are our own wording (with our own one-shot example). By default a rewrite fails,
is dropped and counted (with its raw text in `tree_instruct.failed.jsonl`) when it is empty, unchanged,
not longer than the old instruction, or leaks procedure words; `strict_length=True` also enforces the
prompt's +12 / <= 100 word limits, which the official code only asks for. The responder sees the input
after a blank line instead of the official `instruction + '"' + input + '"'` (no separator).
Chat rows (`messages`, ShareGPT; beyond the paper): the last user turn is rewritten and answered after
the earlier turns, and the row stays a chat (`messages`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar

from instructkit.data.turns import chat_with, last_question
from instructkit.registry import method
from instructkit.run.manifest import write_method_summary
from instructkit.run.provenance import provenance
from instructkit.run.runner import RunContext
from instructkit.shared.rows import llm_of
from instructkit.templates import render

from .common import call_seed, complete, require_choice, word_count, write_side

TEMPLATES = ("tree_instruct_rewrite.jinja", "tree_instruct_respond.jinja")
NUMBER_WORDS = {1: "One", 2: "Two", 3: "Three", 4: "Four", 5: "Five", 6: "Six", 7: "Seven", 8: "Eight",
                9: "Nine", 10: "Ten"}  # fmt: skip
LEAK_PATTERNS = (r"semantic pars", r"\btree[- ]?[12]\b", r"\bnew nodes?\b", r"\badded nodes?\b",
                 r"\badding (?:one|two|three|four|five|six|seven|eight|nine|ten|\d+)\b")  # fmt: skip


@dataclass
class TreeInstructOptions:
    n_nodes: int = 3  # nodes added per step
    steps: int = 1  # repeated applications (2 steps of 3 nodes = the paper's 6-node set)
    temperature: float = 1.0
    max_tokens: int = 400
    min_added_words: int = 12  # prompt constraint; enforced only with strict_length
    max_words: int = 100  # prompt constraint; enforced only with strict_length
    strict_length: bool = False
    respond: bool = True
    response_max_tokens: int = 1500
    response_temperature: float = 1.0
    rules: str = "ours"  # "ours" (cleaning and filters) | "official" (generate_tree_instructions.py's)

    # generate_tree_instructions.py: one quote cut from each end of the old instruction, then whitespace; a
    # reply kept as returned unless it is "NONE" or the API's error text
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"official": {"rules": "official"}}


def rewrite_failure(old: str, new: str, opts: TreeInstructOptions) -> str | None:
    """Why a rewrite fails (None when it is accepted)."""
    if not new or new.strip().upper() == "NONE":
        return "empty"
    if " ".join(new.lower().split()) == " ".join(old.lower().split()):
        return "unchanged"
    if word_count(new) <= word_count(old):
        return "not_longer"
    old_l, new_l = old.lower(), new.lower()
    for pat in LEAK_PATTERNS:
        if re.search(pat, new_l) and not re.search(pat, old_l):
            return "procedure_leak"
    if opts.strict_length:
        if word_count(new) < word_count(old) + opts.min_added_words:
            return "too_little_added"
        if word_count(new) > opts.max_words:
            return "too_long"
    return None


OFFICIAL_ERROR_TEXT = "undefinedsome thing error, try again later"  # a reply the official loop discards


def prepare_instruction(text: str, rules: str = "ours") -> str:
    """The old instruction as the rewriter sees it: "official" cuts one double quote from each end, then
    whitespace (`worker` in generate_tree_instructions.py); "ours" cuts whitespace, then every quote."""
    if rules == "official":
        if text[:1] == '"':
            text = text[1:]
        if text[-1:] == '"':
            text = text[:-1]
        return text.strip()
    return text.strip().strip('"')


def official_rewrite_failure(new: str) -> str | None:
    """The official loop writes every reply but "NONE" and the API's error text."""
    if not new or new == "NONE":
        return "empty"
    return "api_error_text" if OFFICIAL_ERROR_TEXT in new else None


def clean_rewrite(text: str) -> str:
    """The reply without surrounding whitespace, quotes, or a repeated "New instruction:" label."""
    text = re.sub(r"^\s*(?:\*\*)?new instruction(?:\*\*)?\s*:\s*", "", text.strip(), flags=re.IGNORECASE)
    return text.strip().strip('"').strip()


def _seed_row(i: int, rec: dict, rules: str = "ours") -> dict:
    """The row a record starts as; a chat row's last question is rewritten, its earlier turns kept."""
    chat = last_question(rec)
    if chat is not None:
        text = prepare_instruction(chat[1], rules)
        return {"id": str(rec.get("id", i)), "old": text, "current": text, "input": "", "old_output": chat[2],
                "history": chat[0]}  # fmt: skip
    text = rec.get("new", rec.get("instruction"))
    if not isinstance(text, str):
        raise ValueError(f"record has no instruction (fields: {sorted(rec)})")
    text = prepare_instruction(text, rules)
    return {"id": str(rec.get("id", i)), "old": text, "current": text,
            "input": str(rec.get("input") or ""), "old_output": rec.get("output")}  # fmt: skip


@method("generate", "tree_instruct", options=TreeInstructOptions, reads=("instruction|new",))
def tree_instruct(records: list[dict], ctx: RunContext) -> list[dict]:
    """Tree-Instruct: add N nodes to each instruction's semantic tree (repeatable), then answer it."""
    opts = ctx.options or TreeInstructOptions()
    llm = llm_of(ctx)
    word = NUMBER_WORDS.get(opts.n_nodes, str(opts.n_nodes))
    require_choice("rules", opts.rules, ("ours", "official"))
    rows = [_seed_row(i, r, opts.rules) for i, r in enumerate(records)]
    parents = {row["id"]: rec for row, rec in reversed(list(zip(rows, records)))}  # first row of an id wins
    failed: list[dict] = []
    reasons: dict[str, int] = {}

    for step in range(1, opts.steps + 1):

        async def rewrite(row: dict, step: int = step) -> dict:
            msg = render(TEMPLATES[0], instruction=row["current"], n_nodes_word=word,
                         min_added_words=opts.min_added_words, max_words=opts.max_words)  # fmt: skip
            return await complete(llm, msg, temperature=opts.temperature, max_tokens=opts.max_tokens,
                                  seed=call_seed(ctx, "tree", step, row["id"]))  # fmt: skip

        results = ctx.map(rows, rewrite, stage=f"rewrite-{step}")
        survivors = []
        for row, res in zip(rows, results):
            if not res.ok:
                reason, raw, new = ("pending" if res.pending else "call_failed"), None, ""
            else:
                raw = res.value["text"]
                if opts.rules == "official":
                    new, reason = raw, official_rewrite_failure(raw)
                else:
                    new = clean_rewrite(raw)
                    reason = rewrite_failure(row["current"], new, opts)
            if reason is not None:
                reasons[reason] = reasons.get(reason, 0) + 1
                failed.append({"id": row["id"], "step": step, "reason": reason, "instruction": row["current"],
                               "raw": raw, "error": res.error})  # fmt: skip
                continue
            survivors.append({**row, "current": new, "steps_done": step})
        rows = survivors

    answers: list[Any] = [None] * len(rows)
    if opts.respond and rows:

        async def respond(row: dict) -> dict:
            text = row["current"]
            if row["input"].strip() and "no input" not in row["input"].lower():
                text = f"{text}\n\n{row['input']}"
            ask = render(TEMPLATES[1], instruction=text)
            if "history" in row:  # a chat: answered after its earlier turns
                ask = [*row["history"], {"role": "user", "content": ask}]
            return await complete(llm, ask, temperature=opts.response_temperature,
                                  max_tokens=opts.response_max_tokens, seed=call_seed(ctx, "tree-answer", row["id"]))  # fmt: skip

        answers = [r.value["text"].strip() if r.ok else None for r in ctx.map(rows, respond, stage="respond")]
    out = []
    for row, answer in zip(rows, answers):
        if opts.respond and not answer:
            reasons["no_response"] = reasons.get("no_response", 0) + 1
            failed.append(
                {"id": row["id"], "step": "respond", "reason": "no_response", "instruction": row["current"]}
            )
            continue
        text = ({"messages": chat_with(row["history"], row["current"], answer or "")} if "history" in row
                else {"instruction": row["current"], "input": row["input"], "output": answer or ""})
        out.append({"id": row["id"], **text, "old_instruction": row["old"], "old_output": row["old_output"],
                    "tree_nodes_added": opts.n_nodes * opts.steps, "tree_steps": opts.steps,
                    "provenance": provenance(ctx, parents[row["id"]], parent_id=row["id"])})  # fmt: skip
    write_side(ctx, "failed.jsonl", failed)
    write_method_summary(ctx, "generate", {"inputs": len(records), "kept": len(out), "failed": reasons}, options=opts,
                         templates=TEMPLATES if opts.respond else TEMPLATES[:1], echo=True)
    return out
