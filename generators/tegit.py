"""TEGIT: instruction-tuning tasks designed from human-written passages, then accepted or rejected.

Paper: Chen et al., "TeGit: Generating High-Quality Instruction-Tuning Data with Text-Grounded Task
Design" (arXiv 2309.05447 v1; NAACL 2024 as DoG-Instruct); released code Bahuia/Dog-Instruct @
b22a3ec9191a (`inference.py`: the generator, a LoRA on Llama-2-7b).

A task generator writes one task (instruction, input, output) from each passage, and a task
discriminator accepts or rejects it; only accepted tasks are written. `-o preset official` sends the
released wrapper's input byte for byte as a raw completion with no chat template (the Alpaca prompt
around "Design a task based on the given text.\\n" + passage) with its decoding (T 0, top_p 0.95, 2048
tokens), for `-m` pointing at the released weights; its `#instruction#: .. #input#: .. #output#: ..`
reply is read as `convert_response_to_task` does. Deviations, and why: the paper's fine-tuned
discriminator is not released, so any chat model plays it through our template (`-o
discriminator_model` names another model, e.g. a served checkpoint); by default any chat model also
plays the generator through our template (same three labels); a reply without an instruction or an
output is dropped and counted (the released script keeps an empty task when its pattern fails), and
an unreadable verdict rejects the task with its status. Decoding of the discriminator (T 0, 256
tokens) and the passage size are ours.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar

from instructkit.models.llm import is_placeholder
from instructkit.registry import method
from instructkit.run.manifest import write_method_summary
from instructkit.run.provenance import provenance
from instructkit.run.runner import RunContext
from instructkit.shared.rows import llm_of
from instructkit.templates import render

from .common import call_seed, passages_for, require_choice, write_side

TEMPLATES = ("tegit_generate.jinja", "tegit_discriminate.jinja")
# The released wrapper's trained input (inference.py): the Alpaca prompt around the wrapping instruction.
ALPACA_PROMPT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request."
    "\n\n### Instruction:\n{}\n\n### Response:\n"
)
WRAP_INSTRUCTION = "Design a task based on the given text.\n{}"
_LABEL = re.compile(r"#(instruction|input|output)#:")
_VERDICT = re.compile(r"verdict\W*(accept|reject)", re.IGNORECASE)
_REASON = re.compile(r"reason\W*(.+)", re.IGNORECASE)


def native_prompt(passage: str) -> str:
    """The released wrapper's input for one passage, byte for byte."""
    return ALPACA_PROMPT.format(WRAP_INSTRUCTION.format(passage))


def parse_task(text: str) -> tuple[dict[str, str] | None, str]:
    """(instruction, input, output) from a `#instruction#: .. #input#: .. #output#: ..` reply, or None
    and why; each field runs to the next label and is stripped of spaces, quotes and newlines at both
    ends as the released parser does (which, unlike this, lets an instruction swallow an `#output#`
    that follows it on a new line without an `#input#`)."""
    body = text.strip()
    if body.endswith("</s>"):
        body = body[: -len("</s>")]
    marks = list(_LABEL.finditer(body))
    if not marks or marks[0].group(1) != "instruction":
        return None, "unparsed"
    task = dict.fromkeys(("instruction", "input", "output"), "")
    for m, nxt in zip(marks, [*marks[1:], None]):
        if not task[m.group(1)]:
            task[m.group(1)] = body[m.end() : nxt.start() if nxt else len(body)].strip(" ").strip(' "\n')
    if not task["instruction"]:
        return None, "empty_instruction"
    if not task["output"]:
        return None, "empty_output"
    return task, "ok"


def parse_verdict(text: str) -> tuple[str | None, str | None]:
    """("accept" | "reject" | None, the reason)."""
    m = _VERDICT.search(text)
    verdict = m.group(1).lower() if m else None
    if verdict is None:
        first = text.strip().split(maxsplit=1)
        word = first[0].strip(".:,*").lower() if first else ""
        verdict = word if word in ("accept", "reject") else None
    r = _REASON.search(text)
    return verdict, (r.group(1).strip() if r else None)


