"""Generators' pure logic: Self-Instruct filters and parsers, Bonito formats and validators, Tree-Instruct
and Evol-Instruct failure rules, backtranslation score parsing, document loading and chunking."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from instructkit.generators import backtranslation as bt
from instructkit.generators import bonito as bo
from instructkit.generators import evol_instruct as ev
from instructkit.generators import self_instruct as si
from instructkit.generators import tree_instruct as ti

from instructkit.data.documents import (
    chunk_text,
    html_to_text,
    load_documents,
    passages_from,
    split_paragraphs,
)
from instructkit.rouge import NoveltyIndex

ROOT = Path(__file__).resolve().parents[1]


# ----- Self-Instruct ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "raw, reason",
    [
        ("Give three tips for staying healthy.", None),
        ("Name four sea birds", None),  # 4 words: kept
        ("Name sea birds", "too_short"),  # 3 words
        ("word " * 150, None),
        ("word " * 151, "too_long"),
        ("Draw a cat using ascii characters only.", "blacklist"),
        ("Describe the images in the report briefly.", "blacklist"),
        ("Explain how to go to the station from here.", "blacklist"),
        ("Summarize the FILE contents in one line.", "blacklist"),
        ("Explain what a mapping between two sets is.", None),  # word boundary: "mapping" is fine
        ("Write a program that sorts a list of numbers.", "write_a_program"),
        ("Write a poem about a program that never ends.", None),
        ("- list the planets of the solar system", "leading_punctuation"),
        ('"quote" this sentence back to me please', "leading_punctuation"),
        ("¿qué hora es en Madrid ahora mismo?", "non_ascii"),
        ("", "empty"),
    ],
)
def test_instruction_filters(raw: str, reason: str | None) -> None:
    assert si.instruction_filter(si.normalize_instruction(raw)) == reason


def test_normalize_capitalizes_like_upstream() -> None:
    assert (
        si.normalize_instruction("  convert the  NumPy\narray to a list ")
        == "Convert the numpy array to a list"
    )


def test_post_process_splits_and_drops_truncated_whole() -> None:
    text = (
        " Give an example of a metaphor.\n10. Name two rivers in Africa.\n11 . Plot the data points\n12. ok"
    )
    got = si.post_process(text, "stop")
    assert [(c["instruction"], c["reason"]) for c in got] == [
        ("Give an example of a metaphor.", None),
        ("Name two rivers in africa.", None),
        ("Plot the data points", "blacklist"),
        ("Ok", "too_short"),
    ]
    assert [c["reason"] for c in si.post_process(text, "length")] == ["truncated_response"]
    # a chat model that repeats the open number: the echo is not part of the task
    assert (
        si.post_process("9. Name two rivers in Africa.", "stop")[0]["instruction"]
        == "Name two rivers in africa."
    )


def test_chat_mode_reads_numbered_lines_only() -> None:
    text = "Sure! Here are new tasks:\n9. Name two rivers in Africa.\n10. Describe a sunset\nin three sentences.\n\nHope this helps!"
    assert si.split_response(text, 8, "chat") == [
        "Name two rivers in Africa.",
        "Describe a sunset in three sentences.",
    ]


def test_encode_prompt_numbered_and_open() -> None:
    demos = [f"Task  number {i}:" for i in range(1, 9)]
    p = si.encode_prompt(demos)
    lines = p.splitlines()
    assert lines[1] == "1. Task number 1" and lines[8] == "8. Task number 8" and lines[-1] == "9."
    assert "classification" in si.encode_prompt(demos, classification=True).splitlines()[0]
    assert "9 to 15" in si.encode_prompt(demos, mode="chat", n_new=7)


def test_sample_demos_two_machine_once_pool_has_two() -> None:
    rng = random.Random(0)
    seeds = [f"seed {i}" for i in range(20)]
    assert all(d.startswith("seed") for d in si.sample_demos(rng, [], seeds))
    one = si.sample_demos(rng, ["machine 0"], seeds)
    assert len(one) == 8 and sum(d.startswith("machine") for d in one) == 1
    many = si.sample_demos(rng, [f"machine {i}" for i in range(5)], seeds)
    assert len(many) == 8 and sum(d.startswith("machine") for d in many) == 2


def test_screen_batch_rouge_against_seeds_and_kept_in_order() -> None:
    index = NoveltyIndex(["Give three tips for staying healthy."])
    responses = [
        (
            "p1",
            " Give three tips for staying healthy today.\n10. Describe the water cycle in simple words.",
            "stop",
        ),
        (
            "p2",
            " Describe the water cycle in very simple words.\n11. Name a famous painter from Spain.",
            "stop",
        ),
        ("p3", " Name a famous painter from Spain and Italy", "length"),
        ("p4", None, "ModelCallError: boom"),
    ]
    kept, rejected = si.screen_batch(responses, index)
    assert [k["instruction"] for k in kept] == [
        "Describe the water cycle in simple words.",
        "Name a famous painter from spain.",
    ]
    assert [r["reason"] for r in rejected] == ["rouge_l", "rouge_l", "truncated_response", "call_failed"]
    assert (
        rejected[1]["most_similar"] == "Describe the water cycle in simple words."
    )  # kept earlier, same batch
    assert len(index) == 3 and kept[0]["most_similar"] and kept[0]["prompt"] == "p1"


def test_is_clf_parse() -> None:
    assert si.parse_is_clf(" Yes") and si.parse_is_clf("YES") and si.parse_is_clf("yes")
    assert not si.parse_is_clf("Yes.") and not si.parse_is_clf("No") and not si.parse_is_clf("")
    assert si.parse_is_clf("Yes.", mode="chat") and not si.parse_is_clf("No, it is not.", mode="chat")


def test_parse_generation_instances() -> None:
    text = (
        "Example 1\nList: 3, 1, 2\nOutput: 1, 2, 3\nExample 2\nInput: List: 9, 8\nOutput: 8, 9\nInput: extra"
    )
    pairs, status = si.parse_instances(text, False)
    assert status == "ok" and pairs == [("List: 3, 1, 2", "1, 2, 3"), ("List: 9, 8", "8, 9")]
    assert si.parse_instances("Output: Paris is the capital.", False) == (
        [("", "Paris is the capital.")],
        "ok",
    )
    assert si.parse_instances("just some prose", False) == ([], "no_output_marker")
    truncated, _ = si.parse_instances(text, False, finish_reason="length")
    assert truncated == [("List: 3, 1, 2", "1, 2, 3")]


def test_parse_classification_instances_and_drop_rules() -> None:
    text = (
        "Class label: Positive\nReview: Great!\nClass label: Negative\nReview: Awful.\nClass label: Neutral"
    )
    pairs, status = si.parse_instances(text, True)
    assert status == "ok" and pairs == [
        ("Review: Great!", "Positive"),
        ("Review: Awful.", "Negative"),
        ("", "Neutral"),
    ]
    assert si.parse_instances("Label: x", True) == ([], "no_class_label")
    conflict = "Class label: Yes\nText: same\nClass label: No\nText: same"
    assert si.parse_instances(conflict, True) == ([], "same_input_different_output")
    assert si.filter_invalid([("a", "a"), ("a", ""), ("Input:", "b"), ("a", "b:"), ("a", "b")]) == [
        ("a", "b")
    ]
    assert si.filter_duplicates([("", "x"), ("", "y"), ("a", "b"), ("a", "b")]) == [
        ("", "x"),
        ("", "y"),
        ("a", "b"),
    ]


def test_load_seed_tasks_official_format_and_plain_list(tmp_path: Path) -> None:
    tasks = si.load_seed_tasks(ROOT / "examples" / "seed_tasks.jsonl")
    assert tasks and all(t.instruction for t in tasks) and any(t.is_classification for t in tasks)
    plain = tmp_path / "seeds.txt"
    plain.write_text("Name a color.\n\nWrite a haiku about rain.\n", encoding="utf-8")
    assert [t.instruction for t in si.load_seed_tasks(plain)] == [
        "Name a color.",
        "Write a haiku about rain.",
    ]
    assert si.load_seed_tasks(["a b c d"])[0].is_classification is None
    with pytest.raises(ValueError):
        si.load_seed_tasks([{"no": "instruction"}])


# ----- Bonito ------------------------------------------------------------------------------------
def _upstream_input(task_type: str, context: str) -> str:
    """The reference formula of bonito/abstract.py `_prepare_bonito_input` (recomputed for the test)."""
    if task_type in bo.TASK_TYPES.values():
        full = task_type
    elif task_type in bo.TASK_TYPES:
        full = bo.TASK_TYPES[task_type]
    else:
        raise ValueError(f"Task type {task_type} not recognized")
    return "<|tasktype|>\n" + full.strip() + "\n<|context|>\n" + context.strip() + "\n<|task|>\n"


def test_sixteen_task_types_and_native_input_byte_exact() -> None:
    assert len(bo.TASK_TYPES) == 16
    spellings = set(bo.TASK_TYPES) | set(bo.TASK_TYPES.values())
    assert len(spellings) == 30
    for t in spellings:
        assert bo.native_input(t, "  A passage.\n") == _upstream_input(t, "  A passage.\n")
        assert bo.task_code(t) in bo.TASK_TYPES
    with pytest.raises(ValueError, match="not recognized"):
        bo.native_input("poetry", "x")


def test_parse_native_pipes_and_placeholder() -> None:
    ctx = " The tide rises twice a day. "
    assert bo.parse_native("Q: {{context}}\nHow often?\n<|pipe|>\nTwice", ctx) == (
        "Q: The tide rises twice a day.\nHow often?",
        "Twice",
    )
    assert bo.parse_native("no pipe at all", ctx) is None
    assert bo.parse_native("a <|pipe|> b <|pipe|> c", ctx) is None
    assert bo.parse_native("x <|pipe|> see {{context}}", ctx) == ("x", "see The tide rises twice a day.")
    assert bo.validate_native("ynqa", "Is it? " + ctx.strip(), "Maybe", ctx) == "answer_not_yes_no"
    assert bo.validate_native("ynqa", "Is it? " + ctx.strip(), "Yes", ctx) == "ok"
    assert bo.validate_native("qa", "How often?", "Twice", ctx) == "no_context_placeholder"
    assert bo.validate_native("exqa", ctx.strip() + " How often?", "twice a day", ctx) == "ok"


PASSAGE = (
    "The lighthouse keeper lit the lamp at dusk. She climbed the stairs every evening. "
    "The beam warned ships away from the rocks."
)
VALID = {
    "exqa": {"question": "When was the lamp lit?", "answer": "at dusk"},
    "mcqa": {
        "question": "Who lit the lamp?",
        "options": ["the keeper", "a sailor", "a child"],
        "answer": "the keeper",
    },
    "qg": {"answer": "at dusk", "question": "When was the lamp lit?"},
    "qa": {"question": "What did the beam do?", "answer": "It warned ships."},
    "ynqa": {"question": "Did she climb the stairs?", "answer": "Yes."},
    "coref": {"mention": "She", "referent": "The lighthouse keeper"},
    "paraphrase": {
        "sentence": "She climbed the stairs every evening.",
        "paraphrase": "Each night she went up the steps.",
    },
    "paraphrase_id": {
        "sentence1": "She climbed the stairs every evening.",
        "sentence2": "She went up nightly.",
        "label": "yes",
    },
    "sent_comp": {"beginning": "The beam warned ships", "ending": "away from the rocks."},
    "sentiment": {"label": "Neutral"},
    "summarization": {"summary": "A keeper runs a lighthouse."},
    "text_gen": {"instruction": "Write a title for the text.", "text": "The Keeper of the Light"},
    "topic_class": {"options": ["Cooking", "Lighthouses", "Sports"], "answer": "B"},
    "wsd": {
        "word": "beam",
        "sentence1": "The beam warned ships away.",
        "sentence2": "A wooden beam held the roof.",
        "label": "no",
    },
    "te": {"hypothesis": "The lamp was lit in the evening.", "label": "true"},
    "nli": {"hypothesis": "The keeper never climbed stairs.", "label": "Contradiction"},
}
INVALID = {
    "exqa": ({"question": "When?", "answer": "at midnight"}, "answer_not_in_passage"),
    "mcqa": ({"question": "Who?", "options": ["a", "b"], "answer": "c"}, "answer_not_an_option"),
    "qg": ({"answer": "dusk", "question": "The lamp was lit"}, "question_not_a_question"),
    "qa": ({"question": "What did the beam do?"}, "missing_answer"),
    "ynqa": ({"question": "Did she climb?", "answer": "maybe"}, "answer_not_yes_no"),
    "coref": ({"mention": "He", "referent": "the keeper"}, "mention_not_in_passage"),
    "paraphrase": (
        {
            "sentence": "She climbed the stairs every evening.",
            "paraphrase": "She climbed the stairs every evening",
        },
        "paraphrase_is_copy",
    ),
    "paraphrase_id": (
        {"sentence1": "Not from the text.", "sentence2": "x", "label": "yes"},
        "sentence1_not_in_passage",
    ),
    "sent_comp": ({"beginning": "Unrelated start", "ending": "end"}, "beginning_not_in_passage"),
    "sentiment": ({"label": "happy"}, "label_not_sentiment"),
    "summarization": ({"summary": PASSAGE + " And more."}, "summary_not_shorter"),
    "text_gen": ({"instruction": "Write a title."}, "missing_text"),
    "topic_class": ({"options": ["Cooking", "cooking"], "answer": "Cooking"}, "options_too_few_or_repeated"),
    "wsd": (
        {"word": "beam", "sentence1": "The light.", "sentence2": "A beam.", "label": "no"},
        "word_not_in_both_sentences",
    ),
    "te": ({"hypothesis": "x", "label": "entailment"}, "label_not_yes_no"),
    "nli": ({"hypothesis": "x", "label": "yes"}, "label_not_nli"),
}


@pytest.mark.parametrize("code", sorted(bo.TASK_TYPES))
def test_bonito_validators_per_type(code: str) -> None:
    fields, status = bo.validate_fields(code, dict(VALID[code]), PASSAGE)
    assert status == "ok" and fields is not None
    bad, reason = INVALID[code]
    assert bo.validate_fields(code, dict(bad), PASSAGE) == (None, reason)
    # the full instruct path: labelled lines and JSON give the same record, passage included
    lines = "\n".join(
        f"{bo.field_label(k)}: {' | '.join(v) if isinstance(v, list) else v}" for k, v in VALID[code].items()
    )
    row, status = bo.parse_instruct(code, "Sure!\n" + lines + "\n\nThanks", PASSAGE)
    assert status == "ok" and row is not None and PASSAGE in row["instruction"]
    assert row == bo.parse_instruct(code, json.dumps(VALID[code]), PASSAGE)[0]
    assert row["output"] == fields[bo.OUTPUT_FIELD[code]]


def test_bonito_normalized_labels_and_unparseable() -> None:
    assert bo.validate_fields("ynqa", {"question": "Is it?", "answer": True}, PASSAGE)[0]["answer"] == "yes"
    assert bo.validate_fields("topic_class", VALID["topic_class"], PASSAGE)[0]["answer"] == "Lighthouses"
    assert bo.parse_instruct("qa", "I cannot do that.", PASSAGE) == (None, "unparseable")
    assert bo.parse_instruct("sentiment", "Sentiment: Positive", PASSAGE)[0]["output"] == "positive"  # alias
    assert (
        bo.parse_instruct("sentiment", "Negative.", PASSAGE)[0]["output"] == "negative"
    )  # bare one-field reply
    assert bo.parse_instruct("mcqa", "Question: Who?\nAnswer: x", PASSAGE) == (None, "missing_options")
    assert bo.parse_instruct("qa", "[1, 2]", PASSAGE) == (None, "not_an_object")


def test_plan_jobs_balanced() -> None:
    jobs = bo.plan_jobs(list(range(32)), list(bo.TASK_TYPES), 1, random.Random(0))
    assert len(jobs) == 32 and all(sum(c == t for _, c in jobs) == 2 for t in bo.TASK_TYPES)
    assert len(bo.plan_jobs([0, 1], ["qa", "ynqa"], 0, random.Random(0))) == 4


# ----- Tree-Instruct -----------------------------------------------------------------------------
def test_tree_rewrite_failures() -> None:
    opts = ti.TreeInstructOptions()
    old = "Describe the water cycle."
    assert ti.rewrite_failure(old, "", opts) == "empty"
    assert ti.rewrite_failure(old, "NONE", opts) == "empty"
    assert ti.rewrite_failure(old, "describe the  water cycle.", opts) == "unchanged"
    assert ti.rewrite_failure(old, "Explain the rain.", opts) == "not_longer"
    assert (
        ti.rewrite_failure(old, "Using TREE-2, describe the water cycle with evaporation.", opts)
        == "procedure_leak"
    )
    longer = "Describe the water cycle, covering evaporation from oceans and condensation into clouds."
    assert ti.rewrite_failure(old, longer, opts) is None
    assert ti.rewrite_failure(old, longer, ti.TreeInstructOptions(strict_length=True)) == "too_little_added"
    assert ti.clean_rewrite('New instruction: "Do X and Y."') == "Do X and Y."


# ----- Evol-Instruct -----------------------------------------------------------------------------
def test_evol_elimination_rules() -> None:
    long_answer = "Sorry, " + "word " * 79  # 80 words
    short_answer = "Sorry, " + "word " * 78  # 79 words
    assert ev.elimination_reason("Evolved prompt text", short_answer, "not_equal") == "sorry_short_answer"
    assert ev.elimination_reason("Evolved prompt text", long_answer, "not_equal") is None
    assert (
        ev.elimination_reason("Evolved prompt text", "It is, and the ... of it!", None) == "stop_words_only"
    )
    assert (
        ev.elimination_reason("#Rewritten Prompt#: do x", "fine answer here", None) == "copied_prompt_wording"
    )
    assert (
        ev.elimination_reason("Rewrite the given prompt so", "fine answer", None) == "copied_prompt_wording"
    )
    assert ev.elimination_reason("Evolved", "A good answer.", "equal") == "no_information_gain"
    assert ev.elimination_reason("  ", "x", None) == "empty"
    assert ev.parse_equality("Not Equal") == "not_equal" and ev.parse_equality("Equal.") == "equal"
    assert ev.parse_equality("hmm") == "unparsed"


def test_evol_prompts_for_every_operation() -> None:
    for op in ev.OPERATIONS:
        p = ev.evolution_prompt("List three fruits.", op)
        assert "List three fruits." in p
        assert p.rstrip().endswith("#Created Prompt#:" if op == "breadth" else "#Rewritten Prompt#:")
    assert "10 to 20 words" in ev.evolution_prompt("x", "constraints")
    with pytest.raises(ValueError):
        ev.evolution_prompt("x", "shuffle")


# ----- backtranslation ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, expected",
    [
        ("The answer is complete and clear.\nScore: 5", (5.0, "ok")),
        ("Reasoning: ok.\nScore: 4", (4.0, "ok")),
        ("Score: 3\nOn reflection it is better.\nScore: 5", (5.0, "ok")),  # last score line wins
        ("Score: 10", (None, "out_of_range")),
        ("I think it is a fine answer.", (None, "no_score")),
        ("", (None, "empty")),
        ("score:2", (2.0, "ok")),
        ("Rating: 4/5", (4.0, "ok")),
    ],
)
def test_backtranslation_score_parse(text: str, expected: tuple) -> None:
    assert bt.parse_rating(text) == expected


def test_backtranslation_clean_instruction() -> None:
    assert bt.clean_instruction('Instruction: "Explain tides."\n\nAnswer: because') == "Explain tides."


# ----- documents ---------------------------------------------------------------------------------
def _minimal_pdf(text: str) -> bytes:
    """A one-page PDF with `text` in Helvetica (hand-built, valid xref)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = b"%PDF-1.4\n"
    offsets = []
    for i, obj in enumerate(objs, 1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n".encode() + obj + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out


def test_load_documents_every_format(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("First paragraph.\n\nSecond paragraph.", encoding="utf-8")
    (tmp_path / "b.md").write_text("# Title\n\nSome *markdown* text.", encoding="utf-8")
    (tmp_path / "c.html").write_text(
        "<html><head><style>p{}</style></head><body><h1>Head</h1><p>One para.</p><script>x()</script><p>Two</p></body></html>",
        encoding="utf-8",
    )
    (tmp_path / "d.pdf").write_bytes(_minimal_pdf("Hello from a PDF page"))
    (tmp_path / "e.jsonl").write_text(
        json.dumps({"doc_id": "x1", "text": "Row one."}) + "\n" + json.dumps({"text": "Row two."}) + "\n",
        encoding="utf-8",
    )
    (tmp_path / "ignored.bin").write_bytes(b"\x00")
    docs = load_documents(tmp_path)
    by_id = {d.doc_id: d.text for d in docs}
    assert set(by_id) == {"a.txt", "b.md", "c.html", "d.pdf", "x1", "e:2"}
    assert split_paragraphs(by_id["a.txt"]) == ["First paragraph.", "Second paragraph."]
    assert by_id["c.html"] == "Head\n\nOne para.\n\nTwo"
    assert "Hello from a PDF page" in by_id["d.pdf"]
    assert html_to_text("<p>a</p><p>b</p>") == "a\n\nb"
    with pytest.raises(ValueError, match=r"e.jsonl:1: field 'body': missing.*-o text_field COLUMN"):
        load_documents(tmp_path / "e.jsonl", text_field="body")


def test_chunker_keeps_paragraphs_and_budget() -> None:
    paras = [" ".join(f"w{i}_{j}" for j in range(20)) for i in range(6)]
    text = "\n\n".join(paras)
    chunks = chunk_text(text, max_tokens=60)  # 20 words ~ 27 tokens: two paragraphs per chunk
    assert chunks == ["\n\n".join(paras[i : i + 2]) for i in range(0, 6, 2)]
    long_para = ". ".join(" ".join(["word"] * 10) for _ in range(12)) + "."
    pieces = chunk_text(long_para, max_tokens=40)
    assert len(pieces) > 1 and all(len(p.split()) * 4 / 3 <= 40 for p in pieces)
    assert " ".join(pieces).split() == long_para.split()  # nothing lost
    giant = " ".join(["x"] * 100)  # one sentence over budget: split at words
    assert all(len(p.split()) <= 30 for p in chunk_text(giant, max_tokens=40))
    counted = chunk_text(text, max_tokens=25, tokenizer=lambda s: len(s.split()))  # a callable counter
    assert counted == paras
    passages = passages_from(load_documents(ROOT / "examples" / "documents"), max_tokens=80)
    assert passages and all(p.n_tokens <= 80 for p in passages)
    assert [p.passage_index for p in passages if p.doc_id == passages[0].doc_id][:2] == [0, 1]


def test_bonito_refuses_more_options_than_letters() -> None:
    """Nine options cannot be lettered A-H: the row is invalid, never an error that ends the run."""
    options = [f"Option {i}" for i in range(len(bo.OPTION_LETTERS) + 1)]
    reply = json.dumps({"question": "Which one?", "options": options, "answer": options[0]})
    assert bo.parse_instruct("mcqa", reply, PASSAGE) == (None, "options_too_many")
    fine = json.dumps({"question": "Which one?", "options": options[:8], "answer": options[7]})
    row, status = bo.parse_instruct("mcqa", fine, PASSAGE)
    assert status == "ok" and "H. Option 7" in row["instruction"]
