"""Bonito-style task synthesis: instruction-tuning tasks of 16 types generated from raw document passages.

Paper: Nayak et al., "Learning to Generate Instruction Tuning Datasets for Zero-Shot Task Adaptation"
(ACL Findings 2024, arXiv 2402.18334); formats follow BatsResearch/bonito (`bonito/abstract.py`).

Two modes:
- `native` (preset `official`): the Bonito model's own input, byte for byte (`<|tasktype|>\\n{full type}
  \\n<|context|>\\n{passage}\\n<|task|>\\n`), sent as a raw completion with no chat template, as
  upstream's `vllm.LLM.generate` does (`LLM.acomplete`: `/v1/completions` on a server, the model's own
  tokenizer and BOS in process). The reply is kept only with exactly one `<|pipe|>`; `{{context}}` is
  replaced by the passage on both sides (as upstream since Feb 2025).
- `instruct` (default): any instruct model writes one task of the type as a JSON object with per-type
  fields (our own templates, prompts/bonito_instruct.jinja); we validate the fields per type and build
  the task input from them (prompts/bonito_task_input.jinja). Replies are read as JSON or as labelled
  lines (a few per-type label aliases, and a bare reply for one-field types).

Deviations, and why: upstream drops unparseable generations silently; here every invalid generation is
dropped AND counted per type and reason, with its raw text in `bonito.invalid.jsonl`. Native mode adds
by default the validators Bonito lacks (non-empty sides, passage placeholder present, extractive answer
in the passage, yes/no answer, multiple-choice answer among the input's text: they drop tasks a model
got wrong); `-o preset official` turns them off (`native_checks=false`), keeping exactly the replies
upstream keeps (tests/golden/bonito). Sampling defaults are the README triple
(max_tokens 256, T 0.5, top_p 0.95) with an explicit per-call seed. Output rows are Alpaca-shaped:
`instruction` holds Bonito's task input (passage included), `output` its answer, plus provenance
(doc_id, passage_index, task_type).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from instructkit.models import extract_json
from instructkit.registry import method
from instructkit.run.manifest import write_method_summary
from instructkit.run.provenance import provenance
from instructkit.run.runner import RunContext
from instructkit.shared.rows import llm_of
from instructkit.templates import render

from .common import (
    call_seed,
    complete,
    passages_for,
    require_choice,
    seeded,
    word_count,
    write_side,
)

TASK_TYPES: dict[str, str] = {
    "exqa": "extractive question answering",
    "mcqa": "multiple-choice question answering",
    "qg": "question generation",
    "qa": "question answering without choices",
    "ynqa": "yes-no question answering",
    "coref": "coreference resolution",
    "paraphrase": "paraphrase generation",
    "paraphrase_id": "paraphrase identification",
    "sent_comp": "sentence completion",
    "sentiment": "sentiment",
    "summarization": "summarization",
    "text_gen": "text generation",
    "topic_class": "topic classification",
    "wsd": "word sense disambiguation",
    "te": "textual entailment",
    "nli": "natural language inference",
}
FULL_TO_CODE = {v: k for k, v in TASK_TYPES.items()}
PIPE = "<|pipe|>"
TEMPLATES = ("bonito_instruct.jinja", "bonito_task_input.jinja")

OPTION_LETTERS = "ABCDEFGH"  # a multiple-choice task shows at most this many options, lettered

@dataclass
class BonitoOptions:
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # Upstream's input format over raw completion and the README's sampling triple (the defaults).
        # Upstream keeps every reply with one `<|pipe|>`, so our extra checks are off.
        "official": {"mode": "native", "temperature": 0.5, "top_p": 0.95, "max_tokens": 256, "native_checks": False},
    }

    mode: str = "instruct"  # "instruct" (any instruct model, JSON fields) or "native" (Bonito weights)
    task_types: list[str] = field(default_factory=lambda: list(TASK_TYPES))  # codes or full names
    types_per_passage: int = 0  # 0: every type for every passage; k: k types per passage, balanced
    text_field: str = "text"
    id_field: str | None = None
    max_passage_tokens: int = 384
    max_passages: int = 0  # 0: all
    passages_per_doc: int = 0  # 0: all; k: only the first k passages of each document
    temperature: float = 0.5
    top_p: float = 0.95
    max_tokens: int = 256
    native_checks: bool = True  # native: our validators (validate_native); false keeps what upstream keeps
    require_context: bool = True  # native checks: the task input must contain the passage ({{context}})
    reply_format: str = "lines"  # instruct: "lines" (labelled lines) or "json"; either is parsed
    constrained: bool = True  # instruct + json: send the JSON schema where the backend can enforce it


def task_code(task_type: str) -> str:
    """The short code of a task type given as code or full name (Bonito's ValueError otherwise)."""
    t = task_type.strip()
    if t in TASK_TYPES:
        return t
    if t in FULL_TO_CODE:
        return FULL_TO_CODE[t]
    raise ValueError(f"Task type {task_type} not recognized")


def native_input(task_type: str, context: str) -> str:
    """Bonito's model input, byte-identical to `AbstractBonito._prepare_bonito_input`."""
    if task_type in FULL_TO_CODE:
        full = task_type
    elif task_type in TASK_TYPES:
        full = TASK_TYPES[task_type]
    else:
        raise ValueError(f"Task type {task_type} not recognized")
    return "<|tasktype|>\n" + full.strip() + "\n<|context|>\n" + context.strip() + "\n<|task|>\n"


def parse_native(prediction: str, context: str) -> tuple[str, str] | None:
    """(input, output) as `AbstractBonito._postprocess_dataset`, or None when it would be filtered."""
    pair = prediction.strip().split(PIPE)
    if len(pair) != 2:
        return None
    ctx = context.strip()
    return pair[0].strip().replace("{{context}}", ctx), pair[1].strip().replace("{{context}}", ctx)


# ----- validation ------------------------------------------------------------------------------
def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def in_passage(span: str, passage: str) -> bool:
    """A span occurs in the passage (case, punctuation and spacing ignored)."""
    s = _norm(span)
    return bool(s) and f" {s} " in f" {_norm(passage)} "


YES_NO = {"yes": "yes", "no": "no", "true": "yes", "false": "no"}
NLI = {"entailment": "entailment", "entails": "entailment", "contradiction": "contradiction",
       "contradicts": "contradiction", "neutral": "neutral", "neither": "neutral"}  # fmt: skip
SENTIMENT = {"positive", "negative", "neutral"}
FIELD_SPECS: dict[str, tuple[tuple[str, str], ...]] = {  # per type: (field, what the model should write)
    "exqa": (
        ("question", "a question the passage answers"),
        ("answer", "a short span copied from the passage"),
    ),
    "mcqa": (
        ("question", "a question about the passage"),
        ("options", "option 1 | option 2 | option 3"),
        ("answer", "the correct option, repeated exactly"),
    ),
    "qg": (("answer", "a fact from the passage"), ("question", "the question that asks for it")),
    "qa": (("question", "a question about the passage"), ("answer", "its answer")),
    "ynqa": (("question", "a yes/no question about the passage"), ("answer", "yes or no")),
    "coref": (
        ("mention", "a pronoun or short phrase from the passage"),
        ("referent", "the words of the passage it refers to"),
    ),
    "paraphrase": (
        ("sentence", "a sentence copied from the passage"),
        ("paraphrase", "the same meaning in other words"),
    ),
    "paraphrase_id": (
        ("sentence1", "a sentence copied from the passage"),
        ("sentence2", "another sentence"),
        ("label", "yes or no"),
    ),
    "sent_comp": (
        ("beginning", "the first part of a sentence from the passage"),
        ("ending", "the rest of that sentence"),
    ),
    "sentiment": (("label", "positive, negative or neutral"),),
    "summarization": (("summary", "a short summary of the passage"),),
    "text_gen": (("instruction", "a writing instruction"), ("text", "the text that carries it out")),
    "topic_class": (("options", "topic 1 | topic 2 | topic 3"), ("answer", "the topic that fits")),
    "wsd": (
        ("word", "a word from the passage"),
        ("sentence1", "a sentence from the passage that uses the word"),
        ("sentence2", "another sentence that uses the word"),
        ("label", "yes or no"),
    ),
    "te": (("hypothesis", "a statement"), ("label", "yes or no")),
    "nli": (("hypothesis", "a statement"), ("label", "entailment, contradiction or neutral")),
}
FIELDS: dict[str, tuple[str, ...]] = {code: tuple(f for f, _ in spec) for code, spec in FIELD_SPECS.items()}
LABELS = {"sentence1": "Sentence 1", "sentence2": "Sentence 2"}


ALIASES: dict[str, dict[str, str]] = {  # other labels models use for a type's field
    "sentiment": {"sentiment": "label"},
    "topic_class": {"topic": "answer"},
    "te": {"answer": "label"},
    "nli": {"answer": "label", "relation": "label"},
    "paraphrase_id": {"answer": "label"},
    "wsd": {"answer": "label"},
    "ynqa": {"label": "answer"},
}


def field_label(name: str) -> str:
    return LABELS.get(name, name.capitalize())


OUTPUT_FIELD = {"exqa": "answer", "mcqa": "answer", "qg": "question", "qa": "answer", "ynqa": "answer",
                "coref": "referent", "paraphrase": "paraphrase", "paraphrase_id": "label", "sent_comp": "ending",
                "sentiment": "label", "summarization": "summary", "text_gen": "text", "topic_class": "answer",
                "wsd": "label", "te": "label", "nli": "label"}  # fmt: skip


def schema_for(code: str) -> dict[str, Any]:
    props = {f: ({"type": "array", "items": {"type": "string"}, "minItems": 2} if f == "options" else {"type": "string"})
             for f in FIELDS[code]}  # fmt: skip
    return {"type": "object", "properties": props, "required": list(FIELDS[code])}


def _label(value: str, table: dict[str, str]) -> str | None:
    return table.get(value.strip().strip(".!\"'").lower())


def validate_fields(code: str, fields: Any, passage: str) -> tuple[dict[str, Any] | None, str]:
    """Normalized fields and "ok", or None and the reason they are invalid for this task type."""
    if not isinstance(fields, dict):
        return None, "not_an_object"
    clean: dict[str, Any] = {}
    for name in FIELDS[code]:
        value = fields.get(name)
        if name == "options":
            if value is None:
                return None, "missing_options"
            if not isinstance(value, list) or not all(isinstance(o, (str, int, float)) for o in value):
                return None, "options_not_a_list"
            opts = [str(o).strip() for o in value if str(o).strip()]
            if len(opts) < 2 or len({o.lower() for o in opts}) != len(opts):
                return None, "options_too_few_or_repeated"
            if len(opts) > len(OPTION_LETTERS):
                return None, "options_too_many"
            clean[name] = opts
        else:
            if isinstance(value, bool):
                value = "true" if value else "false"
            elif isinstance(value, (int, float)):
                value = str(value)
            if not isinstance(value, str) or not value.strip():
                return None, f"missing_{name}"
            clean[name] = value.strip()
    check = _CHECKS.get(code)
    reason = check(clean, passage) if check else None
    return (None, reason) if reason else (clean, "ok")


def _check_exqa(f: dict, passage: str) -> str | None:
    return None if in_passage(f["answer"], passage) else "answer_not_in_passage"


def _check_choice(f: dict, passage: str) -> str | None:
    match = [o for o in f["options"] if o.lower() == f["answer"].lower()]
    if not match:
        letter = f["answer"].strip().rstrip(".)").upper()
        if len(letter) == 1 and "A" <= letter < chr(ord("A") + len(f["options"])):
            match = [f["options"][ord(letter) - ord("A")]]
    if not match:
        return "answer_not_an_option"
    f["answer"] = match[0]
    return None


def _check_yes_no(key: str) -> Callable[[dict, str], str | None]:
    def check(f: dict, passage: str) -> str | None:
        label = _label(f[key], YES_NO)
        if label is None:
            return f"{key}_not_yes_no"
        f[key] = label
        return None

    return check


def _check_nli(f: dict, passage: str) -> str | None:
    label = _label(f["label"], NLI)
    if label is None:
        return "label_not_nli"
    f["label"] = label
    return None


def _check_sentiment(f: dict, passage: str) -> str | None:
    label = f["label"].strip().strip(".!").lower()
    if label not in SENTIMENT:
        return "label_not_sentiment"
    f["label"] = label
    return None


def _check_coref(f: dict, passage: str) -> str | None:
    if not in_passage(f["mention"], passage):
        return "mention_not_in_passage"
    if _norm(f["mention"]) == _norm(f["referent"]):
        return "referent_is_mention"
    return None if in_passage(f["referent"], passage) else "referent_not_in_passage"


def _check_paraphrase(f: dict, passage: str) -> str | None:
    if not in_passage(f["sentence"], passage):
        return "sentence_not_in_passage"
    return "paraphrase_is_copy" if _norm(f["sentence"]) == _norm(f["paraphrase"]) else None


def _check_paraphrase_id(f: dict, passage: str) -> str | None:
    if not in_passage(f["sentence1"], passage):
        return "sentence1_not_in_passage"
    return _check_yes_no("label")(f, passage)


def _check_sent_comp(f: dict, passage: str) -> str | None:
    if not in_passage(f["beginning"], passage):
        return "beginning_not_in_passage"
    return "ending_repeats_beginning" if _norm(f["ending"]) in _norm(f["beginning"]) else None


def _check_question(key: str) -> Callable[[dict, str], str | None]:
    def check(f: dict, passage: str) -> str | None:
        return None if f[key].rstrip().endswith("?") else f"{key}_not_a_question"

    return check


def _check_ynqa(f: dict, passage: str) -> str | None:
    return _check_question("question")(f, passage) or _check_yes_no("answer")(f, passage)


def _check_summary(f: dict, passage: str) -> str | None:
    return None if word_count(f["summary"]) < word_count(passage) else "summary_not_shorter"


def _check_wsd(f: dict, passage: str) -> str | None:
    word = _norm(f["word"])
    if not word or not in_passage(f["word"], passage):
        return "word_not_in_passage"
    if not (in_passage(word, f["sentence1"]) and in_passage(word, f["sentence2"])):
        return "word_not_in_both_sentences"
    return _check_yes_no("label")(f, passage)


_CHECKS: dict[str, Callable[[dict, str], str | None]] = {
    "exqa": _check_exqa,
    "mcqa": _check_choice,
    "qg": _check_question("question"),
    "qa": _check_question("question"),
    "ynqa": _check_ynqa,
    "coref": _check_coref,
    "paraphrase": _check_paraphrase,
    "paraphrase_id": _check_paraphrase_id,
    "sent_comp": _check_sent_comp,
    "sentiment": _check_sentiment,
    "summarization": _check_summary,
    "topic_class": _check_choice,
    "wsd": _check_wsd,
    "te": _check_yes_no("label"),
    "nli": _check_nli,
}


def native_task(
    code: str, prediction: str, passage: str, checks: bool = True, require_context: bool = True
) -> tuple[tuple[str, str] | None, str]:
    """A native reply's (input, output) and status: upstream's `<|pipe|>` filter, then our checks if asked."""
    pair = parse_native(prediction, passage)
    if pair is None:
        return None, "pipe_count"
    return pair, validate_native(code, *pair, passage, require_context) if checks else "ok"


def validate_native(
    code: str, task_input: str, output: str, passage: str, require_context: bool = True
) -> str:
    """Checks Bonito itself lacks, on a parsed native (input, output): "ok" or the reason."""
    if not task_input or not output:
        return "empty_input_or_output"
    if require_context and passage.strip() not in task_input:
        return "no_context_placeholder"
    if code == "exqa" and not in_passage(output, passage):
        return "answer_not_in_passage"
    if code == "ynqa" and _label(output, YES_NO) is None:
        return "answer_not_yes_no"
    if code == "mcqa" and not in_passage(output, task_input.replace(passage.strip(), " ")):
        return "answer_not_an_option"
    return "ok"


def parse_lines(code: str, text: str) -> dict[str, Any] | None:
    """Fields from labelled lines ("Question: ..."); a value runs on until the next label; first wins."""
    names = {**ALIASES.get(code, {}), **{re.sub(r"\s+", "", field_label(f).lower()): f for f in FIELDS[code]}}
    label_re = re.compile(r"^[\s*#>-]*([A-Za-z][A-Za-z ]*?\s*\d?)[\s*]*:\s*(.*)$")
    values: dict[str, list[str]] = {}
    current: str | None = None
    for line in text.splitlines():
        m = label_re.match(line)
        key = names.get(re.sub(r"\s+", "", m.group(1).lower())) if m else None
        if key is not None:
            current = key if key not in values else None
            if current is not None:
                values[current] = [m.group(2).strip()] if m.group(2).strip() else []
        elif current is not None and line.strip():
            values[current].append(line.strip())
        elif not line.strip() and current is not None and values[current]:
            current = None
    if not values:
        if len(FIELDS[code]) == 1 and text.strip():  # a one-field type answered without its label
            return {FIELDS[code][0]: text.strip().strip('"').strip()}
        return None
    out: dict[str, Any] = {}
    for key, lines in values.items():
        if key == "options":
            items = lines if len(lines) > 1 else re.split(r"\s*[|;]\s*", lines[0]) if lines else []
            out[key] = [
                re.sub(r"^\s*(?:[A-Ha-h][.)]|[-*\u2022]|\d+[.)])\s+", "", o).strip()
                for o in items
                if o.strip()
            ]
        else:
            out[key] = " ".join(lines).strip().strip('"').strip()
    return out


def parse_instruct(code: str, text: str, passage: str) -> tuple[dict[str, Any] | None, str]:
    """(record fields, status) from an instruct model's reply: a JSON object or labelled lines."""
    try:
        data = extract_json(text)
    except ValueError:
        data = parse_lines(code, text)
        if data is None:
            return None, "unparseable"
    fields, status = validate_fields(code, data, passage)
    if fields is None:
        return None, status
    task_input = render("bonito_task_input.jinja", task_type=code, passage=passage.strip(), f=fields)
    return {"instruction": task_input, "output": fields[OUTPUT_FIELD[code]], "fields": fields}, "ok"


# ----- the method ----------------------------------------------------------------------------
def plan_jobs(passages: list[Any], codes: list[str], per_passage: int, rng: Any) -> list[tuple[int, str]]:
    """(passage number, task code) pairs: all types per passage, or k per passage cycling a shuffled list."""
    if per_passage <= 0 or per_passage >= len(codes):
        return [(i, c) for i in range(len(passages)) for c in codes]
    order = list(codes)
    rng.shuffle(order)
    jobs, k = [], 0
    for i in range(len(passages)):
        for _ in range(per_passage):
            jobs.append((i, order[k % len(order)]))
            k += 1
    return jobs


@method("generate", "bonito", options=BonitoOptions, reads=("{text_field}",))
def bonito(records: list[dict], ctx: RunContext) -> list[dict]:
    """Bonito-style tasks (16 types) from document passages; native Bonito format or any instruct model."""
    opts = ctx.options or BonitoOptions()
    require_choice("mode", opts.mode, ("instruct", "native"))
    require_choice("reply_format", opts.reply_format, ("lines", "json"))
    llm = llm_of(ctx)
    codes = [task_code(t) for t in opts.task_types]
    passages = passages_for(records, ctx, opts.text_field, opts.max_passage_tokens, opts.id_field)
    if opts.passages_per_doc:
        passages = [p for p in passages if p.passage_index < opts.passages_per_doc]
    if opts.max_passages:
        passages = passages[: opts.max_passages]
    jobs = plan_jobs(passages, codes, opts.types_per_passage, seeded(ctx, "bonito-types"))
    items = [{"passage": passages[i].text, "doc_id": passages[i].doc_id, "passage_index": passages[i].passage_index,
              "task_type": code} for i, code in jobs]  # fmt: skip
    use_schema = (
        opts.mode == "instruct"
        and opts.reply_format == "json"
        and opts.constrained
        and llm.supports_json_schema
    )
    specs = {c: [(f, field_label(f), hint) for f, hint in FIELD_SPECS[c]] for c in codes}

    async def one(item: dict) -> dict:
        code = item["task_type"]
        if opts.mode == "native":
            msg = native_input(code, item["passage"])
        else:
            msg = render(
                "bonito_instruct.jinja",
                task_type=code,
                task_name=TASK_TYPES[code],
                passage=item["passage"].strip(),
                fields=specs[code],
                reply_format=opts.reply_format,
            )
        params: dict[str, Any] = {"temperature": opts.temperature, "top_p": opts.top_p, "max_tokens": opts.max_tokens,
                                  "seed": call_seed(ctx, "bonito", item["doc_id"], item["passage_index"], code)}  # fmt: skip
        if use_schema:
            params["json_schema"] = schema_for(code)
        return await complete(llm, msg, raw=opts.mode == "native", **params)

    results = ctx.map(items, one, stage=f"synthesize-{opts.mode}")
    out: list[dict] = []
    invalid: list[dict] = []
    per_type: dict[str, dict[str, Any]] = {c: {"attempted": 0, "valid": 0, "invalid": {}} for c in codes}
    for item, res in zip(items, results):
        code = item["task_type"]
        stats = per_type[code]
        stats["attempted"] += 1
        row: dict[str, Any] | None = None
        if not res.ok:
            status = "pending" if res.pending else "call_failed"
        elif res.estimated:  # dry run: a placeholder row, so a pipeline's later steps are estimated on it
            row, status = {"instruction": res.value["text"], "output": res.value["text"]}, "ok"
        elif opts.mode == "native":
            pair, status = native_task(code, res.value["text"], item["passage"], opts.native_checks, opts.require_context)
            if status == "ok" and pair is not None:
                row = {"instruction": pair[0], "output": pair[1]}
        else:
            row, status = parse_instruct(code, res.value["text"], item["passage"])
        if status != "ok" or row is None:
            stats["invalid"][status] = stats["invalid"].get(status, 0) + 1
            invalid.append({"doc_id": item["doc_id"], "passage_index": item["passage_index"], "task_type": code,
                            "status": status, "raw": res.value["text"] if res.ok else None, "error": res.error})  # fmt: skip
            continue
        stats["valid"] += 1
        out.append({"instruction": row["instruction"], "input": "", "output": row["output"], "task_type": code,
                    "task_type_name": TASK_TYPES[code], "doc_id": item["doc_id"],
                    "passage_index": item["passage_index"], "bonito_mode": opts.mode,
                    **({"bonito_fields": row["fields"]} if "fields" in row else {}),
                    "provenance": provenance(ctx, doc_id=item["doc_id"], passage_index=item["passage_index"],
                                             task_type=code)})  # fmt: skip
    write_side(ctx, "invalid.jsonl", invalid)
    tokens = sum(r.value.get("completion_tokens", 0) for r in results if r.ok)
    counts = {"passages": len(passages), "attempted": len(items), "valid": len(out), "invalid": len(invalid),
              "completion_tokens": tokens, "per_type": per_type}  # fmt: skip
    write_method_summary(ctx, "generate", counts, options=opts, templates=TEMPLATES if opts.mode == "instruct" else (),
                         echo=True)
    return out
