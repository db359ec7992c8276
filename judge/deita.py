"""DEITA complexity and quality scores: the released scorers, a direct 1-6 prompt or EVOL rank-and-score.

Paper: Liu et al., "What Makes Good Data for Alignment? A Comprehensive Study of Automatic Data
Selection in Instruction Tuning" (DEITA, ICLR 2024, arXiv 2312.15685).
`mode=scorer` (preset `official`) runs the released deita-complexity-scorer / deita-quality-scorer
as trained (hkust-nlp/deita, selection/scorer): their raw input format byte for byte (exact whitespace,
no chat template, the BOS their tokenizer adds), read at the first generated position over the tokens
of "1".."6", softmax over those six, Σ s·p(s). Local models: the full next-token distribution after
the raw prompt; servers: `/v1/completions` with top_logprobs (variants of a digit such as " 4" are
summed, since a server returns text, not ids; a digit outside the top k is left out). A prompt the
scorer cannot read is null with a status, never the released code's silent 3.0. The preset's
`scorer_logprobs official` is the released code on vLLM instead (`Scorer.infer_score`, held to its golden
outputs in tests/golden/deita): the top 1000 log-probs (`top_logprobs 1000`; a vLLM server must be
started with `--max-logprobs 1000`), the tokens "1".."6" exactly, softmax over the six, and 3.0 when
any of them is missing.
`mode=direct` lets any chat model act as the scorer: the prompts are our own wording of the
trained scorers' layout (query / question-response, then the score slot) sent through the chat
template. The score is Σ s·p(s)
over the score tokens 1-6: on local models from the full next-token distribution at the answer's
first position (exactly the scorers' formula), on hosted ones from top_logprobs when returned,
else the parsed integer; no score token or no parse is null with a status, never the official 3.0.
EVOL mode builds M in-depth evolutions (or M response rewrites), shows all M+1 in one shuffled
ranking prompt and maps each `[k] Score: s` back to its variant; a missing or repeated index fails
the row. The sample's own score is that of the original (variant 0). Selection lives in selection/.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any, ClassVar

from instructkit.data.io import INSTRUCTION_FIELD, RESPONSE_FIELD, to_turns
from instructkit.models.llm import is_placeholder
from instructkit.registry import method
from instructkit.run.runner import RunContext
from instructkit.shared.rows import finish, llm_of, use_constraint, with_json_reply
from instructkit.shared.scores import (
    OK,
    check_score_mode,
    expectation_from_logits,
    expectation_from_logprobs,
    parse_ranking,
    pick_score,
    report,
    score_completion,
)
from instructkit.templates import render

PREFIX = "deita"
ASPECTS = ("complexity", "quality")
SCORES = (1, 6)
# -o constrained auto (direct mode): the score alone, restricted to the scorers' 1-6 (an object, as
# OpenAI-style servers require one at the root).
SCHEMA = {
    "type": "object",
    "properties": {"score": {"enum": list(range(SCORES[0], SCORES[1] + 1))}},
    "required": ["score"],
    "additionalProperties": False,
}
DIGITS = [str(v) for v in range(SCORES[0], SCORES[1] + 1)]
MODES = ("direct", "evol", "scorer")
# The released scorers' input formats (hkust-nlp/deita @ b279f2c, llama_scorer.py / mistral_scorer.py):
# facts the weights were trained on, reproduced exactly (two spaces before "\n##Complexity", the
# space before "\n #Question#", the trailing spaces).
SCORER_TEMPLATES = {
    "complexity": "You are a helpful assistant. Please identify the complexity score of the following user "
    "query. \n##Query: {instruction}  \n##Complexity: ",
    "quality": "You are a helpful assistant. Please identify the quality score of the Response corresponding "
    "to the Question. \n #Question#:\n{instruction}\n#Response#:\n{output} \n##Quality: ",
}


def scorer_prompt(aspect: str, instruction: str, response: str = "") -> str:
    """The released scorer's raw input for one turn (str.format, as the released code fills it)."""
    return SCORER_TEMPLATES[aspect].format(instruction=instruction, output=response)

