"""Self-Instruct: bootstrap new tasks from a seed pool, then instances for them, as the official code does.

Paper: Wang et al., "Self-Instruct: Aligning Language Models with Self-Generated Instructions" (ACL 2023,
arXiv 2212.10560); behaviour follows yizhongw/self-instruct (bootstrap_instructions.py,
identify_clf_or_not.py, generate_instances.py, prepare_for_finetuning.py).

Kept as the official code: 8 demonstrations per request (2 machine tasks once the machine pool has 2,
the rest human seeds, shuffled), the numbered-list continuation prompt ending in "9.", 5 requests per
batch, T=0.7 / top_p=0.5 / max_tokens=1024 / stops "\\n\\n", "\\n16", "16.", "16 ." (so at most 7 new tasks
per request); a truncated response is dropped whole; split on "\\n<number>. "; whitespace collapsed and
`str.capitalize()`; drop <= 3 or > 150 words, the 13 blacklisted words (word-boundary, any case),
"Write a program", a leading punctuation or non-ASCII character; ROUGE-L F (rouge_score tokens, no
stemming) > 0.7 against seeds plus kept tasks, updated as tasks are kept; the Yes/No classification
step (T=0, 3 tokens, stops "\\n" and "Task", only "Yes"/"yes"/"YES" counts); output-first instances for
classification and input-first otherwise (T=0, max_tokens 300 when the batch of 5 holds a
classification task else 350, stops "Example 6" and "Task:"); presence penalty 2 on instruction requests
and 1.5 on instance requests (frequency 0; backends that cannot apply them say so, see LLM); the
official instance parser, the invalid
filter (input == output, empty output, a field ending in ":"), the same-input-different-output rule
(drops every instance of the task), last instance dropped on truncation, at most 5 per task.

Deviations, and why:
- Prompts and few-shot demonstrations are our own wording (fewer, shorter demonstrations: 12 for the
  classification step, 5 per instance template), so no text is copied; formats and markers are the same.
- By default the continuation prompt is sent as one user turn (`mode=continuation`), so chat models can
  continue it; `raw=true` (preset `official`) sends every prompt as a raw completion with no chat
  template, as the official GPT-3 calls did; `mode=chat` asks explicitly for the numbered lines. By default a
  leading echo of the open number ("9. ...") is removed before splitting (chat models often restate it; the
  official code keeps it as the start of the first task, and so does `-o preset official`, `strip_echo=false`);
  in chat mode list lines are read by their numbers.
- Duplicate instances are removed keeping first occurrences (the official `list(set(...))` order depends
  on PYTHONHASHSEED); the 5-instance sample and every other draw use the run's explicit seed.
- `avg_similarity_score` (a full scan of the pool per kept task) is only computed with
  `similarity_stats=True`; `most_similar` (exact top 10) is always recorded.
- The novelty filter uses instructkit.rouge.NoveltyIndex: the same decisions as rouge_score, much faster.
- `max_batches` and `patience` (batches in a row that keep nothing) bound the loop, which upstream runs
  until the target; as upstream, the last batch may overshoot `num_instructions`.
- `-o constrained auto` (default off, the paper's free text) asks backends that honour a JSON Schema for
  the classification answer as {"answer": "Yes"|"No"} and for instances as {"examples": [...]}, each
  example's fields in the official order (input, output; class_label, input for classification); the
  JSON is written back into the official text format and parsed and filtered as any reply (a cut-off
  reply keeps its complete examples, as the official parser drops the last one). Small local models
  rarely follow the "Output:" markers on their own (the main job's 0 instances before).
- A dry run counts each request as keeping its n_new (7) new tasks (the fewest requests that can reach the
  target; a real run that rejects tasks makes more), then walks classification and instances for them.
"""

from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from instructkit.data.io import InputError, suggest_map
from instructkit.registry import method
from instructkit.rouge import NoveltyIndex
from instructkit.run.manifest import write_method_summary
from instructkit.run.provenance import provenance
from instructkit.run.runner import RunContext
from instructkit.shared.rows import llm_of, use_constraint
from instructkit.templates import render

