"""WaveCoder: code instruction data from raw code by an LLM generator and an LLM discriminator.

Paper: Yu et al., "WaveCoder: Widespread And Versatile Enhancement For Code Large Language Models by
Instruction Tuning" (arXiv 2312.14187); behaviour follows microsoft/WaveCoder @ 64e5ef634eee
(`src/data/raw_code_collection/main.py`, `src/data/llm_gen_dis/main.py`, `sampler.py`, `utils.py`).

As the official code: raw code is embedded and a diverse subset picked by k-center greedy (the
registered `select kcenter`, the official picks; run through the registry, so this module holds no
selection logic); for each code the generator writes task_name / instruction / information / solution
with one good and one bad example case in the prompt (T 1, 512 tokens), the reply is checked by
`extract_message`'s rules (one instance, at most one `<noinput>` field, instruction 1-2 sentences,
information at most 2, "none" read as `<noinput>`, a trailing "Analysis:" cut); the discriminator
answers yes/no with a reason per criterion, then an overall answer and reasons, shown the bad cases;
the pair is kept when the overall answer is yes, and it joins the good (yes) or bad (no) case pool
with its analysis, from which later generations draw their examples.

Deviations, and why: the paper's four tasks (summarisation, generation, translation, repair) each
have their own requirements and seed cases (the released code only does generation); the rule filter
of raw code is ours (the released code has none; thresholds are options); pools are per task and
updated after every `round_size` rows (official: after every row; `-o preset official` sets 1) so rows
of a round are generated concurrently; cases are drawn whole (the official bad-case draw samples
characters of the last case's text); an unparseable verdict drops the pair with its status (the
official code crashes on it); prompts and seed cases are our own wording. Inputs: rows with a `code`
field (JSONL) or a folder of source files. `-o constrained auto` asks for JSON in both roles where
the backend constrains output.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from instructkit.data.io import read_records
from instructkit.models import extract_json
from instructkit.models.llm import is_placeholder
from instructkit.registry import method
from instructkit.run.manifest import write_method_summary
from instructkit.run.provenance import provenance
from instructkit.run.runner import RunContext
from instructkit.shared.rows import llm_of, with_json_reply
from instructkit.templates import render

from .common import call_seed, require_choice, run_registered, seeded, write_side

TEMPLATES = ("wavecoder_generate.jinja", "wavecoder_discriminate.jinja")
FIELDS = ("task_name", "instruction", "information", "solution")
NOINPUT = "<noinput>"
LANGUAGES = {".py": "Python", ".js": "JavaScript", ".ts": "TypeScript", ".java": "Java", ".go": "Go",
             ".rb": "Ruby", ".php": "PHP", ".c": "C", ".h": "C", ".cc": "C++", ".cpp": "C++", ".hpp": "C++",
             ".cs": "C#", ".rs": "Rust", ".kt": "Kotlin", ".swift": "Swift", ".scala": "Scala", ".sh": "Shell",
             ".sql": "SQL", ".r": "R", ".jl": "Julia", ".lua": "Lua", ".pl": "Perl"}  # fmt: skip
TASKS: dict[str, tuple[str, str]] = {  # code: (title, definition given to the generator)
    "summarization": ("code summarization", "The instruction asks for a plain-language summary of the code; "
                      "the information holds the code; the solution is the summary, in sentences, without code."),
    "generation": ("code generation", "The instruction describes in words a function that does what the code "
                   "does (without showing it); the information gives any formula or detail it needs, or "
                   "<noinput>; the solution is the code."),
    "translation": ("code translation", "The instruction asks to translate the code into {target}; the "
                    "information holds the code; the solution is the equivalent {target} code."),
    "repair": ("code repair", "Put one realistic bug into the code; the instruction asks to find and fix it; "
               "the information holds the buggy code; the solution is the corrected code, with a comment "
               "at the fix."),
}  # fmt: skip
INSTRUCTION_RULES = ("Instruction: the programming language is named in the instruction.",)
SOLUTION_RULES: dict[str, tuple[str, ...]] = {
    "summarization": (
        "Solution: the solution summarises the code given in the information, and only that code.",
        "Solution: the solution is plain language, with no code, and says what goes in and what comes out.",
        "Solution: nothing in the summary is absent from the code.",
    ),
    "generation": (
        "Solution: the solution is related to the instruction and information and resolves them.",
        "Solution: the solution holds only code, with comments inside the code; no explanation outside it.",
        "Solution: algorithmic logic is not buried in complex or poorly documented functions.",
        "Solution: the code imports the libraries it needs.",
    ),
    "translation": (
        "Solution: the solution is written in the target language named by the instruction.",
        "Solution: the solution keeps the behaviour of the code in the information.",
        "Solution: the solution holds only code, with comments inside the code; no explanation outside it.",
        "Solution: the code imports the libraries it needs.",
    ),
    "repair": (
        "Solution: the information contains a bug and the solution fixes it.",
        "Solution: the solution changes nothing but the bug.",
        "Solution: the solution holds only code, with comments inside the code; no explanation outside it.",
        "Solution: the code imports the libraries it needs.",
    ),
}
# One good and one bad case per task to start the pools (our own examples; verdicts add to them).
SEED_CASES: dict[str, dict[str, dict[str, str]]] = {
    "summarization": {
        "good": {"code": "def mean(xs):\n    return sum(xs) / len(xs)", "task_name": "Summarize mean",
                 "instruction": "Summarize what this Python function computes.",
                 "information": "def mean(xs):\n    return sum(xs) / len(xs)",
                 "solution": "It takes a list of numbers and returns their arithmetic mean: the sum divided by "
                             "the count.", "analysis": "- Overall answer: yes\n- reasons: every requirement is met."},
        "bad": {"code": "def mean(xs):\n    return sum(xs) / len(xs)", "task_name": "Summarize",
                "instruction": "Summarize it.", "information": NOINPUT,
                "solution": "def mean(xs): return sum(xs) / len(xs)",
                "analysis": "- Overall answer: no\n- reasons: the language is not named, the code is missing "
                            "from the information and the solution is code, not a summary."},
    },
    "generation": {
        "good": {"code": "import math\ndef area(r):\n    return math.pi * r ** 2", "task_name": "Circle area",
                 "instruction": "Write a Python function that returns the area of a circle of radius r.",
                 "information": "The area of a circle is pi * r^2.",
                 "solution": "import math\n\ndef area(r):\n    return math.pi * r ** 2",
                 "analysis": "- Overall answer: yes\n- reasons: every requirement is met."},
        "bad": {"code": "import math\ndef area(r):\n    return math.pi * r ** 2", "task_name": "Circle area",
                "instruction": "Write a Python function that returns the area of a circle of radius r.",
                "information": "The area of a circle is pi * r^2.",
                "solution": "def area(r):\n    return math.pi * r ** 2",
                "analysis": "- Overall answer: no\n- reasons: the code uses math without importing it."},
    },
    "translation": {
        "good": {"code": "def add(a, b):\n    return a + b", "task_name": "Translate add",
                 "instruction": "Translate this Python function into Java.",
                 "information": "def add(a, b):\n    return a + b",
                 "solution": "public static int add(int a, int b) {\n    return a + b;\n}",
                 "analysis": "- Overall answer: yes\n- reasons: every requirement is met."},
        "bad": {"code": "def add(a, b):\n    return a + b", "task_name": "Translate add",
                "instruction": "Translate this Python function into Java.",
                "information": "def add(a, b):\n    return a + b",
                "solution": "The Java version adds the two numbers and returns the result.",
                "analysis": "- Overall answer: no\n- reasons: the solution explains instead of giving Java code."},
    },
    "repair": {
        "good": {"code": "def last(xs):\n    return xs[len(xs) - 1]", "task_name": "Fix off-by-one",
                 "instruction": "Find and fix the bug in this Python function that returns the last item.",
                 "information": "def last(xs):\n    return xs[len(xs)]",
                 "solution": "def last(xs):\n    return xs[len(xs) - 1]  # fixed: the last index is len - 1",
                 "analysis": "- Overall answer: yes\n- reasons: every requirement is met."},
        "bad": {"code": "def last(xs):\n    return xs[len(xs) - 1]", "task_name": "Fix",
                "instruction": "Find and fix the bug in this Python function that returns the last item.",
                "information": "def last(xs):\n    return xs[len(xs) - 1]",
                "solution": "def last(xs):\n    return xs[-1]",
                "analysis": "- Overall answer: no\n- reasons: the information has no bug to fix."},
    },
}
_VERDICT = {"type": "string", "enum": ["yes", "no"]}


def _text(max_chars: int) -> dict[str, Any]:
    return {"type": "string", "maxLength": max_chars} if max_chars > 0 else {"type": "string"}


def generation_schema(max_chars: int = 0) -> dict[str, Any]:
    """-o constrained auto: the four fields as one JSON object (each at most max_chars when > 0)."""
    return {"type": "object", "properties": {f: _text(max_chars) for f in FIELDS}, "required": list(FIELDS)}


def verdict_schema(n_rules: int, max_chars: int = 0) -> dict[str, Any]:
    """-o constrained auto: one {answer, reason} per criterion, then the overall answer and reasons."""
    check = {"type": "object", "properties": {"answer": _VERDICT, "reason": _text(max_chars)},
             "required": ["answer", "reason"]}  # fmt: skip
    return {"type": "object", "required": ["checks", "overall", "reasons"],
            "properties": {"checks": {"type": "array", "items": check, "minItems": n_rules, "maxItems": n_rules},
                           "overall": _VERDICT, "reasons": _text(max_chars)}}  # fmt: skip


@dataclass
class WaveCoderOptions:
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # The released driver: generation only, 1 good + 1 bad case, T 1 and 512 tokens in both roles
        # (`make_request` defaults), the pools updated after every row, `coreset.sh`'s seed 42.
        "official": {"tasks": ["generation"], "n_good": 1, "n_bad": 1, "temperature": 1.0, "max_tokens": 512,
                     "discriminator_temperature": 1.0, "discriminator_max_tokens": 512, "round_size": 1,
                     "random_state": 42},
    }  # fmt: skip

    code_field: str = "code"
    language_field: str = "language"  # a row's language; else the file suffix; else default_language
    default_language: str = "Python"
    tasks: list[str] = field(default_factory=lambda: list(TASKS))  # assigned in turn along the coreset order
    translation_targets: list[str] = field(default_factory=lambda: ["Python", "Java", "C++", "JavaScript", "Go"])
    min_chars: int = 50  # rule filter (ours): characters of code, inclusive bounds
    max_chars: int = 2000
    min_lines: int = 3
    max_line_chars: int = 300
    coreset_size: int = 1000  # k-center picks (0: every filtered row, in input order)
    encoder: str | None = None  # embedder for the coreset (default local: all-MiniLM-L6-v2)
    metric: str = "euclidean"
    random_state: int | None = None  # the coreset's first pick (default: the run's seed)
    n_good: int = 1
    n_bad: int = 1
    round_size: int = 8  # rows generated between two pool updates (official: 1)
    temperature: float = 1.0
    max_tokens: int = 512
    discriminator_model: str | None = None  # another model for the discriminator (default: the run's)
    discriminator_temperature: float = 1.0
    discriminator_max_tokens: int = 512
    constrained: str = "off"  # off: labelled text as the paper | auto: JSON in both roles where supported
    constrained_max_chars: int = 0  # constrained auto: longest string the schema allows per field (0: no limit)
    system: str = "You are a careful assistant who writes and reviews programming exercises."
    keep_rejected: bool = False  # also return rejected pairs (wavecoder_keep false)


# ----- raw code -----------------------------------------------------------------------------------
def rule_failure(code: str, opts: WaveCoderOptions) -> str | None:
    """Why a raw code is dropped before generation (None: kept)."""
    text = code.strip()
    if not text:
        return "empty"
    if len(text) < opts.min_chars:
        return "too_short"
    if len(text) > opts.max_chars:
        return "too_long"
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if len(lines) < opts.min_lines:
        return "too_few_lines"
    if max(len(ln) for ln in lines) > opts.max_line_chars:
        return "long_line"
    return None


def load_code(records: list[dict], ctx: RunContext, opts: WaveCoderOptions) -> list[dict]:
    """Code items {id, code, language, parent} from rows with `code_field`, or from the input path (a
    folder of source files, or a JSONL of rows)."""
    if not records:
        path = ctx.extras.get("input_path")
        if not path:
            raise ValueError("wavecoder: give rows with a code field or a folder of source files")
        p = Path(path)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in LANGUAGES)
            if not files:
                raise ValueError(f"{p}: no source files ({', '.join(sorted(LANGUAGES))})")
            return [{"id": str(f.relative_to(p)), "code": f.read_text(encoding="utf-8", errors="replace"),
                     "language": LANGUAGES[f.suffix.lower()], "parent": None} for f in files]  # fmt: skip
        records = read_records(p)
    items = []
    for i, rec in enumerate(records):
        code = rec.get(opts.code_field)
        if not isinstance(code, str):
            raise ValueError(f"wavecoder: row {i} has no {opts.code_field!r} text (fields: {sorted(rec)})")
        lang = rec.get(opts.language_field) or LANGUAGES.get(Path(str(rec.get("path", ""))).suffix.lower())
        items.append({"id": str(rec.get("id", i)), "code": code, "language": str(lang or opts.default_language),
                      "parent": rec})  # fmt: skip
    return items


def filter_code(items: list[dict], opts: WaveCoderOptions) -> tuple[list[dict], list[dict]]:
    """(kept, dropped with reason): the rule filter, then exact duplicates after whitespace folding."""
    kept, dropped, seen = [], [], set()
    for item in items:
        reason = rule_failure(item["code"], opts)
        key = " ".join(item["code"].split())
        if reason is None and key in seen:
            reason = "duplicate"
        if reason is not None:
            dropped.append({"id": item["id"], "reason": reason})
            continue
        seen.add(key)
        kept.append(item)
    return kept, dropped


# ----- the generator's reply --------------------------------------------------------------------
_SENTENCE = re.compile(r"[.!?](?:\s|$)")
_INSTANCE = re.compile(r"task_name:\s*(.*?)\s*instruction:\s*(.*?)\s*information:\s*(.*?)\s*solution:\s*(.*?)"
                       r"(?=\ntask_name:|\Z)", re.DOTALL)  # fmt: skip
NONE_INFO = {"none", "none.", "none,", "no additional information is required", ""}


def sentences(text: str) -> int:
    return len([s for s in _SENTENCE.split(text) if s != ""])


def parse_instance(text: str, task: str = "generation", json_reply: bool = False) -> tuple[dict[str, str] | None, str]:
    """The four fields and "ok", or None and why the reply is unusable (the official rules; the
    information's 2-sentence limit only where it is prose: generation, the released code's one task)."""
    if json_reply:
        obj = _json(text)
        if not isinstance(obj, dict) or not all(isinstance(obj.get(f), str) for f in FIELDS):
            return None, "unparsed"
        fields = {f: obj[f].strip() for f in FIELDS}
    else:
        text = re.split(r"\n\s*Analysis:", text, maxsplit=1)[0]
        matches = _INSTANCE.findall(text)
        if len(matches) != 1:
            return None, "unparsed" if not matches else "several_instances"
        fields = dict(zip(FIELDS, (m.strip() for m in matches[0])))
    if sum(v in (NOINPUT, NOINPUT + ".") for v in fields.values()) > 1:
        return None, "empty_fields"
    if not 1 <= sentences(fields["instruction"]) <= 2:
        return None, "instruction_sentences"
    if fields["information"].lower() in NONE_INFO:
        fields["information"] = NOINPUT
    if task == "generation" and fields["information"] != NOINPUT and sentences(fields["information"]) > 2:
        return None, "information_sentences"
    if not fields["solution"]:
        return None, "empty_solution"
    return fields, "ok"


def _json(text: str) -> Any:
    """The reply's JSON value, or None (a reply cut at max_tokens is not JSON)."""
    try:
        return extract_json(text)
    except ValueError:
        return None