# In-depth evolution operations (constraints, deepening, concretizing, reasoning), our wording.
COMPLEXITY_OPERATIONS = [
    "Add one more constraint or requirement to it.",
    "If it asks about a particular issue, make the question reach deeper and wider into that issue.",
    "Replace general concepts in it with more specific ones.",
    "If a few simple steps would solve it, rewrite it so that it plainly needs several steps of reasoning.",
]
QUALITY_OPERATIONS = [
    "Make it more helpful to the person who asked.",
    "Make it more relevant to the instruction.",
    "Make it go into more depth.",
    "Make it more creative.",
    "Add more useful detail.",
]


@dataclass
class DeitaOptions:
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "official": {"mode": "scorer", "scorer_logprobs": "official", "top_logprobs": 1000}
    }

    mode: str = "direct"  # direct (1-6 prompt, any chat model) | scorer (released scorers) | evol (rank M evolutions)
    aspects: list[str] = field(default_factory=lambda: list(ASPECTS))
    m: int = 5  # evolutions per sample in evol mode (M+1 variants ranked together)
    shuffle: bool = True  # shuffle the variants before ranking (order bias; DEITA authors do this)
    logprobs: bool = True
    top_logprobs: int = 10
    scorer_logprobs: str = "renormalise"  # scorer mode on a server: renormalise (over the digits returned) | official (3.0 if one is missing)
    max_tokens: int = 4  # direct mode: the score is the first token
    score: str = "expected"  # direct mode: expected (Σ s·p(s), the scorers' formula) | text (the digit written) | auto (text, else expected)
    constrained: str = "off"  # direct mode: off (free text) | auto: JSON {"score": 1..6} where the backend constrains output
    evol_max_tokens: int = 512
    evol_temperature: float = 0.7
    rank_max_tokens: int = 160
    complexity_template: str | None = None
    quality_template: str | None = None


def official_server_score(logprobs: list[Any]) -> float:
    """The released scorer's value on vLLM (`Scorer.infer_score`): the log-probs of the tokens "1".."6"
    at the first position, softmax over those six, Σ s·p(s); 3.0 when any is missing (or none came back)."""
    if not logprobs:
        return 3.0
    first = logprobs[0]
    found: dict[str, float] = {}
    for token, lp in [(first.token, first.logprob), *first.top]:
        found.setdefault(token, lp)
    if any(d not in found for d in DIGITS):
        return 3.0
    values = [found[d] for d in DIGITS]
    peak = max(values)
    weights = [math.exp(v - peak) for v in values]
    total = sum(weights)
    return sum(score * (w / total) for score, w in zip(range(SCORES[0], SCORES[1] + 1), weights))


def combined(complexity: list[float | None] | None, quality: list[float | None] | None) -> float | None:
    """DEITA's evol score: Σ over turns of complexity x quality (null if any turn lacks a score)."""
    if not complexity or not quality or len(complexity) != len(quality):
        return None
    if any(c is None for c in complexity) or any(q is None for q in quality):
        return None
    return float(sum(c * q for c, q in zip(complexity, quality)))


def _first_failure(statuses: list[str]) -> str:
    return next((s for s in statuses if s != OK), OK)


def _rng(seed: int, *parts: str) -> random.Random:
    import hashlib

    digest = hashlib.sha256("\x1f".join([str(seed), *parts]).encode()).hexdigest()
    return random.Random(int(digest[:16], 16))


def _reads(opts: DeitaOptions | None) -> tuple[str, ...]:
    aspects = opts.aspects if opts is not None else ASPECTS
    return (INSTRUCTION_FIELD, RESPONSE_FIELD) if "quality" in aspects else (INSTRUCTION_FIELD,)