from .common import call_seed, complete, require_choice, seeded, write_side

BLACKLIST = ("image", "images", "graph", "graphs", "picture", "pictures", "file", "files", "map", "maps",
             "draw", "plot", "go to")  # fmt: skip
_BLACKLIST_RE = re.compile(r"\b(" + "|".join(re.escape(w) for w in BLACKLIST) + r")\b", re.IGNORECASE)
_SPLIT_RE = re.compile(r"\n\d+\s?\. ")
_CHAT_ITEM_RE = re.compile(r"^\s*(?:\*\*)?(\d+)\s?[.)]\s*(?:\*\*)?\s*(.*)$")
_EXAMPLE_RE = re.compile(r"Example\s?\d*\.?")
_OUTPUT_RE = re.compile(r"Output\s*\d*\s*:")
_INPUT_RE = re.compile(r"Input\s*\d*\s*:")
TEMPLATES = {
    "continuation": "self_instruct_continuation.jinja",
    "chat": "self_instruct_chat.jinja",
    "is_clf": "self_instruct_is_clf.jinja",
    "gen": "self_instruct_instances_gen.jinja",
    "clf": "self_instruct_instances_clf.jinja",
}


@dataclass
class SelfInstructOptions:
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # The official calls (GPT-3 completions): raw continuation prompts and their decoding settings.
        "official": {"mode": "continuation", "raw": True, "num_prompt_instructions": 8, "request_batch_size": 5,
                     "temperature": 0.7, "top_p": 0.5, "max_tokens": 1024, "presence_penalty": 2.0,
                     "frequency_penalty": 0.0, "instance_presence_penalty": 1.5, "rouge_threshold": 0.7,
                     "strip_echo": False},
    }  # fmt: skip

    num_instructions: int = 100  # machine tasks to keep (official argparse default; the script used 50000)
    num_prompt_instructions: int = 8  # demonstrations per request
    num_machine_demos: int = 2  # machine tasks among them once the machine pool has that many
    request_batch_size: int = 5
    mode: str = "continuation"  # "continuation" (numbered list left open) or "chat"
    raw: bool = False  # continuation prompts as raw completions, no chat template (the official GPT-3 calls)
    strip_echo: bool = True  # continuation: drop a reply's leading echo of the open number (official keeps it)
    classification_only: bool = False  # the official --use_clf_seed_tasks_only
    temperature: float = 0.7
    top_p: float = 0.5
    max_tokens: int = 1024
    presence_penalty: float = 2.0  # instruction requests (bootstrap_instructions.py)
    frequency_penalty: float = 0.0
    instance_presence_penalty: float = 1.5  # instance requests (generate_instances.py)
    rouge_threshold: float = 0.7  # reject when max ROUGE-L F > threshold
    max_batches: int = 0  # stop after this many batches (0: until num_instructions or patience)
    patience: int = 10  # stop after this many batches in a row that keep nothing
    generate_instances: bool = True
    max_instances: int = 5
    instance_max_tokens: int = 0  # 0: the official 300 (batch holds a classification task) / 350
    include_seed_tasks: bool = False  # add the seed tasks' own instances to the output
    similarity_stats: bool = False  # also compute avg_similarity_score (a full pool scan per kept task)
    constrained: str = "off"  # off: the official free-text markers | auto: JSON by schema where supported


# ----- seed pool -------------------------------------------------------------------------------
@dataclass
class SeedTask:
    instruction: str
    is_classification: bool | None = None
    instances: list[dict] | None = None
    id: str = ""


