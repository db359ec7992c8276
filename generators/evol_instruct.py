"""Evol-Instruct: evolve instructions in depth and in breadth over M rounds, answer, and eliminate failures.

Paper: Xu et al., "WizardLM: Empowering Large Language Models to Follow Complex Instructions" (ICLR 2024,
arXiv 2304.12244); prompts' structure and markers follow nlpxucan/WizardLM Evol_Instruct/{depth,breadth}.py.

As the paper: five in-depth operations (add constraints, deepen, concretize, increase reasoning steps,
complicate input) plus in-breadth, one drawn per instruction per round, in-breadth with probability 0.2
as in the official driver (Evol_Instruct/main.py draws one of 5 prompts, one of them in-breadth) and the
in-depth operations sharing the rest equally (`operation_weights` sets any other weights); M rounds (default 4),
each evolving the previous round's successful instruction; an answer for every evolved instruction; the
instruction eliminator: (1) no information gain, judged by an LLM equality check ("Equal"/"Not Equal"),
(2) the answer contains "sorry" and is shorter than 80 words, (3) the answer is only punctuation and
stop words, (4) the evolved instruction copies the evolving prompt's wording ("given prompt",
"rewritten prompt", "#Rewritten Prompt#", ...). A failed evolution is dropped and counted; its parent
stays in place and is evolved again next round. All rounds are pooled, with lineage (id, parent_id,
root_id, operation, round). Decoding as the official driver: T=1.0, top_p=0.95, max_tokens=2048; the
instruction text is instruction + newline + input.

Preset `official` is what the official driver (`Evol_Instruct/main.py`) does: its four in-depth operations
plus in-breadth (0.2 each), its system prompt ("You are a helpful assistant.") on evolution and answer
calls, one round, no eliminator (every answered evolution is kept), only the evolved pairs written (no
originals), instruction and input joined with "\\r\\n" even when the input is empty, replies kept verbatim
(tests/golden/evol_instruct).
Deviations, and why: prompts are our own wording (same markers, same 10-20 word limit); by default we
follow the paper, not the driver: M rounds with the eliminator, five in-depth operations, the inputs
pooled, and instruction and input joined with "\\n" only when there is an input; the operation
draw and sampling seeds come from the run's explicit seed; an evolution failing rule 4 (or empty) gets
no answer call, since it is eliminated whatever the answer; an equality reply that says neither
"Equal" nor "Not Equal" keeps the evolution and is counted (`equality_unparsed`); stop words are our
own English list.
Chat rows (`messages`, ShareGPT; beyond the paper): the last user turn evolves and is answered after
the earlier turns, and the row stays a chat (`messages`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

from instructkit.data.turns import chat_with, last_question
from instructkit.registry import method
from instructkit.run.manifest import write_method_summary
from instructkit.run.provenance import provenance
from instructkit.run.runner import RunContext
from instructkit.shared.rows import llm_of
from instructkit.templates import render

from .common import call_seed, complete, require_choice, seeded, write_side

DEPTH_OPS = ("constraints", "deepen", "concretizing", "reasoning", "complicate_input")
OPERATIONS = (*DEPTH_OPS, "breadth")
TEMPLATES = {"depth": "evol_depth.jinja", "breadth": "evol_breadth.jinja", "equal": "evol_equal.jinja"}
MARKERS = ("#the given prompt#", "#rewritten prompt#", "#given prompt#", "#created prompt#", "given prompt",
           "rewritten prompt", "created prompt")  # fmt: skip
STOP_WORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being below between
    both but by can could did do does doing down during each few for from further had has have having he her
    here hers herself him himself his how i if in into is it its itself just me more most my myself no nor not
    now of off on once only or other our ours ourselves out over own same she should so some such than that the
    their theirs them themselves then there these they this those through to too under until up very was we
    were what when where which while who whom why will with would you your yours yourself yourselves s t don
    ok okay yes oh""".split()
)


