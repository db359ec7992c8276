"""Self-Instruct under `-o preset official` against `bootstrap_instructions.py` recorded from the official code
(tests/golden/self_instruct/README.md): the instructions kept from each reply and the prompt's list."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from instructkit.generators import self_instruct as si

from instructkit.registry import get

GOLDEN = Path(__file__).parent / "self_instruct"
REPLIES = json.loads((GOLDEN / "post_process.json").read_text())
PROMPTS = json.loads((GOLDEN / "encode_prompt.json").read_text())


@pytest.mark.parametrize("case", REPLIES, ids=[str(i) for i in range(len(REPLIES))])
def test_official_preset_keeps_the_instructions_upstream_keeps(case):
    opts = get("generate", "self_instruct").make_options({"preset": "official"})
    got = si.post_process(case["text"], case["finish_reason"], opts.num_prompt_instructions, opts.mode,
                          opts.strip_echo)
    assert [c["instruction"] for c in got if c["reason"] is None] == case["instructions"]


def test_the_default_strips_the_echo_upstream_keeps():
    """The corpus holds an echo that upstream keeps as the start of a task (so the preset's choice is held)."""
    echo = next(c for c in REPLIES if c["text"].startswith("9. "))
    assert echo["instructions"][0].startswith("9. ")
    assert si.post_process(echo["text"], "stop")[0]["instruction"] == echo["instructions"][0][3:].capitalize()


@pytest.mark.parametrize("case", PROMPTS, ids=[str(i) for i in range(len(PROMPTS))])
def test_continuation_prompt_lists_the_demonstrations_as_upstream(case):
    """The numbered demonstrations and the open number byte for byte; the header line is our own wording."""
    ours = si.encode_prompt(case["demos"], classification=case["classification"])
    assert ours.split("\n", 1)[1] == case["prompt"].split("\n", 1)[1]


INSTANCES = json.loads((GOLDEN / "parse_instances.json").read_text())


@pytest.mark.parametrize("case", INSTANCES, ids=[str(i) for i in range(len(INSTANCES))])
def test_instance_parser_keeps_the_instances_upstream_keeps(case):
    """prepare_for_finetuning.py's parsers; compared as sets: upstream de-duplicates with `list(set(...))`,
    whose order depends on PYTHONHASHSEED (we keep first occurrences)."""
    pairs, _ = si.parse_instances(case["text"], case["classification"], case["finish_reason"])
    assert sorted([inp, out] for inp, out in pairs) == case["instances"]