def example_text(fields: dict[str, str]) -> str:
    return "\n".join(f"{f}: {fields[f]}" for f in FIELDS)


def case_text(case: dict[str, str]) -> str:
    """A pool case as the prompts show it: the code, the example, the analysis."""
    return f"Input:\n{case['code']}\n\nOutput:\n{example_text(case)}\n\nAnalysis:\n{case['analysis']}"


# ----- the discriminator's reply ----------------------------------------------------------------
_ANSWER = re.compile(r"<answer:\s*(yes|no)\b[\s,.:;]*(.*?)>", re.IGNORECASE | re.DOTALL)
_OVERALL = re.compile(r"overall answer\W*(yes|no)\b", re.IGNORECASE)
_REASONS = re.compile(r"-\s*reasons?:\s*(.*)", re.IGNORECASE | re.DOTALL)


def parse_verdict(text: str, json_reply: bool = False) -> dict[str, Any]:
    """{overall: "yes"|"no"|None, checks: [{answer, reason}], reasons, analysis}: the analysis is the
    text kept with the case in its pool."""
    if json_reply:
        obj = _json(text)
        if not isinstance(obj, dict) or obj.get("overall") not in ("yes", "no"):
            return {"overall": None, "checks": [], "reasons": None, "analysis": text.strip()}
        checks = [{"answer": c.get("answer"), "reason": c.get("reason")} for c in obj.get("checks") or []
                  if isinstance(c, dict)]  # fmt: skip
        lines = [f"{i}. <answer: {c['answer']}, {c['reason']}>" for i, c in enumerate(checks, 1)]
        analysis = "\n".join([*lines, f"- Overall answer: {obj['overall']}", f"- reasons: {obj.get('reasons', '')}"])
        return {"overall": obj["overall"], "checks": checks, "reasons": obj.get("reasons"), "analysis": analysis}
    checks = [{"answer": a.lower(), "reason": r.strip()} for a, r in _ANSWER.findall(text)]
    overall = _OVERALL.search(text)
    reasons = _REASONS.search(text[overall.end():] if overall else "")
    return {"overall": overall.group(1).lower() if overall else None, "checks": checks,
            "reasons": reasons.group(1).strip() if reasons else None, "analysis": text.strip()}  # fmt: skip


