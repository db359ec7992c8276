"""Record Self-Instruct's golden instruction parsing by running the official `bootstrap_instructions.py`.

Not run by CI: it needs the official code (yizhongw/self-instruct, outside this repo); its module
imports numpy, pandas, tqdm, rouge_score and openai (tests/golden/self_instruct/README.md has the
command). `post_process_gpt3_response` reads each reply below (real-looking GPT-3
continuations of the "9." prompt and adversarial ones), `encode_prompt` builds prompts from
demonstrations with odd whitespace and trailing colons, and `prepare_for_finetuning.py`'s instance
parsers read instance replies (examples, class labels, truncation, invalid and conflicting instances).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[2] / "tests" / "golden" / "self_instruct"

REPLIES: list[tuple[str, str]] = [
    # (reply text, finish_reason)
    (" Give an example of a metaphor.\n10. Name two rivers in Africa.\n11. Plot the data points.\n12. OK", "stop"),
    ("9. Write a haiku about the sea.\n10. Suggest three names for a cat.", "stop"),  # echo of the open number
    ("9 . Explain why the sky is blue to a child.\n10. List four prime numbers.", "stop"),
    ("  9.  Translate this sentence into French: I like tea.", "stop"),
    (" Describe a sunset.\n10.Tell me a joke about a computer.\n11 . Summarize the plot of Hamlet briefly.", "stop"),
    (" Convert 10 miles into kilometers.\n\n10. Find the synonym of happy.", "stop"),
    (" Sort the numbers 3, 1, 2 in ascending order.", "length"),  # truncated: dropped whole
    (" Write a program that reverses a string in Python.\n10. write a program to add numbers please.", "stop"),
    (" Draw a house with a red roof please.\n10. Go to the store and buy some milk.\n11. Read the file.", "stop"),
    (" What is the capital city of Australia?\n10. \"Quote the first line of a famous poem.\"", "stop"),
    (" ¿Cuál es la capital de España, en inglés?\n10. Éxplain the word café to a tourist.", "stop"),
    ("\n10. Name the largest planet in our solar system.", "stop"),  # empty first piece
    (" " + " ".join(["word"] * 151) + "\n10. Give me five adjectives for summer.", "stop"),  # too long
    (" Name the mapping between letters and numbers in ASCII code.\n10. Show me the maps of Paris now.", "stop"),
    (" Classify the sentiment of the review.\nOutput: positive\n10. Rewrite the sentence in passive voice.", "stop"),
    (" Identify the odd one out: apple, banana, car.\n10) Give two antonyms for fast.\n11. - Explain gravity now.",
     "stop"),
    (" Generate a list of\n   three   colours   that\tgo together.\n10. Rate this movie from 1 to 10 please.", "stop"),
    (" Create an acrostic poem using the word LOVE.\n100. Count the vowels in this sentence.", "stop"),
    (" Find the error in the code:\n10. Fix the typo in the sentence: I has a cat.", "stop"),
    (" Give feedback on an essay.\n10.\n11. Recommend a book for a ten year old.", "stop"),
    ("", "stop"),
    (" Tell me   something \n\n\n interesting about octopuses.\n10 .Compare cats and dogs as pets.", "stop"),
    (" Images of cats are cute; describe one.\n10. Graphs can mislead people; explain how.", "stop"),
    (" 1. Add two numbers and report the sum.\n10. Multiply seven by eight and explain.", "stop"),
]

INSTANCE_REPLIES: list[tuple[str, bool, str]] = [
    # (raw instance reply, is classification, finish_reason)
    ("Example 1\nInput: 2 + 2\nOutput: 4\nExample 2\nInput: 3 + 5\nOutput: 8", False, "stop"),
    ("Example 1\nInput: 2 + 2\nOutput: 4\nExample 2\nInput: 3 + 5\nOutput:", False, "length"),
    ("Output: A poem about the sea.", False, "stop"),
    ("Input: hello\nOutput: HELLO\nInput: world\nOutput: WORLD", False, "stop"),
    ("Example 1\nInput: cat\nOutput: animal\nExample 2\nInput: cat\nOutput: pet", False, "stop"),
    ("Example 1\nInput: x\nOutput: y\nExample 2\nInput: x\nOutput: y", False, "stop"),
    ("Example 1\nOutput: same\nExample 2\nOutput: same", False, "stop"),
    ("Example 1\nInput: same\nOutput: same", False, "stop"),
    ("Example 1\nInput: Give a list:\nOutput: a, b", False, "stop"),
    ("Just some text without markers.", False, "stop"),
    ("Example1.\nInput 1: 10\nOutput 1: ten\nExample 2.\nInput 2: 20\nOutput 2 : twenty", False, "stop"),
    ("  \n Example 3 \n Input:  spaced  \n Output:   out  \n", False, "stop"),
    ("Example 1\nInput: a\nOutput: b\nExample 2\nInput: c\nOutput: d", False, "length"),
    ("Output: first\nOutput: second", False, "stop"),
    ("Class label: Positive\nSentence: I loved it.\nClass label: Negative\nSentence: Awful.", True, "stop"),
    ("Class label: Yes\nClass label: No\nInput: maybe", True, "stop"),
    ("Class label: A\nText one\nClass label: B\nText two", True, "length"),
    ("No labels here at all.", True, "stop"),
    ("Class label: Spam\nBuy now\nClass label: Ham\nBuy now", True, "stop"),
    ("Class label: X\nsame\nClass label: X\nsame", True, "stop"),
    ("Class label:\nnothing after the label", True, "stop"),
    ("Class label: Label:\nInput: a colon label", True, "stop"),
]

DEMOS: list[list[str]] = [
    ["Give three tips for staying healthy.", "  Translate to German:\n  Good morning:", "What is 2+2?::"],
    ["Classify the following animal:", "Is this email spam?\t", "Rewrite\n\nthe sentence."],
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("official", type=Path, help="checkout of yizhongw/self-instruct")
    args = ap.parse_args()
    sys.path.insert(0, str(args.official / "self_instruct"))
    sys.argv = sys.argv[:1]
    import bootstrap_instructions as official
    import prepare_for_finetuning as finetuning

    parsed = [{"text": t, "finish_reason": f,
               "instructions": official.post_process_gpt3_response({"choices": [{"text": t, "finish_reason": f}]})}
              for t, f in REPLIES]  # fmt: skip
    prompts = [{"demos": d, "classification": c, "prompt": official.encode_prompt(d, classification=c)}
               for d in DEMOS for c in (False, True)]  # fmt: skip
    instances = []
    for text, is_clf, finish in INSTANCE_REPLIES:
        parse = (finetuning.parse_instances_for_classification_task if is_clf
                 else finetuning.parse_instances_for_generation_task)  # fmt: skip
        got = parse(text, "An instruction.", {"response": {"choices": [{"finish_reason": finish}]}})
        # the official de-duplication is `list(set(...))`, whose order depends on PYTHONHASHSEED: sorted here
        instances.append({"text": text, "classification": is_clf, "finish_reason": finish,
                          "instances": sorted([inp, out] for _, inp, out in got)})  # fmt: skip
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "parse_instances.json").write_text(json.dumps(instances, indent=1, ensure_ascii=False) + "\n")
    (OUT / "post_process.json").write_text(json.dumps(parsed, indent=1, ensure_ascii=False) + "\n")
    (OUT / "encode_prompt.json").write_text(json.dumps(prompts, indent=1, ensure_ascii=False) + "\n")
    print(f"{len(parsed)} replies, {sum(len(p['instructions']) for p in parsed)} instructions; {len(prompts)} prompts")


if __name__ == "__main__":
    main()