OFFICIAL_SYSTEM = "You are a helpful assistant."  # Evol_Instruct/openai_access.py, every call
BREADTH_SHARE = 0.2  # the official driver: in-breadth is 1 of its 5 evolving prompts


@dataclass
class EvolInstructOptions:
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # Evol_Instruct/main.py: one evolution per input, answered, every pair kept, originals not written
        "official": {"operations": ["constraints", "deepen", "concretizing", "reasoning", "breadth"],
                     "system": OFFICIAL_SYSTEM, "temperature": 1.0, "top_p": 0.95, "max_tokens": 2048,
                     "answer_max_tokens": 2048, "rounds": 1, "eliminate": False, "include_original": False,
                     "input_join": "crlf", "strip_replies": False},
    }  # fmt: skip

    rounds: int = 4  # M
    operations: list[str] = field(default_factory=lambda: list(OPERATIONS))
    operation_weights: dict[str, float] | None = None  # None: breadth 0.2, the rest shared equally
    system: str = ""  # system prompt of evolution and answer calls ("" sends none)
    temperature: float = 1.0
    top_p: float = 0.95
    max_tokens: int = 2048
    answer_max_tokens: int = 2048
    equality_check: bool = True  # rule 1 (one extra call per evolution)
    equality_max_tokens: int = 8
    sorry_max_words: int = 80  # rule 2: "sorry" in an answer shorter than this
    include_original: bool = True  # pool round 0 (the inputs) with the evolved rounds
    eliminate: bool = True  # the paper's eliminator (rules 1-4); false keeps every answered evolution
    input_join: str = "newline"  # instruction and input: "newline" (only a non-empty input) | "crlf" (always)
    strip_replies: bool = True  # strip evolutions and answers (the official driver keeps them verbatim)


def copies_prompt_wording(instruction: str) -> bool:
    """Rule 4: the evolved instruction repeats the evolving prompt's markers."""
    low = instruction.lower()
    return any(m in low for m in MARKERS)


def only_stop_words(answer: str) -> bool:
    """Rule 3: nothing but punctuation and stop words (an empty answer counts)."""
    words = re.findall(r"[a-z0-9]+", answer.lower())
    return all(w in STOP_WORDS for w in words)


def signals_difficulty(answer: str, max_words: int = 80) -> bool:
    """Rule 2: "sorry" in an answer shorter than `max_words` words."""
    return "sorry" in answer.lower() and len(answer.split()) < max_words


def parse_equality(text: str) -> str:
    """ "equal", "not_equal" or "unparsed" from the equality check reply."""
    low = text.lower()
    if re.search(r"\bnot\s+equal\b|\bunequal\b|\bnot the same\b", low):
        return "not_equal"
    if re.search(r"\bequal\b", low):
        return "equal"
    return "unparsed"


def elimination_reason(
    evolved: str, answer: str | None, equality: str | None, sorry_max_words: int = 80, eliminate: bool = True
) -> str | None:
    """The first eliminator rule that fails this evolution, or None when it survives (always, without
    `eliminate`: the official driver keeps every pair)."""
    if not eliminate:
        return None
    if not evolved.strip():
        return "empty"
    if copies_prompt_wording(evolved):
        return "copied_prompt_wording"
    if equality == "equal":
        return "no_information_gain"
    if answer is not None:
        if signals_difficulty(answer, sorry_max_words):
            return "sorry_short_answer"
        if only_stop_words(answer):
            return "stop_words_only"
    return None


def evolution_prompt(instruction: str, operation: str) -> str:
    if operation == "breadth":
        return render(TEMPLATES["breadth"], instruction=instruction)
    if operation not in DEPTH_OPS:
        raise ValueError(f"unknown operation {operation!r}; known: {OPERATIONS}")
    return render(TEMPLATES["depth"], instruction=instruction, operation=operation)