def load_seed_tasks(source: str | Path | list[Any]) -> list[SeedTask]:
    """Seed tasks from the official seed_tasks.jsonl format, records, or a plain list of instructions."""
    where = "<records>"
    if isinstance(source, (str, Path)):
        path = Path(source)
        where = str(path)
        numbered = [(n, ln) for n, ln in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if ln.strip()]
        if path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
            items: list[Any] = []
            for n, ln in numbered:
                try:
                    items.append(json.loads(ln))
                except ValueError as exc:
                    raise InputError(path, f"malformed JSON ({exc})", n) from None
        else:
            items = [ln for _, ln in numbered]
        lines = [n for n, _ in numbered]
    else:
        items = list(source)
        lines = list(getattr(source, "lines", range(1, len(items) + 1)))
        where = getattr(source, "source", where)
    tasks = []
    for i, item in enumerate(items):
        if isinstance(item, dict) and not (isinstance(item.get("instruction"), str) and item["instruction"].strip()):
            raise InputError(where, f"a seed task needs a non-empty instruction; the record has {sorted(item)}. "
                             f"To use another column: {suggest_map('instruction', item)}",
                             lines[i] if i < len(lines) else None, "instruction")  # fmt: skip
        if isinstance(item, str):
            tasks.append(SeedTask(item.strip(), None, None, f"seed_{i}"))
        elif isinstance(item, dict) and isinstance(item.get("instruction"), str):
            instances = item.get("instances")
            if instances is None and ("input" in item or "output" in item):
                instances = [{"input": item.get("input") or "", "output": item.get("output") or ""}]
            clf = item.get("is_classification")
            tasks.append(SeedTask(item["instruction"], bool(clf) if clf is not None else None, instances,
                                  str(item.get("id", f"seed_{i}"))))  # fmt: skip
        else:
            raise InputError(where, "expected an instruction string or a record with 'instruction'",
                             lines[i] if i < len(lines) else None)
    if not tasks:
        raise ValueError("the seed pool is empty")
    return tasks


# ----- request parameters (the official calls' decoding settings) ------------------------------------
def instruction_params(opts: SelfInstructOptions, stops: list[str]) -> dict[str, Any]:
    """Decoding of an instruction request: bootstrap_instructions.py's (T 0.7, top_p 0.5, 1024 tokens,
    presence penalty 2) unless the options say otherwise."""
    return {"temperature": opts.temperature, "top_p": opts.top_p, "max_tokens": opts.max_tokens, "stop": stops,
            "presence_penalty": opts.presence_penalty, "frequency_penalty": opts.frequency_penalty}  # fmt: skip


def instance_params(opts: SelfInstructOptions, max_tokens: int) -> dict[str, Any]:
    """Decoding of an instance request: generate_instances.py's (greedy, presence penalty 1.5, stops
    "Example 6" and "Task:")."""
    return {"temperature": 0.0, "max_tokens": max_tokens, "stop": [f"Example {opts.max_instances + 1}", "Task:"],
            "presence_penalty": opts.instance_presence_penalty}  # fmt: skip


# ----- -o constrained auto: the same fields as JSON, written back into the official text ---------------
CLF_SCHEMA = {"type": "object", "properties": {"answer": {"enum": ["Yes", "No"]}}, "required": ["answer"],
              "additionalProperties": False}  # fmt: skip
CLF_NOTE = '\n\nAnswer with one JSON object {"answer": "Yes"} or {"answer": "No"}.'


def json_answer(text: str) -> str:
    """The "answer" of a constrained classification reply (the text itself if it is not such JSON)."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return str(value.get("answer", "")) if isinstance(value, dict) else text


def instance_fields(is_classification: bool) -> tuple[str, str]:
    """An example's two fields in the official order: output-first for classification, else input-first."""
    return ("class_label", "input") if is_classification else ("input", "output")


def instance_schema(is_classification: bool, max_instances: int) -> dict:
    """{"examples": [1..max_instances objects]}; the label or output may not be empty."""
    first, second = instance_fields(is_classification)
    answer = "class_label" if is_classification else "output"
    props = {f: {"type": "string", **({"minLength": 1} if f == answer else {})} for f in (first, second)}
    item = {"type": "object", "properties": props, "required": [first, second], "additionalProperties": False}
    examples = {"type": "array", "items": item, "minItems": 1, "maxItems": max(1, max_instances)}
    return {"type": "object", "properties": {"examples": examples}, "required": ["examples"],
            "additionalProperties": False}  # fmt: skip


