"""AlpaGasus rating: one 0-5 score per (instruction, input, output) on one dimension, keep >= 4.5.

Paper: Chen et al., "AlpaGasus: Training a Better Alpaca with Fewer Data" (ICLR 2024, arXiv 2307.08701).
Deviations: the prompt is our own wording of the same structure (three headed sections, 0-5 scale,
score alone on the first line, then an explanation); the parser accepts "Score: 4.5", "Score:4.5",
"4.5/5" and "4.5 out of 5" where the reproduction crashed or truncated, refuses out-of-range values,
and never reads lines echoed from the prompt; an unparseable reply is a null score with its status
(not -1), counted in the run summary. Rows keep their order; `alpagasus_keep` marks the filter.
`-o score` (text | expected | auto, default auto): `alpagasus_expected` is Σ s·p(s) over the tokens
0-5 at the score token (or the reply's first token when the text states no score); auto keeps the
text score where it parses and takes the expectation elsewhere, text is the paper on every row.
`-o constrained auto` asks for JSON {"score": one of 0, 0.5, ..., 5, "explanation"} where the backend
constrains output (default off: the paper's free text).
"""

from __future__ import annotations

from dataclasses import dataclass

from instructkit.data.io import INSTRUCTION_FIELD, RESPONSE_FIELD
from instructkit.models import Completion, GenParams
from instructkit.registry import method
from instructkit.run.runner import Chat, RunContext
from instructkit.shared.rows import (
    chat_messages,
    finish,
    llm_of,
    score_schema,
    triplet,
    use_constraint,
    with_json_reply,
)
from instructkit.shared.scores import check_score_mode, report, score_completion, source_counts, usage_columns
from instructkit.templates import render

PREFIX = "alpagasus"
COLUMNS = [
    f"{PREFIX}_{c}"
    for c in (
        "score",
        "score_source",
        "expected",
        "text_parse",
        "raw",
        "parse",
        "keep",
        "tokens",
        "cost",
        "calls",
    )
]
SCALE = [v / 2 for v in range(11)]  # 0, 0.5, ..., 5: the paper's scores (4.5 is its threshold)
SCHEMA = score_schema([int(v) if v == int(v) else v for v in SCALE])


@dataclass
class AlpagasusOptions:
    threshold: float = 4.5  # keep rows with score >= threshold
    dimension: str = "accuracy"  # the paper's main dimension ("helpfulness" was its alternative)
    max_tokens: int = 256
    temperature: float = 0.0
    score: str = "auto"  # text (the paper) | expected (Σ s·p(s) over 0-5 at the score token) | auto (text, else expected)
    constrained: str = (
        "off"  # off: the paper's free text | auto: JSON {score on the 0-5 scale, explanation} where supported
    )
    top_logprobs: int = 20  # alternatives read at the score token (0: no logprobs, no expected score)
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
    mode = check_score_mode(opts.score, PREFIX)
    constrained = use_constraint(llm, opts.constrained, PREFIX)
    params: dict = {"temperature": opts.temperature, "max_tokens": opts.max_tokens}
    if opts.top_logprobs > 0:
        params.update(logprobs=True, top_logprobs=opts.top_logprobs, logprobs_at="labels")  # cached at the score token
    if constrained:
        params["json_schema"] = SCHEMA
    gen = GenParams.of(None, params)  # as llm.achat(**params) builds it: the same cache keys

    def request(rec: dict) -> Chat:
        msgs = rating_messages(rec, opts)
        return Chat(with_json_reply(msgs, SCHEMA) if constrained else msgs, gen, note=msgs[-1]["content"])

    def read(rec: dict, chat: Chat, comp: Completion) -> dict:
        s = score_completion(
            comp, 0, 5, chat.note, mode=mode, integer=False, json_key="score" if constrained else None
        )
        return {
            f"{PREFIX}_score": s["value"],
            f"{PREFIX}_score_source": s["source"],
            f"{PREFIX}_expected": s["expected"],
            f"{PREFIX}_text_parse": s["text_status"],
            f"{PREFIX}_raw": comp.text,
            f"{PREFIX}_parse": s["status"],
            f"{PREFIX}_keep": s["value"] is not None and s["value"] >= opts.threshold,
            **usage_columns(PREFIX, [comp]),
        }

    out = finish(records, ctx.map_chats(records, request, read, stage="rate"), "rate", PREFIX, COLUMNS)
    kept = sum(bool(r.get(f"{PREFIX}_keep")) for r in out)
    extra = {"threshold": opts.threshold, "kept": kept, "score": mode, "constrained": constrained}
    report(out, PREFIX, ctx, {**extra, "score_source": source_counts(out, PREFIX)})
    return out