@method("judge", PREFIX, options=DeitaOptions, turns="native", reads=_reads)
def deita(records: list[dict], ctx: RunContext) -> list[dict]:
    """DEITA: complexity and quality scores (1-6 scorer or EVOL ranking) and their product."""
    opts = ctx.options or DeitaOptions()
    llm = llm_of(ctx)
    unknown = set(opts.aspects) - set(ASPECTS)
    if unknown or opts.mode not in MODES:
        raise ValueError(
            f"deita: mode must be one of {'|'.join(MODES)} and aspects among {ASPECTS} (got {opts.mode}, {unknown})"
        )
    if opts.scorer_logprobs not in ("renormalise", "official"):
        raise ValueError(f"deita: scorer_logprobs must be renormalise or official, not {opts.scorer_logprobs!r}")
    lp: dict[str, Any] = {"logprobs": True, "top_logprobs": opts.top_logprobs} if opts.logprobs else {}
    mode = check_score_mode(opts.score, PREFIX)
    constrained = use_constraint(llm, opts.constrained, PREFIX) if opts.mode == "direct" else False

    async def direct(aspect: str, instruction: str, response: str) -> dict[str, Any]:
        if aspect == "complexity":
            prompt = render("deita_complexity.jinja", path=opts.complexity_template, instruction=instruction)
        else:
            prompt = render(
                "deita_quality.jinja", path=opts.quality_template, instruction=instruction, response=response
            )
        if constrained:
            params = {"max_tokens": max(opts.max_tokens, 12), "json_schema": SCHEMA}
            comp = await llm.achat(with_json_reply([{"role": "user", "content": prompt}], SCHEMA), temperature=0.0,
                                   **params, **lp)  # fmt: skip
        else:
            comp = await llm.achat(prompt, temperature=0.0, max_tokens=opts.max_tokens, **lp)
        s = score_completion(comp, *SCORES, prompt, mode=mode, json_key="score" if constrained else None)
        if opts.logprobs and llm.is_local and not constrained:
            # A local model gives the whole next-token distribution: read it at the score tokens,
            # as the trained DEITA scorers do, whatever the model then writes.
            scores = list(range(SCORES[0], SCORES[1] + 1))
            logits = await llm.achoice_logprobs(prompt, [str(v) for v in scores])
            expected = expectation_from_logits(logits, scores)
            value, source = pick_score(s["parsed"] if s["text_status"] == OK else None, expected, mode)
            return {"value": value, "status": OK if value is not None else s["text_status"], "raw": comp.text,
                    "source": "distribution" if source == "expected" else source, "expected": expected}  # fmt: skip
        source = "logprobs" if s["source"] == "expected" else s["source"]  # as mode=scorer names them
        return {"value": s["value"], "status": s["status"], "raw": comp.text, "source": source,
                "expected": s["expected"]}  # fmt: skip

    async def scorer(aspect: str, instruction: str, response: str) -> dict[str, Any]:
        prompt = scorer_prompt(aspect, instruction, response)
        if llm.is_local:  # the whole next-token distribution after the raw prompt, as the released code
            logps = await llm.achoice_logprobs(prompt, DIGITS, raw=True)
            return {"value": expectation_from_logits(logps, [int(d) for d in DIGITS]), "status": OK,
                    "raw": None, "source": "distribution"}  # fmt: skip
        comp = await llm.acomplete(
            prompt, temperature=0.0, max_tokens=1, logprobs=True, top_logprobs=opts.top_logprobs
        )
        if opts.scorer_logprobs == "official" and not is_placeholder(comp):  # a dry run's placeholder scores nothing
            value = official_server_score(comp.logprobs or [])
            return {"value": value, "status": OK, "raw": comp.text, "source": "logprobs"}
        exp = expectation_from_logprobs(comp.logprobs, range(SCORES[0], SCORES[1] + 1), position=0)
        return {"value": exp.value, "status": exp.status, "raw": comp.text,
                "source": "logprobs" if exp.status == OK else None}  # fmt: skip

    async def evol(aspect: str, instruction: str, response: str) -> dict[str, Any]:
        variants = [instruction if aspect == "complexity" else response]
        ops = COMPLEXITY_OPERATIONS if aspect == "complexity" else QUALITY_OPERATIONS
        for step in range(opts.m):
            op = ops[step % len(ops)]
            if aspect == "complexity":
                prompt = render(
                    "deita_evol_complexity.jinja", instruction=variants[-1], operation=op
                )
            else:
                prompt = render(
                    "deita_evol_quality.jinja",
                    instruction=instruction,
                    response=variants[-1],
                    operation=op,
                )
            comp = await llm.achat(
                prompt,
                temperature=opts.evol_temperature,
                seed=ctx.random_state + step,
                max_tokens=opts.evol_max_tokens,
            )
            if not comp.text.strip():
                return {
                    "value": None,
                    "status": "evol_empty",
                    "raw": "",
                    "source": None,
                    "variants": variants,
                }
            variants.append(comp.text.strip())
        order = list(range(len(variants)))
        if opts.shuffle:
            _rng(ctx.random_state, aspect, instruction, response).shuffle(order)
        shown = [variants[i] for i in order]
        name = f"deita_rank_{aspect}.jinja"
        prompt = render(name, items=shown, instruction=instruction)
        comp = await llm.achat(prompt, temperature=0.0, max_tokens=opts.rank_max_tokens)
        n = len(variants)
        ranking = parse_ranking(comp.text, n, 1, n + 1, prompt=prompt)
        by_variant: list[float | None] = [None] * n
        if ranking.scores is not None:
            for pos, variant in enumerate(order):
                by_variant[variant] = ranking.scores[pos]
        return {
            "value": by_variant[0],
            "status": ranking.status,
            "raw": comp.text,
            "source": "ranking" if ranking.scores is not None else None,
            "variants": variants,
            "ranking": by_variant if ranking.scores is not None else None,
            "shown_order": order,
        }

    score_turn = {"direct": direct, "scorer": scorer, "evol": evol}[opts.mode]

    async def one(rec: dict) -> dict:
        turns = to_turns(rec)
        row: dict[str, Any] = {}
        statuses = []
        for aspect in opts.aspects:
            results = [await score_turn(aspect, q, a) for q, a in turns]
            key = f"{PREFIX}_{aspect}"
            row[f"{key}_scores"] = [r["value"] for r in results]
            row[key] = results[0]["value"] if results else None
            row[f"{key}_raw"] = [r["raw"] for r in results]
            row[f"{key}_source"] = [r["source"] for r in results]
            row[f"{key}_expected"] = [r.get("expected") for r in results]
            row[f"{key}_parse"] = _first_failure([r["status"] for r in results]) if results else "empty"
            statuses.append(row[f"{key}_parse"])
            if opts.mode == "evol":
                row[f"{key}_variants"] = [r.get("variants") for r in results]
                row[f"{key}_ranking"] = [r.get("ranking") for r in results]
        row[f"{PREFIX}_score"] = combined(
            row.get(f"{PREFIX}_complexity_scores"), row.get(f"{PREFIX}_quality_scores")
        )
        row[f"{PREFIX}_parse"] = _first_failure(statuses)
        return row

    columns = [f"{PREFIX}_score", f"{PREFIX}_parse"] + [
        f"{PREFIX}_{a}{suffix}"
        for a in opts.aspects
        for suffix in ("", "_scores", "_raw", "_source", "_expected", "_parse")
    ]
    out = finish(
        records, ctx.map(records, one, stage=f"score-{opts.mode}"), f"score-{opts.mode}", PREFIX, columns
    )
    extra = {"mode": opts.mode, "aspects": list(opts.aspects)}
    for aspect in opts.aspects:
        counts: dict[str, int] = {}
        for rec in out:
            status = rec.get(f"{PREFIX}_{aspect}_parse") or "error"
            counts[status] = counts.get(status, 0) + 1
        extra[f"{aspect}_parse"] = counts
    report(out, PREFIX, ctx, extra)
    return out