def instance_note(is_classification: bool) -> str:
    first, second = instance_fields(is_classification)
    empty = "" if is_classification else ' ("input" empty when the task needs none)'
    return (f'\n\nReply with one JSON object {{"examples": [...]}}, each example an object with "{first}" and '
            f'"{second}"{empty}.')  # fmt: skip


def complete_examples(text: str) -> list[dict]:
    """The examples of a JSON instance reply; of a reply cut off mid-way, the complete ones."""
    try:
        value = json.loads(text)
        return [e for e in value.get("examples", []) if isinstance(e, dict)] if isinstance(value, dict) else []
    except ValueError:
        pass
    start = text.find("[")
    decoder, out = json.JSONDecoder(), []
    pos = start + 1 if start >= 0 else len(text)
    while pos < len(text):
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        try:
            value, pos = decoder.raw_decode(text, pos)
        except ValueError:
            break
        if isinstance(value, dict):
            out.append(value)
    return out


def examples_as_text(text: str, is_classification: bool) -> str:
    """A constrained JSON reply in the official instance format, for `parse_instances`."""
    lines = []
    for k, ex in enumerate(complete_examples(text), 1):
        if is_classification:
            lines += [f"Class label: {ex.get('class_label', '')}", str(ex.get("input", ""))]
        else:
            lines += [f"Example {k}", f"Input: {ex.get('input', '')}", f"Output: {ex.get('output', '')}"]
    return "\n".join(lines)


# ----- step 1: prompts and response post-processing ----------------------------------------------
def clean_demo(instruction: str) -> str:
    """A demonstration as the official encoder writes it: whitespace collapsed, trailing ':' removed."""
    return re.sub(r"\s+", " ", instruction).strip().rstrip(":")


def encode_prompt(
    demos: list[str], classification: bool = False, mode: str = "continuation", n_new: int = 7
) -> str:
    name = TEMPLATES["chat" if mode == "chat" else "continuation"]
    return render(name, tasks=[clean_demo(d) for d in demos], classification=classification, n_new=n_new)


def normalize_instruction(text: str) -> str:
    """Whitespace collapsed, stripped, then `str.capitalize()` (which lowercases the rest, as upstream)."""
    return re.sub(r"\s+", " ", text).strip().capitalize()


def instruction_filter(inst: str) -> str | None:
    """The reason a normalized instruction is dropped, or None to keep it."""
    if inst == "":
        return "empty"
    n = len(inst.split())
    if n <= 3:
        return "too_short"
    if n > 150:
        return "too_long"
    if _BLACKLIST_RE.search(inst):
        return "blacklist"
    if inst.startswith("Write a program"):
        return "write_a_program"
    if inst[0] in string.punctuation:
        return "leading_punctuation"
    if not inst[0].isascii():
        return "non_ascii"
    return None


def split_response(text: str, n_demos: int = 8, mode: str = "continuation", strip_echo: bool = True) -> list[str]:
    """Raw instruction pieces of one response (before normalization and filters).

    Continuation: a leading echo of the open number is removed (unless `strip_echo` is false: the
    official code keeps it, so the echo starts the first task), then the text is split on
    "\\n<number>. " (official). Chat: only lines numbered after the demonstrations count (a task that
    runs over several lines is joined); preambles and closing remarks are ignored.
    """
    if mode != "chat":
        if strip_echo:
            text = re.sub(rf"^\s*{n_demos + 1}\s?\.\s*", "", text)
        return _SPLIT_RE.split(text)
    pieces: list[str] = []
    open_item = False
    for line in text.splitlines():
        m = _CHAT_ITEM_RE.match(line)
        if m:
            open_item = int(m.group(1)) > n_demos
            if open_item:
                pieces.append(m.group(2))
        elif open_item and line.strip():
            pieces[-1] += " " + line.strip()
        else:
            open_item = False
    return pieces


