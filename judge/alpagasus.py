"""AlpaGasus rating: one 0-5 score per (instruction, input, output) on one dimension, keep >= 4.5.

Paper: Chen et al., "AlpaGasus: Training a Better Alpaca with Fewer Data" (ICLR 2024, arXiv 2307.08701).
Deviations: the prompt is our own wording of the same structure (three headed sections, 0-5 scale,
score alone on the first line, then an explanation); the parser accepts "Score: 4.5", "Score:4.5",
"4.5/5" and "4.5 out of 5" where the reproduction crashed or truncated, refuses out-of-range values,
and never reads lines echoed from the prompt; an unparseable reply is a null score with its status
(not -1), counted in the run summary. Rows keep their order; `alpagasus_keep` marks the filter.
"""

from __future__ import annotations

from dataclasses import dataclass

from instructkit.io import INSTRUCTION_FIELD, RESPONSE_FIELD
from instructkit.registry import method
from instructkit.runner import RunContext
from instructkit.templates import render

from .common import chat_messages, finish, llm_of, triplet
from .parsing import parse_score, report, usage_columns

PREFIX = "alpagasus"
COLUMNS = [f"{PREFIX}_{c}" for c in ("score", "raw", "parse", "keep", "tokens", "cost", "calls")]


@dataclass
class AlpagasusOptions:
    threshold: float = 4.5  # keep rows with score >= threshold
    dimension: str = "accuracy"  # the paper's main dimension ("helpfulness" was its alternative)
    max_tokens: int = 256
    temperature: float = 0.0
    template: str | None = None  # a user template file in place of prompts/alpagasus.jinja
    system_template: str | None = None


def rating_messages(rec: dict, opts: AlpagasusOptions) -> list[dict]:
    instruction, inp, output = triplet(rec)
    system = render("alpagasus_system.jinja", path=opts.system_template)
    user = render(
        "alpagasus.jinja",
        path=opts.template,
        instruction=instruction,
        input=inp,
        output=output,
        dimension=opts.dimension,
    )
    return chat_messages(system, user)


@method("judge", PREFIX, options=AlpagasusOptions, reads=(INSTRUCTION_FIELD, RESPONSE_FIELD))
def alpagasus(records: list[dict], ctx: RunContext) -> list[dict]:
    """AlpaGasus: rate each triple 0-5 on accuracy (score first line); keep >= threshold."""
    opts = ctx.options or AlpagasusOptions()
    llm = llm_of(ctx)

    async def one(rec: dict) -> dict:
        msgs = rating_messages(rec, opts)
        comp = await llm.achat(msgs, temperature=opts.temperature, max_tokens=opts.max_tokens)
        parsed = parse_score(comp.text, 0, 5, prompt=msgs[-1]["content"], first_line=True)
        return {
            f"{PREFIX}_score": parsed.value,
            f"{PREFIX}_raw": comp.text,
            f"{PREFIX}_parse": parsed.status,
            f"{PREFIX}_keep": parsed.value is not None and parsed.value >= opts.threshold,
            **usage_columns(PREFIX, [comp]),
        }

    out = finish(records, ctx.map(records, one, stage="rate"), "rate", PREFIX, COLUMNS)
    kept = sum(bool(r.get(f"{PREFIX}_keep")) for r in out)
    report(out, PREFIX, ctx, {"threshold": opts.threshold, "kept": kept})
    return out
