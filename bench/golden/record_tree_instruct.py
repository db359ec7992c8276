"""Record how the official Tree-Instruct `worker` prepares instructions and passes replies on.

Not run by CI: it needs the official code (xiuzbl/Tree-Instruct, outside this repo); its module imports
openai and langdetect, replaced here by stand-ins: the openai one records the message the official
`worker` builds and answers a canned reply (tests/golden/tree_instruct/README.md has the command).
Only the old instruction as the official prompt embeds it is stored (cut out between its markers), not
the prompt's text.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import types
from pathlib import Path

OUT = Path(__file__).resolve().parents[2] / "tests" / "golden" / "tree_instruct" / "worker.json"

INSTRUCTIONS = [
    "Give three tips for staying healthy.",
    '"Give three tips for staying healthy."',
    '""Double quoted""',
    '  "Padded and quoted"  ',
    '"Only a leading quote',
    'Only a trailing quote"',
    "  Leading and trailing spaces  ",
    "\tTabs\tand\nnewlines\n",
    '"',
    '""',
    "'Single quotes'",
    "“Curly quotes”",
    'He said "hello" to me.',
    '"  spaces inside quotes  "',
    'x',
    "Write a poem about {{sample}} placeholders.",
    "Ünïcode instruction — with dashes…",
    '"Multi\nline\ninstruction"',
    "Summarize: \"quoted\" at the end\"",
    '  "',
    '""Nested "quotes" here""',
    "End with a newline\n",
]
REPLIES = [
    "Give three detailed, evidence-based tips for staying healthy during a busy work week.",
    '"A quoted reply that the official code keeps as is."',
    "New instruction: a reply with a label",
    "  padded reply  ",
    "NONE",
    "undefinedsome thing error, try again later",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("official", type=Path, help="checkout of xiuzbl/Tree-Instruct")
    args = ap.parse_args()
    sent: list[str] = []
    replies: list[str] = []

    def create(model, messages, max_tokens):
        sent.append(messages[0]["content"])
        return {"choices": [{"message": {"content": replies.pop(0)}}]}

    sys.modules["openai"] = types.SimpleNamespace(ChatCompletion=types.SimpleNamespace(create=create))
    sys.modules["langdetect"] = types.SimpleNamespace(detect=lambda s: "en")
    spec = importlib.util.spec_from_file_location("tree_official", args.official / "generate_tree_instructions.py")
    official = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(official)
    official.visited = set()
    start, end = 'Old instruction: "', '"\n\nNew instruction: '
    cases = []
    for i, text in enumerate(INSTRUCTIONS):
        replies.append(REPLIES[i % len(REPLIES)])
        try:
            _, reply = official.worker({"id": i, "new": text})
        except IndexError as e:  # the official code indexes text[0]: an empty instruction raises
            replies.clear()  # no call was made
            cases.append({"instruction": text, "error": type(e).__name__})
            continue
        prompt = sent[-1]
        embedded = prompt[prompt.index(start) + len(start) : prompt.rindex(end)]
        cases.append({"instruction": text, "embedded": embedded, "reply": REPLIES[i % len(REPLIES)],
                      "returned": reply})  # fmt: skip
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(cases, indent=1, ensure_ascii=False) + "\n")
    print(f"{len(cases)} cases")


if __name__ == "__main__":
    main()