@dataclass
class TegitOptions:
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # inference.sh: the wrapper's format over raw completion, T 0, top_p 0.95, 2048 tokens.
        "official": {"mode": "native", "temperature": 0.0, "top_p": 0.95, "max_tokens": 2048},
    }

    mode: str = "chat"  # chat: our template for any chat model | native: the released wrapper's raw format
    text_field: str = "text"
    id_field: str | None = None
    max_passage_tokens: int = 512
    max_passages: int = 0  # 0: all
    temperature: float = 0.0
    top_p: float = 0.95
    max_tokens: int = 512
    discriminate: bool = True
    discriminator_model: str | None = None  # default: the run's model
    discriminator_temperature: float = 0.0
    discriminator_max_tokens: int = 256
    keep_rejected: bool = False  # also return rejected tasks (tegit_verdict "reject")


@method("generate", "tegit", options=TegitOptions, reads=("{text_field}",))
def tegit(records: list[dict], ctx: RunContext) -> list[dict]:
    """TEGIT: a task generator designs a task from each passage; a task discriminator accepts or rejects it."""
    opts = ctx.options or TegitOptions()
    require_choice("tegit: mode", opts.mode, ("chat", "native"))
    llm = llm_of(ctx)
    judge = llm.derive(opts.discriminator_model) if opts.discriminator_model else llm
    passages = passages_for(records, ctx, opts.text_field, opts.max_passage_tokens, opts.id_field)
    if opts.max_passages > 0:
        passages = passages[: opts.max_passages]
    items = [{"doc_id": p.doc_id, "passage_index": p.passage_index, "text": p.text} for p in passages]

    async def one(item: dict) -> dict:
        params = {"temperature": opts.temperature, "top_p": opts.top_p, "max_tokens": opts.max_tokens,
                  "seed": call_seed(ctx, "tegit", item["doc_id"], item["passage_index"])}  # fmt: skip
        if opts.mode == "native":
            comp = await llm.acomplete(native_prompt(item["text"]), **params)
        else:
            comp = await llm.achat(render(TEMPLATES[0], passage=item["text"]), **params)
        if is_placeholder(comp):  # dry run: walk the discriminator as if the task parsed
            task, status = {"instruction": comp.text, "input": "", "output": comp.text}, "ok"
        else:
            task, status = parse_task(comp.text)
        out: dict[str, Any] = {"raw": comp.text, "status": status, "task": task}
        if task is None or not opts.discriminate:
            return out
        ask = render(TEMPLATES[1], passage=item["text"], **task)
        dcomp = await judge.achat(ask, temperature=opts.discriminator_temperature,
                                  max_tokens=opts.discriminator_max_tokens)  # fmt: skip
        verdict, reason = parse_verdict(dcomp.text)
        return {**out, "verdict": verdict, "reason": reason, "dis_raw": dcomp.text,
                "status": {"accept": "accepted", "reject": "rejected"}.get(verdict or "", "verdict_unparsed")}  # fmt: skip

    out, dropped, statuses = [], [], {}
    for item, res in zip(items, ctx.map(items, one, stage="tasks")):
        value = res.value if res.ok and not res.estimated else {}
        status = value.get("status") or ("pending" if res.pending or res.estimated else "call_failed")
        statuses[status] = statuses.get(status, 0) + 1
        keep = status == "accepted" or (status == "ok" and not opts.discriminate) or (
            opts.keep_rejected and status == "rejected")  # fmt: skip
        if not keep:
            dropped.append({"doc_id": item["doc_id"], "passage_index": item["passage_index"], "status": status,
                            "raw": value.get("raw"), "dis_raw": value.get("dis_raw"), "error": res.error})  # fmt: skip
            continue
        task = value["task"]
        out.append({**task, "doc_id": item["doc_id"], "passage_index": item["passage_index"],
                    "tegit_verdict": value.get("verdict"), "tegit_reason": value.get("reason"),
                    "provenance": provenance(ctx, doc_id=item["doc_id"], passage_index=item["passage_index"])})  # fmt: skip
    write_side(ctx, "dropped.jsonl", dropped)
    counts = {"passages": len(items), "statuses": statuses, "kept": len(out)}
    templates = [t for t, used in zip(TEMPLATES, (opts.mode == "chat", opts.discriminate)) if used]
    write_method_summary(ctx, "generate", counts, options=opts, templates=templates, echo=True)
    return out
