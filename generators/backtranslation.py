"""Instruction backtranslation: instructions predicted for unlabelled text, then rated and curated by the model.

Paper: Li et al., "Self-Alignment with Instruction Backtranslation" (ICLR 2024, arXiv 2308.06259).

As the paper: self-augmentation writes an instruction x for each text segment y (y becomes the
answer); self-curation rates each (x, y) on the paper's 5-point scale, reasoning first and the score on
the last line; pairs with score >= threshold (5, the paper's A_5) are kept; an optional second iteration
re-rates every candidate with the model now shown curated pairs (the paper's M1 rating A again).

Deviations, and why: there is no fine-tuning here, so the backward model M_yx and the curated model M1
are emulated by prompting the run's model: seed pairs (`seed_path`, Alpaca JSONL) become reversed
few-shot demonstrations for self-augmentation, and the second iteration puts curated pairs into the
rating prompt as examples of 5-point answers. The prompts are our own wording of the paper's
Table 1 anchors. Score lines are read by instructkit.shared.scores.parse_score (last labelled score,
echoed prompt lines ignored, out-of-range values refused): a failure is a null score with its status
and raw text (`backtranslation.rated.jsonl` holds every candidate), never a crash. Decoding is greedy
by default (the paper does not fix it), with an explicit seed for any sampling. `-o score auto`
(default) takes Σ s·p(s) over 1-5 at the stated score token beside the text score
(`backtranslation_expected`, `backtranslation_score_source`); a reply that states no score has no
score position, so it stays unscored unless `-o constrained auto` asks for JSON {reasoning, score 1-5}.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from instructkit.registry import method
from instructkit.run.manifest import write_method_summary
from instructkit.run.provenance import provenance
from instructkit.run.runner import RunContext
from instructkit.shared.rows import llm_of, score_schema, use_constraint, with_json_reply
from instructkit.shared.scores import check_score_mode, parse_json_score, parse_score, score_at_end
from instructkit.templates import render

from .common import call_seed, complete, passages_for, seeded, write_side

TEMPLATES = ("backtranslation_augment.jinja", "backtranslation_curate.jinja")
# -o constrained auto: the paper's order (reasoning, then the 5-point score), the score an enum of 1-5.
RATING_SCHEMA = score_schema([1, 2, 3, 4, 5], explanation="reasoning", score_first=False)


@dataclass
class BacktranslationOptions:
    text_field: str = "text"  # the unlabelled text of each input record (e.g. "output" for Alpaca rows)
    id_field: str | None = None
    segment_tokens: int = 0  # 0: one segment per document; else chunk documents to this budget
    seed_path: str | None = None  # Alpaca JSONL of seed (instruction, output) pairs for demonstrations
    n_demos: int = 3
    threshold: float = 5.0  # keep score >= threshold
    iterations: int = 1  # 2: re-rate with curated pairs as demonstrations
    curation_demos: int = 3
    temperature: float = 0.0
    augment_max_tokens: int = 128
    rate_max_tokens: int = 256
    keep_all: bool = False  # return every candidate with its score, not only the kept ones
    score: str = "auto"  # text (the paper) | expected (Σ s·p(s) over 1-5 at the score token) | auto (text, else expected)
    constrained: str = "off"  # off: reasoning then "Score: n" (the paper) | auto: JSON {reasoning, score 1-5} where supported
    top_logprobs: int = 20  # alternatives read at the score token (0: no logprobs, no expected score)


def parse_rating(text: str, prompt_text: str | None = None) -> tuple[float | None, str]:
    """(score 1-5 or None, status) from a self-curation reply: the last stated score wins."""
    parsed = parse_score(text, 1, 5, prompt=prompt_text, prefer="last")
    return parsed.value, parsed.status


def clean_instruction(text: str) -> str:
    """The predicted instruction without a repeated label, quotes, or anything after a blank line."""
    body = text.strip()
    for label in ("Instruction:", "instruction:"):
        if body.startswith(label):
            body = body[len(label) :].strip()
    body = body.split("\n\n", 1)[0].strip()
    return body.strip('"').strip()


def _load_seeds(path: str | None) -> list[dict]:
    if not path:
        return []
    from instructkit.data.io import read_records

    rows = read_records(path)
    return [
        {"instruction": str(r["instruction"]), "output": str(r.get("output", ""))}
        for r in rows
        if r.get("instruction")
    ]


@method("generate", "backtranslation", options=BacktranslationOptions, reads=("{text_field}",))
def backtranslation(records: list[dict], ctx: RunContext) -> list[dict]:
    """Instruction backtranslation: self-augment instructions for texts, self-curate (5-point), keep the best."""
    opts = ctx.options or BacktranslationOptions()
    llm = llm_of(ctx)
    mode = check_score_mode(opts.score, "backtranslation")
    constrained = use_constraint(llm, opts.constrained, "backtranslation")
    budget = opts.segment_tokens if opts.segment_tokens > 0 else 10**9
    segments = passages_for(records, ctx, opts.text_field, budget, opts.id_field)
    seeds = _load_seeds(opts.seed_path)
    demos = seeded(ctx, "bt-demos").sample(seeds, min(opts.n_demos, len(seeds))) if seeds else []
    items = [{"doc_id": s.doc_id, "passage_index": s.passage_index, "text": s.text} for s in segments]

    async def augment(item: dict) -> dict:
        msg = render(TEMPLATES[0], text=item["text"], demos=demos)
        return await complete(llm, msg, temperature=opts.temperature, max_tokens=opts.augment_max_tokens,
                              seed=call_seed(ctx, "bt-augment", item["doc_id"], item["passage_index"]))  # fmt: skip

    candidates: list[dict] = []
    failures: dict[str, int] = {}
    for item, res in zip(items, ctx.map(items, augment, stage="augment")):
        inst = clean_instruction(res.value["text"]) if res.ok else ""
        if not inst:
            status = "empty_instruction" if res.ok else ("pending" if res.pending else "call_failed")
            failures[status] = failures.get(status, 0) + 1
            candidates.append({**item, "instruction": None, "augment_raw": res.value["text"] if res.ok else None,
                               "augment_status": status, "error": res.error})  # fmt: skip
            continue
        candidates.append(
            {**item, "instruction": inst, "augment_raw": res.value["text"], "augment_status": "ok"}
        )

    usable = [c for c in candidates if c["instruction"]]
    rating_demos: list[dict] = []
    iteration_counts = []
    for it in range(1, max(1, opts.iterations) + 1):
        pairs = [
            {"instruction": c["instruction"], "answer": c["text"], "demos": rating_demos} for c in usable
        ]

        async def rate(pair: dict) -> dict:
            msg = render(
                TEMPLATES[1], instruction=pair["instruction"], answer=pair["answer"], demos=pair["demos"]
            )
            params = {"temperature": opts.temperature, "max_tokens": opts.rate_max_tokens}
            if opts.top_logprobs > 0:
                params.update(logprobs=True, top_logprobs=opts.top_logprobs)
            if constrained:
                comp = await llm.achat(with_json_reply([{"role": "user", "content": msg}], RATING_SCHEMA),
                                       json_schema=RATING_SCHEMA, **params)  # fmt: skip
                parsed = parse_json_score(comp.text, 1, 5)
            else:
                comp = await llm.achat(msg, **params)
                parsed = parse_score(comp.text, 1, 5, prompt=msg, prefer="last")
            s = score_at_end(comp, parsed, 1, 5, mode)
            return {"text": comp.text, "finish_reason": comp.finish_reason,
                    "completion_tokens": comp.usage.completion_tokens, "score": s["value"], "status": s["status"],
                    "source": s["source"], "expected": s["expected"]}  # fmt: skip

        statuses: dict[str, int] = {}
        for cand, res in zip(usable, ctx.map(pairs, rate, stage=f"curate-{it}")):
            score, status = (res.value["score"], res.value["status"]) if res.ok else (None, "error")
            keep = res.estimated or (score is not None and score >= opts.threshold)  # dry run: kept, as a real row may be
            cand.update(score_source=res.value.get("source") if res.ok else None,
                        expected=res.value.get("expected") if res.ok else None)  # fmt: skip
            cand.update(score=score, rate_status=status, rate_raw=res.value["text"] if res.ok else None, iteration=it,
                        keep=keep)  # fmt: skip
            statuses[status] = statuses.get(status, 0) + 1
        kept_now = [c for c in usable if c["keep"]]
        iteration_counts.append(
            {"iteration": it, "rated": len(usable), "kept": len(kept_now), "parse": statuses}
        )
        if it < opts.iterations:
            pick = seeded(ctx, "bt-curated", it)
            rating_demos = [{"instruction": c["instruction"], "output": c["text"]}
                            for c in pick.sample(kept_now, min(opts.curation_demos, len(kept_now)))]  # fmt: skip

    write_side(ctx, "rated.jsonl", candidates)
    out = []
    for c in candidates:
        if not c["instruction"] or not (c.get("keep") or opts.keep_all):
            continue
        out.append({"instruction": c["instruction"], "input": "", "output": c["text"], "doc_id": c["doc_id"],
                    "passage_index": c["passage_index"], "backtranslation_score": c.get("score"),
                    "backtranslation_score_source": c.get("score_source"), "backtranslation_expected": c.get("expected"),
                    "backtranslation_parse": c.get("rate_status"), "backtranslation_raw": c.get("rate_raw"),
                    "backtranslation_keep": bool(c.get("keep")), "backtranslation_iteration": c.get("iteration"),
                    "provenance": provenance(ctx, doc_id=c["doc_id"], passage_index=c["passage_index"])})  # fmt: skip
    counts: dict[str, Any] = {"segments": len(segments), "instructions": len(usable), "augment_failures": failures,
                              "iterations": iteration_counts, "kept": sum(bool(c.get("keep")) for c in candidates)}  # fmt: skip
    write_method_summary(ctx, "generate", counts, options=opts, templates=TEMPLATES, echo=True,
                         extra={"seed_demos": len(demos)})
    return out