# ----- pools ------------------------------------------------------------------------------------
def seed_pools(tasks: list[str]) -> dict[str, dict[str, list[dict]]]:
    """{task: {"good": [cases], "bad": [cases]}}, each case with an `id` ("seed:<task>:good")."""
    return {t: {kind: [{**SEED_CASES[t][kind], "id": f"seed:{t}:{kind}"}] for kind in ("good", "bad")} for t in tasks}


def draw_cases(pools: dict, task: str, n_good: int, n_bad: int, rng: Any) -> tuple[list[dict], list[dict]]:
    """n_good good and n_bad bad cases of the task (fewer while a pool is smaller), drawn whole."""
    good, bad = pools[task]["good"], pools[task]["bad"]
    return rng.sample(good, min(n_good, len(good))), rng.sample(bad, min(n_bad, len(bad)))


def feed_back(pools: dict, results: list[dict]) -> None:
    """Add every judged pair to its task's good (overall yes) or bad (no) pool, in row order."""
    for res in results:
        if res.get("overall") in ("yes", "no"):
            kind = "good" if res["overall"] == "yes" else "bad"
            pools[res["task"]][kind].append({**res["fields"], "code": res["code"], "analysis": res["analysis"],
                                             "id": res["id"]})  # fmt: skip


def _task_title(task: str, target: str | None) -> tuple[str, str]:
    title, definition = TASKS[task]
    return title, definition.format(target=target or "another language")


