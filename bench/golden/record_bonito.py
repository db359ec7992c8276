"""Record Bonito's golden inputs and kept tasks by running the official `Bonito.generate_tasks`.

Not run by CI: it needs the official code (BatsResearch/bonito, outside this repo) and `datasets`
(see tests/golden/bonito/README.md for the command). The model is a stand-in `vllm` module whose
`LLM.generate` records the prompts the official code builds and answers the predictions below, so
the official input builder, the strip, the `<|pipe|>` filter and the `{{context}}` substitution run
unchanged on replies we wrote: real-looking ones of every kind and adversarial ones.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import types
from pathlib import Path

OUT = Path(__file__).resolve().parents[2] / "tests" / "golden" / "bonito" / "generate_tasks.json"

PASSAGE = (
    "The Amazon rainforest covers much of the Amazon basin of South America. It spans nine nations, "
    "and Brazil holds about 60 percent of it."
)
PADDED = "\n  The lighthouse was built in 1874 by the harbour board.  \n"
CASES: list[tuple[str, str, str]] = [
    # (task type as given to generate_tasks, context, the model's reply)
    ("exqa", PASSAGE, "{{context}}\n\nQ: How many nations does the rainforest span?\nA:<|pipe|>nine"),
    ("exqa", PASSAGE, "{{context}}\n\nWho manages the rainforest?<|pipe|>The United Nations"),  # not in passage
    ("exqa", PADDED, "Read this: {{context}}\nWhen was it built?<|pipe|>1874 "),
    ("ynqa", PASSAGE, "{{context}}\n\nIs Brazil home to most of the rainforest?<|pipe|>Yes"),
    ("ynqa", PASSAGE, "{{context}}\n\nDoes the rainforest span nine nations?<|pipe|>Probably, nine"),
    ("mcqa", PASSAGE, "{{context}}\nWhich country holds most of it?\nA. Peru\nB. Brazil\nC. Chile<|pipe|>Brazil"),
    ("mcqa", PASSAGE, "{{context}}\nWhich country holds most of it?\nA. Peru\nB. Chile<|pipe|>Argentina"),
    ("multiple-choice question answering", PASSAGE, "Options: x, y\n{{context}}<|pipe|>z"),
    ("qa", PASSAGE, "What share of the rainforest does Brazil hold?<|pipe|>About 60 percent"),  # no context
    ("qg", PASSAGE, "{{context}}\n\nWrite a question whose answer is: nine<|pipe|>How many nations?"),
    ("nli", PASSAGE, "{{context}}\nHypothesis: Brazil holds all of it.<|pipe|>No"),
    ("te", PADDED, "Premise: {{context}} Hypothesis: It is old.<|pipe|>yes"),
    ("summarization", PASSAGE, "Summarize: {{context}}<|pipe|>{{context}}"),  # placeholder in the answer
    ("paraphrase", PASSAGE, "{{ context }}\nParaphrase it.<|pipe|>Same words."),  # spaced: not a placeholder
    ("sentiment", PASSAGE, "{{context}}\nSentiment?<|pipe|>"),  # empty answer
    ("topic_class", PASSAGE, "<|pipe|>"),  # both sides empty
    ("coref", PASSAGE, "{{context}}\nWho is 'it'?<|pipe|>the rainforest<|pipe|>extra"),  # two pipes
    ("wsd", PASSAGE, "{{context}}\nWhat does 'covers' mean here? no pipe at all"),
    ("text_gen", PASSAGE, "   \n\n{{context}}\nContinue:  <|pipe|>  It is vast.\n\n  "),  # outer whitespace
    ("sent_comp", PASSAGE, "{{context}} The rainforest is<|pipe |>big"),  # broken marker
    ("paraphrase_id", PASSAGE, "{{context}}{{context}}\nSame?<|pipe|>yes"),  # two placeholders
    ("yes-no question answering", PADDED, "{{context}}\nIs it a lighthouse?\n<|pipe|>\nYes\n"),
    ("extractive question answering", PASSAGE, "Context: {{context}} Question: What spans nine nations?<|pipe|>"
     "The Amazon rainforest"),
    ("natural language inference", "Ünïcode — “quotes” and 🌲 trees.", "{{context}}\nEntails?<|pipe|>Maybe"),
    ("question answering without choices", "", "{{context}}What?<|pipe|>Nothing"),  # empty context
    ("summarization", PASSAGE, "<|pipe|>{{context}}<|pipe|>"),  # three parts
    ("qa", PASSAGE, "Q?<|PIPE|>A"),  # marker case differs
    ("exqa", PASSAGE, "{{context}}\nQ?\r\n<|pipe|>\r\nnine\r\n"),
]


def stand_in_vllm(replies: list[str], prompts: list[str]) -> types.ModuleType:
    """A `vllm` whose LLM answers `replies` in order and records the prompts it was given."""
    mod = types.ModuleType("vllm")

    class SamplingParams:
        def __init__(self, **kwargs):
            self.kwargs = kwargs

    class LLM:
        def __init__(self, *args, **kwargs):
            pass

        def generate(self, inputs, sampling_params):
            prompts.extend(inputs)
            return [types.SimpleNamespace(outputs=[types.SimpleNamespace(text=replies.pop(0))]) for _ in inputs]

    mod.SamplingParams, mod.LLM = SamplingParams, LLM
    return mod


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("official", type=Path, help="checkout of BatsResearch/bonito")
    args = ap.parse_args()
    replies: list[str] = []
    prompts: list[str] = []
    sys.modules["vllm"] = stand_in_vllm(replies, prompts)
    sys.path.insert(0, str(args.official))
    from bonito import Bonito
    from datasets import Dataset, disable_caching

    disable_caching()
    model = Bonito("stand-in")
    sampling = sys.modules["vllm"].SamplingParams(max_tokens=256, top_p=0.95, temperature=0.5, n=1)
    records = []
    with tempfile.TemporaryDirectory():
        for task_type, context, reply in CASES:
            replies.append(reply)
            kept = model.generate_tasks(Dataset.from_list([{"text": context}]), "text", task_type, sampling)
            records.append({"task_type": task_type, "context": context, "reply": reply, "model_input": prompts[-1],
                            "kept": [{"input": r["input"], "output": r["output"]} for r in kept]})
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(records, indent=1, ensure_ascii=False) + "\n")
    print(f"{len(records)} cases, {sum(bool(r['kept']) for r in records)} kept -> {OUT}")


if __name__ == "__main__":
    main()