def operation_weights(opts: EvolInstructOptions) -> dict[str, float]:
    """Draw probability of each operation: `opts.operation_weights` normalised, else in-breadth 0.2 and the
    in-depth operations sharing the rest (uniform when only one kind is enabled)."""
    ops = list(dict.fromkeys(opts.operations))
    if opts.operation_weights is not None:
        missing = [op for op in ops if op not in opts.operation_weights]
        unknown = [op for op in opts.operation_weights if op not in ops]
        if missing or unknown:
            raise ValueError(f"operation_weights must name exactly the operations {ops} (missing {missing}, "
                             f"not enabled {unknown})")  # fmt: skip
        weights = {op: float(opts.operation_weights[op]) for op in ops}
        if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
            raise ValueError(f"operation_weights must be >= 0 and not all 0: {weights}")
    elif "breadth" in ops and len(ops) > 1:
        depth = len(ops) - 1
        weights = {op: BREADTH_SHARE if op == "breadth" else (1 - BREADTH_SHARE) / depth for op in ops}
    else:
        weights = dict.fromkeys(ops, 1.0)
    total = sum(weights.values())
    return {op: w / total for op, w in weights.items()}


def draw_operation(rng: Any, weights: dict[str, float]) -> str:
    """One operation drawn by weight from a seeded random generator."""
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def _reply(text: str, strip: bool) -> str:
    return text.strip() if strip else text


def text_of(rec: dict, input_join: str = "newline") -> str:
    """The text that evolves: a chat row's last question, else instruction and input joined ("crlf": always
    with "\\r\\n", as the official driver; "newline": with "\\n", only when there is an input)."""
    chat = last_question(rec)
    if chat is not None:  # a chat row: its last question evolves; the earlier turns stay as they are
        return chat[1]
    inst = str(rec.get("instruction") or "").strip()
    inp = str(rec.get("input") or "").strip()
    if not inst:
        raise ValueError(f"record has no instruction (fields: {sorted(rec)})")
    if input_join == "crlf":
        return f"{inst}\r\n{inp}"
    return f"{inst}\n{inp}" if inp else inst


