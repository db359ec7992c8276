"""LIFT: expand the data into thinly covered regions, then curate it for variety and quality.

Paper: Xu et al., "Rethinking the Instruction Quality: LIFT is What You Need" (arXiv 2312.11508; v1
"Variety and Quality over Quantity: Towards Versatile Instruction Curation"). No code or prompt is
released; docs/methods.md lists what the paper fixes and what is ours.

Steps: (1) expansion: the `expand_seeds` rows in the least covered regions of the embedding space seed
new instructions (one per seed by default), each answered by the model; (2) variety curation, the
registered `select lift_variety` (PCA row variance) over originals and expansions; (3) quality, the
registered `judge lift` (accuracy, explanation, clarity, difficulty, length, 1-10 each, mean);
(4) reselection, the registered `select topk` on that mean. Steps 2-4 run through the registry, so
each is also a method of its own for pipelines.

Deviations, and why: "least covered" is read as the first k-center picks (farthest-first traversal,
the registered `select kcenter`: each pick is the row farthest from those before it), our reading of
the paper's sparse subspaces; the embedding model is any encoder (`-o encoder`, default the local
MiniLM; the paper used a hosted one); every count and the 1-10 scale are ours. An expanded
instruction that is empty, repeats its seed or gets no answer is dropped and counted
(`lift.expanded.jsonl` holds every expansion with its status).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from instructkit.data.io import INSTRUCTION_FIELD, RESPONSE_FIELD
from instructkit.registry import method
from instructkit.run.manifest import write_method_summary
from instructkit.run.provenance import provenance
from instructkit.run.runner import RunContext
from instructkit.shared.rows import llm_of
from instructkit.templates import render

from .common import call_seed, run_registered, write_side

TEMPLATES = ("lift_expand.jinja", "lift_answer.jinja", "lift_score.jinja")
SELECT_COLUMNS = ("_select_rank", "_select_index")


@dataclass
class LiftOptions:
    expand_seeds: int = 100  # rows seeding new instructions (0: no expansion)
    per_seed: int = 1  # new instructions per seed
    temperature: float = 0.7
    expand_max_tokens: int = 128
    answer_max_tokens: int = 512
    encoder: str | None = None  # embedder for seeds and variety (default local: all-MiniLM-L6-v2)
    variety_k: int = 0  # rows kept by variety (0: variety_ratio of the pool)
    variety_ratio: float = 0.5
    pca_components: int = 16
    quality_k: int = 0  # rows kept by quality (0: quality_ratio of the variety-kept rows)
    quality_ratio: float = 0.5
    score_max_tokens: int = 64
    constrained: str = "off"  # the quality scores: off (labelled lines) | auto (JSON, 1-10 enums)


def clean_instruction(text: str) -> str:
    """The reply without a leading label, surrounding quotes, or anything after a blank line."""
    body = re.sub(r"^\s*(?:\*\*)?(?:new )?instruction(?:\*\*)?\s*:\s*", "", text.strip(), flags=re.IGNORECASE)
    return body.split("\n\n", 1)[0].strip().strip('"').strip()


def expansion_failure(seed: str, new: str) -> str | None:
    """Why an expanded instruction is dropped (None: kept)."""
    if not new:
        return "empty"
    if " ".join(new.lower().split()) == " ".join(seed.lower().split()):
        return "repeats_seed"
    return None


def _fields() -> list[str]:
    return ["instruction", "input", "output"]


@method("generate", "lift", options=LiftOptions, reads=(INSTRUCTION_FIELD, RESPONSE_FIELD))
def lift(records: list[dict], ctx: RunContext) -> list[dict]:
    """LIFT: new instructions in thinly covered regions, then PCA-variance and 5-aspect quality curation."""
    opts = ctx.options or LiftOptions()
    llm = llm_of(ctx)
    embed = {"encoder": opts.encoder, "fields": _fields()}
    seeds: list[dict] = []
    if opts.expand_seeds > 0 and records:
        picks = run_registered("select", "kcenter", records, ctx, {"k": opts.expand_seeds, **embed})
        seeds = [{"index": r["_select_index"], "instruction": str(records[r["_select_index"]]["instruction"]),
                  "copy": c} for r in picks for c in range(opts.per_seed)]  # fmt: skip

    async def expand(seed: dict) -> dict:
        salt = (seed["index"], seed["copy"])
        comp = await llm.achat(render(TEMPLATES[0], instruction=seed["instruction"]), temperature=opts.temperature,
                               max_tokens=opts.expand_max_tokens, seed=call_seed(ctx, "lift-expand", *salt))  # fmt: skip
        new = clean_instruction(comp.text)
        reason = expansion_failure(seed["instruction"], new)
        if reason is not None:
            return {"raw": comp.text, "instruction": new, "status": reason}
        ans = await llm.achat(render(TEMPLATES[1], instruction=new), temperature=opts.temperature,
                              max_tokens=opts.answer_max_tokens, seed=call_seed(ctx, "lift-answer", *salt))  # fmt: skip
        output = ans.text.strip()
        return {"raw": comp.text, "instruction": new, "output": output, "status": "ok" if output else "no_answer"}

    expanded, log, statuses = [], [], {}
    for seed, res in zip(seeds, ctx.map(seeds, expand, stage="expand")):
        value = res.value if res.ok else {}  # a dry run's placeholder expansion enters the pool: an upper bound
        status = value.get("status") or ("pending" if res.pending else "call_failed")
        statuses[status] = statuses.get(status, 0) + 1
        log.append({"seed_index": seed["index"], "copy": seed["copy"], **value, "status": status, "error": res.error})
        if status == "ok":
            parent = records[seed["index"]]
            expanded.append({"instruction": value["instruction"], "input": "", "output": value["output"],
                             "lift_origin": "expanded", "lift_seed_index": seed["index"],
                             "provenance": provenance(ctx, parent, parent_id=str(parent.get("id", seed["index"])))})  # fmt: skip
    pool = [{**r, "lift_origin": "original"} for r in records] + expanded
    varied = run_registered("select", "lift_variety", pool, ctx, {"k": opts.variety_k, "ratio": opts.variety_ratio,
                            "pca_components": opts.pca_components, **embed}) if pool else []  # fmt: skip
    varied = [{k: v for k, v in r.items() if k not in SELECT_COLUMNS} for r in varied]
    scored = run_registered("judge", "lift", varied, ctx, {"max_tokens": opts.score_max_tokens,
                                                           "constrained": opts.constrained}) if varied else []  # fmt: skip
    rated = [r for r in scored if r.get("lift_score") is not None]  # an unscored row is never reselected
    k = opts.quality_k if opts.quality_k > 0 else max(1, int(len(varied) * opts.quality_ratio))
    best = run_registered("select", "topk", rated, ctx, {"score": "lift_score", "k": k}) if rated else []
    out = [{k2: v for k2, v in r.items() if k2 not in SELECT_COLUMNS} for r in best]
    write_side(ctx, "expanded.jsonl", log)
    counts = {"inputs": len(records), "seeds": len(seeds), "expansions": statuses, "expanded": len(expanded),
              "pool": len(pool), "variety_kept": len(varied), "scored": len(rated),
              "kept": len(out), "kept_expanded": sum(r.get("lift_origin") == "expanded" for r in out)}  # fmt: skip
    write_method_summary(ctx, "generate", counts, options=opts, templates=TEMPLATES, echo=True)
    return out