def post_process(
    text: str | None, finish_reason: str, n_demos: int = 8, mode: str = "continuation", strip_echo: bool = True
) -> list[dict]:
    """Every candidate of one response with its decision: {"instruction", "reason"} (reason None = kept)."""
    if text is None:
        return [{"instruction": "", "raw": None, "reason": "no_response"}]
    if finish_reason == "length":
        return [{"instruction": "", "raw": text, "reason": "truncated_response"}]
    out = []
    for piece in split_response(text, n_demos, mode, strip_echo):
        inst = normalize_instruction(piece)
        out.append({"instruction": inst, "raw": piece, "reason": instruction_filter(inst)})
    return out


def sample_demos(
    rng: Any, machine: list[str], seeds: list[str], n_total: int = 8, n_machine: int = 2
) -> list[str]:
    """min(n_machine, |machine|) machine tasks, then human seeds up to n_total, shuffled (official order)."""
    demos = rng.sample(machine, min(n_machine, len(machine)))
    demos += rng.sample(seeds, n_total - len(demos))
    rng.shuffle(demos)
    return demos


def screen_batch(
    responses: list[tuple[str, str | None, str | None]],
    index: NoveltyIndex,
    threshold: float = 0.7,
    n_demos: int = 8,
    mode: str = "continuation",
    similarity_stats: bool = False,
    strip_echo: bool = True,
) -> tuple[list[dict], list[dict]]:
    """Filter one batch of (prompt, text, finish_reason) responses in order, as the official loop does:
    every candidate through the filters, then ROUGE-L against the pool, which grows with each kept task
    (so a near-copy of a task kept earlier in the same batch is rejected). Returns (kept, rejected)."""
    kept: list[dict] = []
    rejected: list[dict] = []
    for prompt_text, text, finish in responses:
        if text is None:
            rejected.append({"reason": "call_failed", "instruction": "", "error": finish})
            continue
        for cand in post_process(text, finish or "stop", n_demos, mode, strip_echo):
            reason, hit = cand["reason"], None
            if reason is None:
                hit = index.any_above(cand["instruction"], threshold)
                reason = "rouge_l" if hit is not None else None
            if reason is not None:
                rejected.append({**cand, "reason": reason, "response": text if reason == "truncated_response" else None,
                                 "most_similar": index.texts[hit.index] if hit else None,
                                 "rouge_l": hit.score if hit else None})  # fmt: skip
                continue
            top = index.top_k(cand["instruction"], 10)
            entry = {"instruction": cand["instruction"], "most_similar": {index.texts[m.index]: m.score for m in top},
                     "prompt": prompt_text}  # fmt: skip
            if similarity_stats:
                scores = index.scores(cand["instruction"])
                entry["avg_similarity_score"] = float(scores.mean()) if len(scores) else 0.0
            index.add(cand["instruction"])
            kept.append(entry)
    return kept, rejected


# ----- step 2: classification ----------------------------------------------------------------
def parse_is_clf(text: str, mode: str = "continuation") -> bool:
    """Official rule: the stripped completion is exactly Yes/yes/YES. Chat mode also takes "Yes." etc."""
    t = (text or "").strip()
    if t in ("Yes", "yes", "YES"):
        return True
    return mode == "chat" and re.match(r"^\W*yes\b", t, re.IGNORECASE) is not None


# ----- step 4: instance parsing ----------------------------------------------------------------
def parse_input_output(text: str) -> tuple[str, str]:
    """Input before the first "Output:" (a leading "Input:" removed), output after it, cut at "Input:"."""
    if _OUTPUT_RE.search(text):
        parts = _OUTPUT_RE.split(text)
        inst_input, inst_output = parts[0].strip(), parts[1].strip()
    else:
        inst_input, inst_output = "", text.strip()
    if _INPUT_RE.search(inst_output):
        inst_output = _INPUT_RE.split(inst_output)[0].strip()
    inst_input = re.sub(r"^Input\s*\d*\s*:", "", inst_input).strip()
    return inst_input, inst_output


