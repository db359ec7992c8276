"""Perplexity and mean token loss of the response (and of the whole text) under a causal LM.

The indicator used by Instruction Mining (Cao et al. 2023, 2307.06290) and by perplexity-based filters.
The response span is found as Cherry's IFD code finds it (`len(encode(text[:text.rfind(output)]))`);
the whole-text loss scores tokens 2..n (the plain HF causal-LM loss). One forward pass per row, in
length-sorted batches, the LM head only at scored positions. No deviation from the usual definition.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

from instructkit.data.io import INSTRUCTION_FIELD, RESPONSE_FIELD
from instructkit.registry import method
from instructkit.run.runner import RunContext

from .common import LocalModelOptions, SpanBatcher, finish, local_backend, map_sorted, mean_loss, row_items
from .ifd import get_template, official_span


@dataclass
class PerplexityOptions(LocalModelOptions):
    template: str = "alpaca"  # alpaca | wiz | vicuna | plain (see the IFD scorer)
    template_path: str | None = None
    max_length: int = 2048
    column: str = "ppl"


def score_perplexity(
    records: list[dict], ctx: RunContext, opts: PerplexityOptions, backend: Any | None = None
) -> list[dict]:
    """Columns `<c>_response`, `<c>_response_loss`, `<c>_text`, `<c>_text_loss`, `<c>_tokens`."""
    backend = backend or local_backend(ctx, opts)
    tok = backend.tokenizer
    tpl = get_template(opts.template, opts.template_path)
    batcher = SpanBatcher(backend, opts)
    c = opts.column
    columns = [f"{c}_response", f"{c}_response_loss", f"{c}_text", f"{c}_text_loss", f"{c}_tokens"]
    tpl_id = hashlib.sha256(tpl.source.encode()).hexdigest()[:16]

    async def one(item: dict) -> dict:
        out: dict[str, Any] = dict.fromkeys(columns)
        p_ids, a_ids = official_span(
            tok,
            tpl.prompt(item["instruction"], item["input"]) + item["output"],
            item["output"],
            opts.max_length,
        )
        (score,) = await batcher.score([([], p_ids + a_ids)])
        lps = score.token_logprobs  # tokens 2..n of the whole text
        text_loss = mean_loss(lps)
        resp = lps[len(lps) - len(a_ids) :] if a_ids else []
        resp_loss = mean_loss(resp)
        out.update(
            {
                f"{c}_text_loss": text_loss,
                f"{c}_text": math.exp(text_loss) if text_loss is not None else None,
                f"{c}_response_loss": resp_loss,
                f"{c}_response": math.exp(resp_loss) if resp_loss is not None else None,
                f"{c}_tokens": len(resp),
            }
        )
        return out

    items, lengths = row_items(records, model=backend.model_id, tpl=tpl_id)
    return finish(records, map_sorted(ctx, items, one, "ppl", lengths), "ppl", c, columns)


@method("score", "perplexity", options=PerplexityOptions, reads=(INSTRUCTION_FIELD, RESPONSE_FIELD))
def perplexity(records: list[dict], ctx: RunContext) -> list[dict]:
    """Perplexity and mean token loss of the response and of the whole templated text."""
    return score_perplexity(records, ctx, ctx.options or PerplexityOptions())
