"""LIFT quality scores: accuracy, explanation, clarity, difficulty and length, each 1-10, in one reply.

Paper: Xu et al., "Rethinking the Instruction Quality: LIFT is What You Need" (arXiv 2312.11508), the
quality step of its curation (GPT-4 scores the five aspects; the subset is reselected on them). No
prompt or code is released: the prompt is our own wording, the 1-10 scale ours, and the row's
`lift_score` is the mean of the five (null, with its status, unless all five parse). Each aspect is
read from its labelled line ("Accuracy: 8", "Accuracy - 8/10"); a value outside 1-10 is no value.
`-o constrained auto` asks for JSON {accuracy, explanation, clarity, difficulty, length}, each an enum
of 1..10, where the backend constrains output.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from instructkit.data.io import INSTRUCTION_FIELD, RESPONSE_FIELD
from instructkit.models import extract_json
from instructkit.registry import method
from instructkit.run.runner import RunContext
from instructkit.shared.rows import finish, llm_of, triplet, use_constraint, with_json_reply
from instructkit.shared.scores import report, usage_columns
from instructkit.templates import render

PREFIX = "lift"
ASPECTS = ("accuracy", "explanation", "clarity", "difficulty", "length")
SCALE = list(range(1, 11))
SCHEMA = {"type": "object", "properties": {a: {"enum": SCALE} for a in ASPECTS}, "required": list(ASPECTS)}
COLUMNS = [f"{PREFIX}_{c}" for c in ("score", "scores", "raw", "parse", "tokens", "cost", "calls")]


@dataclass
class LiftScoreOptions:
    max_tokens: int = 64
    temperature: float = 0.0
    constrained: str = "off"  # off: five labelled lines | auto: JSON with each aspect an enum of 1-10
    template: str | None = None  # a user template file in place of prompts/lift_score.jinja


def parse_aspects(text: str, json_reply: bool = False) -> tuple[dict[str, float | None], str]:
    """Each aspect's 1-10 value (None where missing or out of range) and "ok" when all five are read."""
    values: dict[str, float | None] = dict.fromkeys(ASPECTS)
    if json_reply:
        try:
            obj = extract_json(text)
        except ValueError:
            obj = None
        for a in ASPECTS:
            v = obj.get(a) if isinstance(obj, dict) else None
            values[a] = float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and 1 <= v <= 10 else None
    else:
        for a in ASPECTS:
            m = re.search(rf"\b{a}\b\W{{0,4}}(\d+(?:\.\d+)?)", text, re.IGNORECASE)
            v = float(m.group(1)) if m else None
            values[a] = v if v is not None and 1 <= v <= 10 else None
    missing = [a for a in ASPECTS if values[a] is None]
    return values, "ok" if not missing else ("unparsed" if len(missing) == len(ASPECTS) else "partial")


@method("judge", PREFIX, options=LiftScoreOptions, reads=(INSTRUCTION_FIELD, RESPONSE_FIELD))
def lift(records: list[dict], ctx: RunContext) -> list[dict]:
    """LIFT: score accuracy, explanation, clarity, difficulty and length 1-10; lift_score is their mean."""
    opts = ctx.options or LiftScoreOptions()
    llm = llm_of(ctx)
    constrained = use_constraint(llm, opts.constrained, PREFIX)

    async def one(rec: dict) -> dict:
        instruction, inp, output = triplet(rec)
        msgs = [{"role": "user", "content": render("lift_score.jinja", path=opts.template, instruction=instruction,
                                                   input=inp, output=output)}]  # fmt: skip
        params: dict[str, Any] = {"temperature": opts.temperature, "max_tokens": opts.max_tokens}
        if constrained:
            msgs, params["json_schema"] = with_json_reply(msgs, SCHEMA), SCHEMA
        comp = await llm.achat(msgs, **params)
        values, status = parse_aspects(comp.text, constrained)
        score = sum(values.values()) / len(ASPECTS) if status == "ok" else None  # type: ignore[arg-type]
        return {f"{PREFIX}_score": score, f"{PREFIX}_scores": values, f"{PREFIX}_raw": comp.text,
                f"{PREFIX}_parse": status, **usage_columns(PREFIX, [comp])}  # fmt: skip

    out = finish(records, ctx.map(records, one, stage="score"), "score", PREFIX, COLUMNS)
    report(out, PREFIX, ctx, {"aspects": list(ASPECTS), "constrained": constrained})
    return out