def filter_invalid(instances: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Drop input == output, empty output, and an input or output ending with ':'."""
    return [
        (i, o)
        for i, o in instances
        if i != o and o != "" and not i.strip().endswith(":") and not o.strip().endswith(":")
    ]


def filter_duplicates(instances: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """[] when two instances share a non-empty input with different outputs; else de-duplicated."""
    for a in range(1, len(instances)):
        for b in range(a):
            if (
                instances[a][0] != ""
                and instances[a][0] == instances[b][0]
                and instances[a][1] != instances[b][1]
            ):
                return []
    return list(dict.fromkeys(instances))


def parse_instances(
    text: str, is_classification: bool, finish_reason: str = "stop"
) -> tuple[list[tuple[str, str]], str]:
    """(input, output) pairs from one raw instance response, and a status for the record."""
    pairs: list[tuple[str, str]] = []
    if is_classification:
        if "Class label:" not in text:
            return [], "no_class_label"
        for chunk in text.split("Class label:")[1:]:
            fields = chunk.strip().split("\n", 1)
            label = fields[0].strip()
            inp = fields[1].strip() if len(fields) == 2 else ""
            pairs.append((inp, label))
    else:
        raw = text.strip()
        if _EXAMPLE_RE.search(raw):
            for chunk in (c.strip() for c in _EXAMPLE_RE.split(raw)):
                if chunk:
                    pairs.append(parse_input_output(chunk))
        elif _OUTPUT_RE.search(raw):
            pairs.append(parse_input_output(raw))
        else:
            return [], "no_output_marker"
    if finish_reason == "length":
        pairs = pairs[:-1]
    parsed = len(pairs)
    pairs = filter_invalid(pairs)
    if not pairs:
        return [], "all_invalid" if parsed else "truncated"
    deduped = filter_duplicates(pairs)
    if not deduped:
        return [], "same_input_different_output"
    return deduped, "ok"


# ----- the method ----------------------------------------------------------------------------
def _seed_pool(records: list[dict], ctx: RunContext) -> list[SeedTask]:
    if records:
        return load_seed_tasks(records)
    path = ctx.extras.get("input_path")
    if not path:
        raise ValueError("self_instruct needs seed tasks: records, a seed_tasks.jsonl file, or a text file")
    return load_seed_tasks(path)


@method("generate", "self_instruct", options=SelfInstructOptions, reads=("instruction",))
def self_instruct(records: list[dict], ctx: RunContext) -> list[dict]:
    """Self-Instruct: bootstrap tasks from seeds (ROUGE-L novelty), classify, generate instances (Alpaca)."""
    opts = ctx.options or SelfInstructOptions()
    require_choice("mode", opts.mode, ("continuation", "chat"))
    if opts.raw and opts.mode == "chat":
        raise ValueError("self_instruct: raw=true sends continuation prompts; it needs mode=continuation")
    llm = llm_of(ctx)
    seeds = _seed_pool(records, ctx)
    if opts.classification_only:
        seeds = [s for s in seeds if s.is_classification]
        if not seeds:
            raise ValueError("classification_only: no seed task is marked is_classification")
    seed_texts = [s.instruction for s in seeds]
    seed_ids = {s.instruction: s.id for s in seeds}
    demo_seeds: dict[str, list[str]] = {}  # prompt -> ids of the seed tasks shown in it (provenance)
    n_human = opts.num_prompt_instructions - opts.num_machine_demos
    if n_human > len(seed_texts) or opts.num_prompt_instructions < 1:
        raise ValueError(
            f"need at least {n_human} seed tasks for {opts.num_prompt_instructions} demonstrations"
        )
    rng = seeded(ctx, "bootstrap")  # the official code seeds 42 at import; ours is the run's seed
    index = NoveltyIndex(seed_texts)
    machine: list[dict] = []
    rejected: list[dict] = []
    reasons: dict[str, int] = {}
    n_new = max(1, 15 - opts.num_prompt_instructions)
    stops = ["\n\n", "\n16", "16.", "16 ."] if opts.mode == "continuation" else ["\n16", "16."]

    async def request(item: dict) -> dict:
        return await complete(llm, item["prompt"], raw=opts.raw, **instruction_params(opts, stops), seed=item["seed"])

    batch_no, idle = 0, 0
    while len(machine) < opts.num_instructions:
        if opts.max_batches and batch_no >= opts.max_batches:
            break
        items = []
        for k in range(opts.request_batch_size):
            demos = sample_demos(rng, [m["instruction"] for m in machine], seed_texts,
                                 opts.num_prompt_instructions, opts.num_machine_demos)  # fmt: skip
            p = encode_prompt(demos, opts.classification_only, opts.mode, n_new)
            demo_seeds[p] = [seed_ids[d] for d in demos if d in seed_ids]
            items.append(
                {"prompt": p, "request_idx": batch_no, "k": k, "seed": call_seed(ctx, "req", batch_no, k)}
            )
        results = ctx.map(items, request, stage="instructions")
        if all(r.pending for r in results):
            break  # dry run or budget reached: nothing more can be learned
        responses = [(it["prompt"], r.value["text"] if r.ok else None, r.value["finish_reason"] if r.ok else r.error)
                     for it, r in zip(items, results)]  # fmt: skip
        kept, dropped = screen_batch(responses, index, opts.rouge_threshold, opts.num_prompt_instructions, opts.mode,
                                     opts.similarity_stats, opts.strip_echo)  # fmt: skip
        if any(r.estimated for r in results):  # dry run: each request keeps its n_new tasks (the fewest requests)
            kept = [{"instruction": f"Dry run task {batch_no}.{k}.{j}", "most_similar": {}, "prompt": it["prompt"]}
                    for k, it in enumerate(items) for j in range(n_new)]  # fmt: skip
            dropped = []
        for row in kept + dropped:
            row["request_idx"] = batch_no
        for row in kept:
            row["seed_ids"] = demo_seeds.get(row["prompt"], [])
        for row in dropped:
            reasons[row["reason"]] = reasons.get(row["reason"], 0) + 1
        machine.extend(kept)
        rejected.extend(dropped)
        kept_now = len(kept)
        batch_no += 1
        idle = 0 if kept_now else idle + 1
        if idle >= opts.patience:
            break

    write_side(ctx, "rejected.jsonl", rejected)
    counts: dict[str, Any] = {"batches": batch_no, "requests": batch_no * opts.request_batch_size,
                              "kept_instructions": len(machine), "rejected": reasons}  # fmt: skip
    templates = [TEMPLATES[opts.mode]]
    if not opts.generate_instances:
        write_side(ctx, "instructions.jsonl", machine)
        write_method_summary(ctx, "generate", counts, options=opts, templates=templates, echo=True)
        return [{"instruction": m["instruction"], "input": "", "output": "", "request_idx": m["request_idx"],
                 "most_similar": m["most_similar"], "provenance": provenance(ctx, seed_ids=m["seed_ids"])}
                for m in machine]  # fmt: skip
    out = generate_instances(machine, ctx, opts, counts)
    if opts.include_seed_tasks:
        for s in seeds:
            for inst in s.instances or []:
                out.append({"instruction": s.instruction, "input": inst.get("input", ""), "output": inst.get("output", ""),
                            "source": "seed", "is_classification": s.is_classification,
                            "provenance": provenance(ctx, seed_id=s.id)})  # fmt: skip
    write_method_summary(ctx, "generate", counts, options=opts, echo=True,
                         templates=[*templates, TEMPLATES["is_clf"], TEMPLATES["gen"], TEMPLATES["clf"]])
    return out


def generate_instances(
    tasks: list[dict], ctx: RunContext, opts: SelfInstructOptions, counts: dict
) -> list[dict]:
    """Steps 2-4 for machine tasks: classification, instance generation, parsing and filtering."""
    llm = llm_of(ctx)
    constrained = use_constraint(llm, opts.constrained, "self_instruct")

    async def classify(task: dict) -> dict:
        p = render(TEMPLATES["is_clf"], instruction=task["instruction"].strip())
        if constrained:
            value = await complete(llm, p + CLF_NOTE, raw=opts.raw, temperature=0.0, max_tokens=16, json_schema=CLF_SCHEMA)
            return {"raw": json_answer(value["text"])}
        value = await complete(llm, p, raw=opts.raw, temperature=0.0, max_tokens=3, stop=["\n", "Task"])
        return {"raw": value["text"]}

    clf = ctx.map(tasks, classify, stage="classify")
    for task, res in zip(tasks, clf):
        task["is_classification_raw"] = res.value["raw"] if res.ok else ""
        task["is_classification"] = parse_is_clf(task["is_classification_raw"], opts.mode)
    bs = max(1, opts.request_batch_size)
    items = []
    for start in range(0, len(tasks), bs):
        batch = tasks[start : start + bs]
        max_tokens = opts.instance_max_tokens or (300 if any(t["is_classification"] for t in batch) else 350)
        for t in batch:
            items.append(
                {
                    "instruction": t["instruction"].strip(),
                    "clf": t["is_classification"],
                    "max_tokens": max_tokens,
                }
            )

    async def instances(item: dict) -> dict:
        prompt = render(TEMPLATES["clf" if item["clf"] else "gen"], instruction=item["instruction"])
        params = instance_params(opts, item["max_tokens"])
        if not constrained:
            return await complete(llm, prompt, raw=opts.raw, **params)
        params.pop("stop")  # the grammar ends the reply
        value = await complete(llm, prompt + instance_note(item["clf"]), raw=opts.raw, **params,
                               json_schema=instance_schema(item["clf"], opts.max_instances))  # fmt: skip
        # the official text of the complete examples: a cut-off example is already left out
        return {**value, "json": value["text"], "text": examples_as_text(value["text"], item["clf"]),
                "finish_reason": "stop"}  # fmt: skip

    results = ctx.map(items, instances, stage="instances")
    rng = seeded(ctx, "instances")
    out: list[dict] = []
    task_rows = []
    status_counts: dict[str, int] = {}
    for task, res in zip(tasks, results):
        if res.estimated:  # dry run: one placeholder instance, so a pipeline's later steps are estimated on it
            pairs, status = [("", res.value["text"])], "dry_run"
        elif res.ok:
            pairs, status = parse_instances(
                res.value["text"], task["is_classification"], res.value["finish_reason"]
            )
        else:
            pairs, status = [], "call_failed" if not res.pending else "pending"
        status_counts[status] = status_counts.get(status, 0) + 1
        if len(pairs) > opts.max_instances:
            pairs = rng.sample(pairs, opts.max_instances)
        task_rows.append({**{k: v for k, v in task.items() if k != "prompt"}, "raw_instances": res.value["text"] if res.ok else None,
                          **({"raw_json": res.value["json"]} if res.ok and "json" in res.value else {}),
                          "finish_reason": res.value["finish_reason"] if res.ok else None, "error": res.error,
                          "parse": status, "n_instances": len(pairs)})  # fmt: skip
        for inp, outp in pairs:
            out.append({"instruction": task["instruction"].strip(), "input": inp, "output": outp,
                        "is_classification": task["is_classification"], "request_idx": task["request_idx"],
                        "source": "machine", "provenance": provenance(ctx, seed_ids=task.get("seed_ids"))})  # fmt: skip
    write_side(ctx, "tasks.jsonl", task_rows)
    counts.update(classification=sum(t["is_classification"] for t in tasks), instance_parse=status_counts,
                  instances=len(out), tasks_with_instances=sum(r["n_instances"] > 0 for r in task_rows))  # fmt: skip
    return out