@method("generate", "wavecoder", options=WaveCoderOptions, reads=("{code_field}",))
def wavecoder(records: list[dict], ctx: RunContext) -> list[dict]:
    """WaveCoder: raw code -> rule filter -> k-center subset -> LLM generator + discriminator with feedback."""
    opts = ctx.options or WaveCoderOptions()
    llm = llm_of(ctx)
    judge = llm.derive(opts.discriminator_model) if opts.discriminator_model else llm
    for t in opts.tasks:
        require_choice("wavecoder: task", t, tuple(TASKS))
    require_choice("wavecoder: constrained", opts.constrained, ("auto", "off"))
    gen_json = opts.constrained == "auto" and bool(llm.supports_json_schema)
    dis_json = opts.constrained == "auto" and bool(judge.supports_json_schema)
    items, dropped = filter_code(load_code(records, ctx, opts), opts)
    if opts.coreset_size > 0 and items:
        picked = run_registered("select", "kcenter", [{"code": it["code"]} for it in items], ctx,
                                {"k": opts.coreset_size, "fields": ["code"], "encoder": opts.encoder,
                                 "metric": opts.metric, "random_state": opts.random_state})  # fmt: skip
        items = [items[r["_select_index"]] for r in picked]
    pools = seed_pools(list(opts.tasks))
    for j, item in enumerate(items):
        item["task"] = opts.tasks[j % len(opts.tasks)]
        targets = [t for t in opts.translation_targets if t.lower() != item["language"].lower()]
        item["target"] = seeded(ctx, "wavecoder-target", item["id"]).choice(targets) if (
            item["task"] == "translation" and targets) else None  # fmt: skip

    async def one(job: dict) -> dict:
        title, definition = _task_title(job["task"], job["target"])
        prompt = render(TEMPLATES[0], language=job["language"], task_title=title, task_definition=definition,
                        good=[case_text(c) for c in job["good"]], bad=[case_text(c) for c in job["bad"]],
                        code=job["code"])  # fmt: skip
        msgs = [{"role": "system", "content": opts.system}, {"role": "user", "content": prompt}]
        params: dict[str, Any] = {"temperature": opts.temperature, "max_tokens": opts.max_tokens,
                                  "seed": call_seed(ctx, "wavecoder-gen", job["id"])}  # fmt: skip
        if gen_json:
            params["json_schema"] = generation_schema(opts.constrained_max_chars)
            msgs = with_json_reply(msgs, params["json_schema"])
        comp = await llm.achat(msgs, **params)
        out: dict[str, Any] = {"gen_raw": comp.text, "gen_finish": comp.finish_reason}
        if is_placeholder(comp):  # dry run: walk the discriminator as if the reply parsed
            fields, status = dict.fromkeys(FIELDS, comp.text), "ok"
        else:
            fields, status = parse_instance(comp.text, job["task"], gen_json)
        if fields is None:
            return {**out, "status": status}
        steps = [{"part": "Instruction", "rules": INSTRUCTION_RULES},
                 {"part": "Solution", "rules": SOLUTION_RULES[job["task"]]}]  # fmt: skip
        ask = render(TEMPLATES[1], steps=steps, bad=[case_text(c) for c in job["bad"]], task_title=title,
                     code=job["code"], example=example_text(fields))  # fmt: skip
        dparams: dict[str, Any] = {"temperature": opts.discriminator_temperature,
                                   "max_tokens": opts.discriminator_max_tokens,
                                   "seed": call_seed(ctx, "wavecoder-dis", job["id"])}  # fmt: skip
        dmsgs = [{"role": "system", "content": opts.system}, {"role": "user", "content": ask}]
        if dis_json:
            dparams["json_schema"] = verdict_schema(len(INSTRUCTION_RULES) + len(SOLUTION_RULES[job["task"]]),
                                                    opts.constrained_max_chars)
            dmsgs = with_json_reply(dmsgs, dparams["json_schema"])
        dcomp = await judge.achat(dmsgs, **dparams)
        verdict = parse_verdict(dcomp.text, dis_json)
        status = {"yes": "kept", "no": "rejected"}.get(verdict["overall"] or "", "verdict_unparsed")
        return {**out, "status": status, "fields": fields, "dis_raw": dcomp.text, **verdict}

    judged: list[dict] = []
    size = max(1, opts.round_size)
    for start in range(0, len(items), size):
        jobs = []
        for item in items[start : start + size]:
            good, bad = draw_cases(pools, item["task"], opts.n_good, opts.n_bad,
                                   seeded(ctx, "wavecoder-cases", item["id"], start))  # fmt: skip
            jobs.append({k: item[k] for k in ("id", "code", "language", "task", "target")} | {"good": good, "bad": bad})
        results = []
        for job, res in zip(jobs, ctx.map(jobs, one, stage="pairs")):
            value = res.value if res.ok and not res.estimated else {}
            status = value.get("status") or ("pending" if res.pending or res.estimated else "call_failed")
            results.append({**value, "status": status, "id": job["id"], "task": job["task"], "code": job["code"],
                            "language": job["language"], "target": job["target"], "error": res.error,
                            "good_cases": [c["id"] for c in job["good"]], "bad_cases": [c["id"] for c in job["bad"]],
                            "round": start // size})  # fmt: skip
        feed_back(pools, results)
        judged.extend(results)

    parents = {it["id"]: it["parent"] for it in items}
    out = []
    for res in judged:
        if res["status"] != "kept" and not (opts.keep_rejected and res["status"] == "rejected"):
            continue
        f = res["fields"]
        out.append({"instruction": f["instruction"], "input": "" if f["information"] == NOINPUT else f["information"],
                    "output": f["solution"], "task": res["task"], "task_name": f["task_name"],
                    "language": res["language"], "target_language": res["target"], "code_id": res["id"],
                    "wavecoder_keep": res["status"] == "kept", "wavecoder_checks": res["checks"],
                    "wavecoder_reasons": res["reasons"],
                    "provenance": provenance(ctx, parents[res["id"]], doc_id=res["id"])})  # fmt: skip
    write_side(ctx, "filtered.jsonl", dropped)
    write_side(ctx, "verdicts.jsonl", judged)
    statuses: dict[str, int] = {}
    for res in judged:
        statuses[res["status"]] = statuses.get(res["status"], 0) + 1
    counts = {"inputs": len(items) + len(dropped), "filtered": _count(dropped), "coreset": len(items),
              "statuses": statuses, "kept": statuses.get("kept", 0),
              "pools": {t: {k: len(v) for k, v in p.items()} for t, p in pools.items()}}  # fmt: skip
    write_method_summary(ctx, "generate", counts, options=opts, templates=TEMPLATES, echo=True)
    return out


def _count(dropped: list[dict]) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in dropped:
        out[d["reason"]] = out.get(d["reason"], 0) + 1
    return out
