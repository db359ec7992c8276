"""Record what the official Evol-Instruct driver keeps by running `Evol_Instruct/main.py` unchanged.

Not run by CI: it needs the official code (nlpxucan/WizardLM, outside this repo; the driver imports
only the standard library and `openai_access`, which is replaced here). A stand-in `openai_access`
answers `call_chatgpt` with the replies below in order (adversarial ones included: an empty evolution,
one that copies the prompt's markers, a "sorry" answer, a stop-word answer) and records what it was
asked; the official `depth`/`breadth` builders are wrapped to record the instruction text the driver
hands them. No official prompt text is stored.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import runpy
import sys
import tempfile
import types
from pathlib import Path

OUT = Path(__file__).resolve().parents[2] / "tests" / "golden" / "evol_instruct" / "main.json"

ROWS = [
    {"instruction": "Name three fruits.", "input": ""},
    {"instruction": "  Translate the sentence.  ", "input": " Guten Morgen \n"},
    {"instruction": "Summarize the text.", "input": "Line one.\r\nLine two."},
    {"instruction": "Is 7 prime?", "input": ""},
    {"instruction": "Write a haiku.", "input": ""},
    {"instruction": "Sort the list.", "input": "3, 1, 2"},
    {"instruction": "\tTabbed instruction\t", "input": "\t"},
    {"instruction": "Explain recursion.", "input": "   "},
    {"instruction": "Fix the code.", "input": "def f(x):\n    return x +"},
    {"instruction": "Classify the sentiment.", "input": "I love it!\r\n"},
    {"instruction": "Write a limerick about a cat named Bob.", "input": ""},
    {"instruction": "Ünïcode — translate “this”.", "input": "“ceci”"},
    {"instruction": "Answer briefly.\n", "input": "\nWhat is 2+2?\n"},
    {"instruction": "Rewrite #The Given Prompt# style text.", "input": ""},
    {"instruction": "List five prime numbers.", "input": ""},
    {"instruction": "Describe the image.", "input": "<image>"},
    {"instruction": "Continue the story.", "input": "Once upon a time"},
    {"instruction": "Compute the sum.", "input": "1 2 3"},
    {"instruction": "Name a color.", "input": ""},
    {"instruction": "Give advice.", "input": "I am tired."},
]
# (evolution reply, answer reply) per row, in the driver's call order
REPLIES = [
    ("Name three tropical fruits and give one country where each is grown.", "Mango (India), papaya, pineapple."),
    ("", "Could you tell me what you would like?"),  # empty evolution: still answered and kept
    ("#Rewritten Prompt#: Summarize the text in one sentence.", "Two lines about something."),
    ("Is 7 a prime number? Explain your reasoning step by step.", "Sorry, I cannot answer that."),
    ("Write a haiku about autumn rain in a city.", "Yes, it is."),
    ("  Sort the list 3, 1, 2 in descending order.  \n", "\n3, 2, 1\n"),
    ("Rewritten prompt: something", "Fine."),
    ("Explain recursion with a Python example of computing factorials.", "Recursion is when..."),
    ("Fix the code and explain the syntax error.", ""),  # empty answer: still kept
    ("Classify the sentiment and give a confidence score.", "Positive, 0.9."),
    ("Write a limerick about a cat named Bob who loves to fish.", "the and of"),
    ("Translate the quoted word and explain its origin.", "sorry"),
    ("\nWhat is 2+2? Show each step.\n", "4"),
    ("Given prompt: rewrite it", "OK"),
    ("List five prime numbers greater than 100.", "101, 103, 107, 109, 113"),
    ("Describe the image in detail.", "I'm sorry, I cannot see images."),
    ("Continue the story in the style of a fairy tale.", "...there lived a king."),
    ("Compute the sum and the product.", "6 and 6"),
    ("Name a color", "Blue."),
    ("Give three pieces of advice.", "Sleep, eat, rest."),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("official", type=Path, help="checkout of nlpxucan/WizardLM")
    args = ap.parse_args()
    driver = args.official / "Evol_Instruct"
    sys.path.insert(0, str(driver))
    replies = [text for pair in REPLIES for text in pair]
    asked: list[str] = []

    def call_chatgpt(ins):
        asked.append(ins)
        return replies.pop(0)

    sys.modules["openai_access"] = types.SimpleNamespace(call_chatgpt=call_chatgpt)
    handed: list[str] = []
    import breadth
    import depth

    for mod in (depth, breadth):
        for name in [n for n in dir(mod) if n.startswith("create")]:
            real = getattr(mod, name)

            def wrapped(instruction, _real=real):
                handed.append(instruction)
                return _real(instruction)

            setattr(mod, name, wrapped)
    random.seed(0)  # the driver draws its operation unseeded; the draw is not part of the record
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "alpaca_data_cleaned.json").write_text(json.dumps(ROWS))
        cwd = os.getcwd()
        os.chdir(tmp)
        try:
            runpy.run_path(str(driver / "main.py"), run_name="__main__")
            written = json.loads(Path(tmp, "alpaca_data_evol.json").read_text())
        finally:
            os.chdir(cwd)
    per_row = len(handed) // len(ROWS)  # every builder is called once per row (5 prompts, one drawn)
    record = {
        "rows": ROWS,
        "replies": [list(p) for p in REPLIES],
        "evolved_text": handed[::per_row],
        "calls_per_row": len(asked) // len(ROWS),
        "answer_asked": asked[1::2],
        "written": written,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(record, indent=1) + "\n")
    print(f"{len(ROWS)} rows -> {len(written)} written, {len(asked)} calls")


if __name__ == "__main__":
    main()