@method("generate", "evol_instruct", options=EvolInstructOptions, reads=("instruction",))
def evol_instruct(records: list[dict], ctx: RunContext) -> list[dict]:
    """Evol-Instruct: M rounds of in-depth/in-breadth evolution with answers, elimination and lineage."""
    opts = ctx.options or EvolInstructOptions()
    for op in opts.operations:
        if op not in OPERATIONS:
            raise ValueError(f"unknown operation {op!r}; known: {OPERATIONS}")
    require_choice("input_join", opts.input_join, ("newline", "crlf"))
    weights = operation_weights(opts)
    llm = llm_of(ctx)
    current = []
    pool: list[dict] = []
    for i, rec in enumerate(records):
        rid = str(rec.get("id", i))
        chat = last_question(rec)
        node = {"id": rid, "instruction": text_of(rec, opts.input_join), "output": chat[2] if chat else rec.get("output"),
                "root_id": rid, "parent_id": None, "operation": None, "round": 0, "row": i,
                "history": chat[0] if chat else None}  # fmt: skip
        current.append(node)
        if opts.include_original:
            pool.append(dict(node))
    eliminated: list[dict] = []
    reasons: dict[str, int] = {}
    per_round: list[dict[str, Any]] = []
    unparsed = 0  # equality replies that said neither "Equal" nor "Not Equal" (kept, counted)
    sample: dict[str, Any] = {"temperature": opts.temperature, "top_p": opts.top_p}
    if opts.system:
        sample["system"] = opts.system

    for rnd in range(1, opts.rounds + 1):
        items = [{"id": n["id"], "instruction": n["instruction"],
                  "round": rnd, "operation": draw_operation(seeded(ctx, "evol-op", rnd, n["root_id"]), weights)}
                 for n in current]  # fmt: skip

        async def evolve(item: dict) -> dict:
            return await complete(llm, evolution_prompt(item["instruction"], item["operation"]), **sample,
                                  max_tokens=opts.max_tokens, seed=call_seed(ctx, "evolve", item["round"], item["id"]))  # fmt: skip

        evolved = [
            _reply(r.value["text"], opts.strip_replies) if r.ok else None
            for r in ctx.map(items, evolve, stage=f"evolve-r{rnd}")
        ]
        live = [k for k, e in enumerate(evolved)
                if e is not None and (not opts.eliminate or (e and not copies_prompt_wording(e)))]  # fmt: skip
        answers: dict[int, str | None] = {}
        equal: dict[int, str | None] = {}
        if live:
            asks = [{"id": items[k]["id"], "round": rnd, "text": evolved[k],
                     **({"history": current[k]["history"]} if current[k]["history"] else {})} for k in live]  # fmt: skip

            async def answer(ask: dict) -> dict:
                question = [*ask["history"], {"role": "user", "content": ask["text"]}] if "history" in ask else ask["text"]
                return await complete(llm, question, **sample, max_tokens=opts.answer_max_tokens,
                                      seed=call_seed(ctx, "answer", ask["round"], ask["id"]))  # fmt: skip

            for k, res in zip(live, ctx.map(asks, answer, stage=f"answer-r{rnd}")):
                answers[k] = _reply(res.value["text"], opts.strip_replies) if res.ok else None
            if opts.equality_check and opts.eliminate:
                pairs = [{"first": items[k]["instruction"], "second": evolved[k]} for k in live]

                async def same(pair: dict) -> dict:
                    msg = render(TEMPLATES["equal"], first=pair["first"], second=pair["second"])
                    return await complete(llm, msg, temperature=0.0, max_tokens=opts.equality_max_tokens)

                for k, res in zip(live, ctx.map(pairs, same, stage=f"equal-r{rnd}")):
                    equal[k] = parse_equality(res.value["text"]) if res.ok else None
                    unparsed += equal[k] == "unparsed"
        kept = 0
        for k, (node, item) in enumerate(zip(current, items)):
            text = evolved[k]
            if text is None:
                reason = "call_failed"
            elif k in live and answers.get(k) is None:
                reason = "answer_failed"
            else:
                reason = elimination_reason(text, answers.get(k), equal.get(k), opts.sorry_max_words, opts.eliminate)
            if reason is not None:
                reasons[reason] = reasons.get(reason, 0) + 1
                eliminated.append({"parent_id": node["id"], "round": rnd, "operation": item["operation"],
                                   "reason": reason, "evolved": text, "answer": answers.get(k),
                                   "equality": equal.get(k)})  # fmt: skip
                continue  # the parent stays and is evolved again next round
            child = {"id": f"{node['id']}>r{rnd}", "instruction": text, "output": answers[k],
                     "root_id": node["root_id"], "parent_id": node["id"], "operation": item["operation"], "round": rnd,
                     "row": node["row"], "history": node["history"]}  # fmt: skip
            pool.append(child)
            current[k] = child
            kept += 1
        per_round.append({"round": rnd, "attempted": len(items), "kept": kept})
    out = [{**({"instruction": n["instruction"], "input": "", "output": n["output"] or ""} if n["history"] is None
               else {"messages": chat_with(n["history"], n["instruction"], n["output"] or "")}),
            "id": n["id"], "parent_id": n["parent_id"], "root_id": n["root_id"], "operation": n["operation"],
            "round": n["round"],
            "provenance": records[n["row"]].get("provenance") if n["round"] == 0 else provenance(
                ctx, records[n["row"]], seed_id=n["root_id"], parent_id=n["parent_id"], operation=n["operation"],
                round=n["round"])}
           for n in pool]  # fmt: skip
    write_side(ctx, "eliminated.jsonl", eliminated)
    templates = [TEMPLATES["depth"], TEMPLATES["breadth"]] + (
        [TEMPLATES["equal"]] if opts.equality_check and opts.eliminate else []
    )
    counts = {"inputs": len(records), "evolved_kept": len(pool) - len(records) * opts.include_original,
              "eliminated": reasons, "equality_unparsed": unparsed, "rounds": per_round}
    write_method_summary(ctx, "generate", counts, options=opts, templates=templates, echo=True)
    return out
