"""Record golden outputs of the official judge code (issue 25): MT-Bench pairwise (FastChat llm_judge),
Prometheus 2 absolute and relative grading (prometheus-eval), DEITA's scorer on vLLM and its embedding
text, and AlpaGasus's score parser. Not run by CI: it needs the official code, which stays outside the repo.

Each official repository is extracted at its pinned commit (nothing is installed; only the functions
used are loaded, with stand-ins for the network client, the progress bar and the model):

    git -C MIRROR archive COMMIT PATHS | tar -x -C /tmp/official/OWNER+NAME
    python3 bench/golden/record_judges.py --official /tmp/official --out tests/golden

Inputs are ours (real-looking and adversarial replies, edge-case rows); outputs are whatever the
official code returned. Prompt texts the official code builds are recorded as sha256 digests only
(the texts are theirs); parsers' inputs and outputs are recorded whole.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import re
import sys
import types
from pathlib import Path

PINS = {
    "lm-sys+FastChat": "0e6d3e4beaab66f4d3f93db72541a4abab8af28d",
    "prometheus-eval+prometheus-eval": "dcfb44272d5d0414832f5dbb8c2a05ebc2614234",
    "hkust-nlp+deita": "b279f2c329b403d2612a61e270c8d2a2eeaed6f4",
    "gpt4life+alpagasus": "95ad3e52510df8c0a2f0dd6cbe50b501acde83a1",
}


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def load_defs(path: Path, names: set[str], namespace: dict) -> dict:
    """Execute only the named top-level functions, classes and assignments of an official file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    keep = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in names:
            keep.append(node)
        elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id in names for t in node.targets):
            keep.append(node)
    exec(compile(ast.Module(body=keep, type_ignores=[]), str(path), "exec"), namespace)
    return namespace


def write(out: Path, name: str, rows: list[dict]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with (out / name).open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"{out / name}: {len(rows)} cases")


# ----- MT-Bench pairwise (FastChat llm_judge/common.py run_judge_pair, gen_judgment.py make_judge_pairwise) ---

MTBENCH_REPLIES = [
    "Assistant A gives the correct derivative and shows each step, while Assistant B makes a sign error.\n\n[[A]]",
    "Both answers are correct and equally detailed; neither is clearly better.\n\nFinal verdict: [[C]]",
    "Assistant A is longer, but length should not decide. Assistant B answers the question.\nMy final verdict is: **[[B]]**.",
    'I will answer with "[[A]]" if A is better. Having compared them, B is more precise. [[B]]',
    "[[A]] Assistant A is better because it is concise and correct.",
    "Both have merits; it is hard to choose.",
    "Assistant B is clearly better here. [[b]]",
    "[[A]]\nAssistant A explains the recursion, which the user asked for.",
    "After weighing both, [[B]]\n\nHope this helps! Let me know if you need more detail.",
    "Neither is perfect. [[C]] would be fair, but A edges it on accuracy: [[A]]",
    "The verdict: [[ A ]]",
    "Verdict: [A]",
    "Assistant A wins on accuracy. [[A]].",
    "Tie. [[C]]",
    "Assistant B is better. [[B]]\n",
    "My verdict is [[B]] because A hallucinated a library; although [[A]] is shorter.",
    "[[C]] [[B]]",
    "",
    "   \n\n",
    "Assistant A: good. Assistant B: better. Final: B",
    "[[A]][[B]][[C]]",
    "Output format reminder: \"[[A]]\" if A, \"[[B]]\" if B, \"[[C]]\" for a tie. I pick [[C]].",
    "**Final Verdict: [[B]]**",
    "Both fail to answer; tie ([[C]]).",
    "$ERROR$",
]

MTBENCH_ROWS = [  # (question, answer A, answer B, reference answer or None)
    ("What is 3 + 4 * 2?", "11", "14", "3 + 4 * 2 = 3 + 8 = 11."),
    ("Write a haiku about autumn.", "Leaves fall slowly down\nRed and gold upon the ground\nThe year exhales now", "Autumn is nice.", None),
    ("Use {curly} braces and a backslash \\n here.", "A {x}", "B }{", None),
    ("Solve x^2 = 4.", "x = 2 or x = -2", "x = 2", "x = \u00b12"),
    ("", "", "", None),
    ("Translate 'chat' to English.", "cat", "chat", ""),
]


class _Conv:
    """FastChat's conversation for an OpenAI judge, as far as run_judge_pair uses it: roles, messages and
    the system message (to_openai_api_messages is FastChat's: system first, then the turns)."""

    roles = ("user", "assistant")

    def __init__(self) -> None:
        self.messages: list[list] = []
        self.system_message = ""

    def append_message(self, role: str, message: str | None) -> None:
        self.messages.append([role, message])

    def set_system_message(self, text: str) -> None:
        self.system_message = text


def record_mtbench(root: Path, out: Path) -> None:
    judge_dir = root / "fastchat" / "llm_judge"
    calls: list[dict] = []
    replies: list[str] = []

    def chat_completion_openai(model, conv, temperature, max_tokens, api_dict=None):
        calls.append({"system": conv.system_message, "user": conv.messages[0][1], "temperature": temperature,
                      "max_tokens": max_tokens})
        return replies.pop(0)

    ns = {"re": re, "ast": ast, "json": json, "dataclasses": __import__("dataclasses"), "Optional": object,
          "get_conversation_template": lambda model: _Conv(), "OPENAI_MODEL_LIST": ["gpt-4"],
          "ANTHROPIC_MODEL_LIST": [], "chat_completion_openai": chat_completion_openai}
    load_defs(judge_dir / "common.py", {"TIE_DELTA", "two_score_pattern", "two_score_pattern_backup", "Judge",
                                        "run_judge_pair", "load_judge_prompts", "NEED_REF_CATS"}, ns)
    load_defs(judge_dir / "gen_judgment.py", {"make_judge_pairwise"}, ns)
    prompts = ns["load_judge_prompts"](str(judge_dir / "data" / "judge_prompts.jsonl"))
    judges = ns["make_judge_pairwise"]("gpt-4", prompts)

    verdicts = []
    for text in MTBENCH_REPLIES:  # the parser: the default (pair-v2) judge, one order
        replies.append(text)
        winner, _, judgment = ns["run_judge_pair"]({"turns": ["Q"]}, {"choices": [{"turns": ["a"]}]},
                                                   {"choices": [{"turns": ["b"]}]}, judges["default"], None)
        verdicts.append({"judgment": judgment, "winner": winner})
    write(out, "verdicts.jsonl", verdicts)

    rows = []
    for question, a, b, ref in MTBENCH_ROWS:  # the prompts: FastChat's judge by category (reference => math)
        category = "math" if ref is not None else "writing"
        judge = judges["math"] if category in ns["NEED_REF_CATS"] else judges["default"]
        ref_answer = {"choices": [{"turns": [ref]}]} if judge.ref_based else None
        replies.append("[[A]]")
        ns["run_judge_pair"]({"turns": [question]}, {"choices": [{"turns": [a]}]},
                             {"choices": [{"turns": [b]}]}, judge, ref_answer)
        call = calls[-1]
        rows.append({"question": question, "answer_a": a, "answer_b": b, "reference": ref,
                     "judge": judge.prompt_template["name"], "system_sha256": sha(call["system"]),
                     "user_sha256": sha(call["user"]), "temperature": call["temperature"],
                     "max_tokens": call["max_tokens"]})
    write(out, "prompts.jsonl", rows)
    entries = {name: {"system_prompt": sha(p["system_prompt"]), "prompt_template": sha(p["prompt_template"]),
                      "output_format": p["output_format"]} for name, p in prompts.items()
               if name in ("pair-v2", "pair-math-v1")}
    (out / "judge_prompts.sha256.json").write_text(json.dumps(entries, indent=1) + "\n", encoding="utf-8")


# ----- Prometheus 2 (prometheus-eval: judge.py prompts and default params, parser.py) ---------------

ABSOLUTE_REPLIES = [
    "The response names the capital correctly and explains the river's role. It misses the population. [RESULT] 4",
    "Feedback: Accurate but terse; Score 5 in the rubric needs an example, which is absent.\n[RESULT] (3)",
    "The answer is off-topic and does not address the instruction at all.\n\n[RESULT] 1\n",
    "Mostly right, minor slips in units. So the overall score is: [RESULT] 4/5",
    "Clear and correct, with a worked example.  Score: 5",
    "Feedback: the response fits Score 2 of the rubric in places. [RESULT] 3 **",
    "[RESULT] 2 would be too harsh here; the response is helpful but incomplete.",
    "A thorough answer. [RESULT] 6",
    "A thorough answer. [RESULT] 8/10",
    "Good, though one step is skipped. [RESULT] 3.5",
    "The response is fine.",
    "",
    "Solid work. [RESULT] 4.",
    "Solid work. **[RESULT] 4**",
    "The response deserves a score of 4.",
    "Taking everything into account, the overall score 3",
    "[SCORE] 5",
    "Result: 2",
    "[Result]: 5",
    "Well argued. [RESULT] 4 out of 5",
    "Weak. [RESULT] 0",
    "Feedback: fine. [RESULT] 5\nNote: the rubric was applied strictly.",
    "Feedback: fine.\n[RESULT] 2\n\n",
    "score: 3",
    "Feedback: it is fine. Score 4",
    "[RESULT] 5 [RESULT] 1",
]

RELATIVE_REPLIES = [
    "Feedback: Both responses name a color, but Response B adds an unrelated animal. Response A is direct. [RESULT] A",
    "Feedback: Response A misreads the question while Response B answers it with an example.\n[RESULT] B",
    "Response B is clearer.\n[RESULT]: B.",
    "[RESULT] A is what a careless grader would say, but B is more accurate overall.",
    "Both responses are equally good.",
    "Feedback: B wins.\n[RESULT] B\n\nNote: both were close.",
    "Feedback: Compare [Response A]\nwhich is weaker, with the other. [RESULT] B",
    "[RESULT] b",
    "[RESULT: A]",
    "[Response B]",
    "Result: A",
    "Feedback: fine.\nResult: B",
    "[Result] Response A",
    "[Result: B]",
    "Feedback: A is better. [RESULT] A.",
    "Feedback: tie. [RESULT] C",
    "",
    "Feedback: B.\n[RESULT] B ",
    "Feedback: [RESULT] A\nactually no, [RESULT] B",
    "Result A",
    "Feedback: the better one is A\n[RESULT]A",
    "**[RESULT] A**",
]

PROMETHEUS_ROWS = [  # (instruction, response / response A, response B, criteria, score 1-5 descriptions, reference)
    ("Add 2 and 2.", "4", "5", "Correctness", ["wrong", "d2", "d3", "d4", "right"], "2 + 2 = 4"),
    ("Name a color.", "Blue", "A dog", "Which response names a color?", ["no", "barely", "some", "mostly", "yes"], None),
    ("Braces {x} and {{y}}", "{response}", "}{", "{rubric}", ["{a}", "}", "{{", "", "5"], "{reference_answer}"),
    ("", "", "", "", ["", "", "", "", ""], None),
    ("Multi\nline\n\ninstruction", "Line 1\n\nLine 2  ", " lead", "Is it [bracketed]?", ["1", "2", "3", "4", "5"], "ref\n"),
]


def record_prometheus(root: Path, out: Path, pkg: Path | None = None, tag: str = "") -> None:
    """The parsers and prompts of prometheus-eval at the pinned commit, or (`pkg`, `tag`) those of an
    unpacked wheel: the PyPI release's prompts differ from the commit's (relative grading)."""
    pkg = pkg or root / "libs" / "prometheus-eval" / "prometheus_eval"
    for name in [m for m in sys.modules if m.startswith("prometheus_eval")]:
        del sys.modules[name]
    # Stand-ins for what judge.py and utils.py import but these calls do not use: FastChat's conversation
    # (only for vLLM models) and tqdm (a progress bar).
    sys.modules["fastchat"] = types.ModuleType("fastchat")
    conv = types.ModuleType("fastchat.conversation")
    conv.get_conv_template = None
    sys.modules["fastchat.conversation"] = conv
    tq = types.ModuleType("tqdm")
    tq.tqdm = lambda it, **kw: it
    sys.modules["tqdm"] = tq
    sys.path.insert(0, str(pkg.parent))
    from prometheus_eval import prompts as P  # noqa: E402
    from prometheus_eval.judge import PrometheusEval  # noqa: E402
    from prometheus_eval.parser import parse_output  # noqa: E402

    sys.path.remove(str(pkg.parent))
    if not tag:
        write(out, "absolute_parse.jsonl", [dict(zip(("output", "feedback", "score"), (t, *parse_output(t, "absolute"))))
                                        for t in ABSOLUTE_REPLIES])
        write(out, "relative_parse.jsonl", [dict(zip(("output", "feedback", "result"), (t, *parse_output(t, "relative"))))
                                            for t in RELATIVE_REPLIES])

    class Mock:  # a mock LLM as prometheus-eval's own (validate_mockllm): records what it is sent
        def __init__(self) -> None:
            self.sent: list = []
            self.params: dict = {}

        def validate_mockllm(self) -> bool:
            return True

        def completions(self, inputs, **params):
            self.sent.extend(inputs)
            self.params = {k: v for k, v in params.items() if k != "use_tqdm"}
            return ["Feedback: ok [RESULT] 3" if "Response A" not in str(i) else "Feedback: ok [RESULT] A"
                    for i in inputs]

    rows = []
    for instruction, a, b, criteria, descriptions, ref in PROMETHEUS_ROWS:
        for mode in ("absolute", "relative"):
            model = Mock()
            if mode == "absolute":  # the rubric as prometheus-eval's README builds it; relative: the criteria alone
                rubric = P.SCORE_RUBRIC_TEMPLATE.format(criteria=criteria, **{f"score{i + 1}_description": d
                                                                               for i, d in enumerate(descriptions)})
                judge = PrometheusEval(model, absolute_grade_template=P.ABSOLUTE_PROMPT if ref else P.ABSOLUTE_PROMPT_WO_REF)
                judge.absolute_grade(instructions=[instruction], responses=[a], rubric=rubric,
                                     reference_answers=[ref], params={})
            else:
                rubric = criteria
                judge = PrometheusEval(model, relative_grade_template=P.RELATIVE_PROMPT if ref else P.RELATIVE_PROMPT_WO_REF)
                judge.relative_grade(instructions=[instruction], responses_A=[a], responses_B=[b], rubric=rubric,
                                     reference_answers=[ref], params={})
            (msgs,) = model.sent
            rows.append({"mode": mode, "instruction": instruction, "response_a": a, "response_b": b,
                         "criteria": criteria, "descriptions": descriptions, "reference": ref, "roles": [m["role"] for m in msgs],
                         "system_sha256": sha(msgs[0]["content"]), "user_sha256": sha(msgs[1]["content"]),
                         "params": model.params})
    write(out, f"prompts{tag}.jsonl", rows)
    digests = {name: sha(getattr(P, name)) for name in ("ABS_SYSTEM_PROMPT", "REL_SYSTEM_PROMPT", "ABSOLUTE_PROMPT",
                                                         "ABSOLUTE_PROMPT_WO_REF", "RELATIVE_PROMPT",
                                                         "RELATIVE_PROMPT_WO_REF", "SCORE_RUBRIC_TEMPLATE")}
    (out / f"prompts{tag}.sha256.json").write_text(json.dumps(digests, indent=1) + "\n", encoding="utf-8")


# ----- DEITA (selection/scorer/base.py infer_score on vLLM; embedder conversation text) --------------

LLAMA_DIGIT_IDS = {"1": 29896, "2": 29906, "3": 29941, "4": 29946, "5": 29945, "6": 29953}


def deita_cases() -> list[list[list]]:
    """Top-logprob lists as vLLM returns them for the scorer's first position: [token_id, text, logprob]."""
    import random

    rng = random.Random(25)
    digits = list(LLAMA_DIGIT_IDS.items())
    cases: list[list[list]] = []
    for _ in range(12):  # all six present, random logprobs, plus unrelated tokens
        top = [[i, d, -rng.uniform(0.01, 12.0)] for d, i in digits]
        top += [[100 + j, f"tok{j}", -rng.uniform(0.5, 20.0)] for j in range(rng.randint(0, 5))]
        rng.shuffle(top)
        cases.append(top)
    for missing in ("1", "6", "3"):  # one digit outside the top k: the released code scores 3.0
        cases.append([[i, d, -rng.uniform(0.1, 9.0)] for d, i in digits if d != missing])
    cases.append([[LLAMA_DIGIT_IDS["4"], "4", 0.0]])  # only the argmax came back
    cases.append([[i, d, -1.0] for d, i in digits])  # all equal: 3.5
    cases.append([[i, d, (-40.0 if d != "6" else -0.0)] for d, i in digits])  # extreme
    cases.append([[i, d, -float(k) * 3] for k, (d, i) in enumerate(digits)] + [[29871, " 4", -0.1]])  # "▁4" is not "4"
    cases.append([])  # no logprobs at all (empty list at position 0: IndexError upstream)
    return cases


def record_deita(root: Path, out: Path) -> None:
    import numpy as np
    from scipy.special import softmax

    base = root / "src" / "deita" / "selection" / "scorer" / "base.py"
    ns = load_defs(base, {"Scorer"}, {"np": np, "softmax": softmax, "logging": __import__("logging"),
                                      "logger": __import__("logging").getLogger("deita")})
    llama = load_defs(root / "src" / "deita" / "selection" / "scorer" / "llama_scorer.py", {"Llama_Scorer"},
                      {"Scorer": ns["Scorer"]})["Llama_Scorer"]

    class Out:  # vLLM's RequestOutput, as far as infer_score reads it (vLLM 0.2: dict id -> float)
        def __init__(self, top: list[list]) -> None:
            lp = [{i: v for i, _, v in top}] if top else []
            self.outputs = [types.SimpleNamespace(logprobs=lp)]

    rows = []
    for top in deita_cases():
        scorer = object.__new__(llama)
        scorer.is_vllm = True
        scorer.sampling_params = None
        scorer.llm = types.SimpleNamespace(generate=lambda prompt, params, top=top: [Out(top)])
        rows.append({"top_logprobs": top, "score": float(scorer.infer_score("prompt"))})
    write(out, "server_scores.jsonl", rows)

    conv_py = root / "src" / "deita" / "selection" / "embedder" / "conversation.py"
    import importlib.util

    spec = importlib.util.spec_from_file_location("deita_conversation", conv_py)
    module = importlib.util.module_from_spec(spec)
    sys.modules["deita_conversation"] = module
    spec.loader.exec_module(module)
    get_conv_template = module.get_conv_template
    convs = [
        [("human", "Hi"), ("gpt", "Hello!")],
        [("human", "Hi"), ("gpt", "Hello!"), ("human", "Tell me a joke.")],  # ends with a human turn
        [("gpt", "I am a bot."), ("human", "Who are you?"), ("gpt", "An assistant.")],  # leading gpt skipped
        [("human", "Q1"), ("gpt", "A1"), ("human", "Q2"), ("gpt", "A2")],
        [("human", "Q1"), ("gpt", ""), ("human", "Q2"), ("gpt", "A2")],  # an empty answer mid-conversation
        [("human", "Only a question")],
        [("human", ""), ("gpt", "An answer to nothing")],
        [("human", "Braces {x} {{y}} and </s> inside"), ("gpt", "  spaced  ")],
    ]
    rows = []
    for source in convs:  # preprocess() in selection/embedder/utils.py, not only_answer
        conv = get_conv_template("vicuna_v1.1")
        roles = {"human": conv.roles[0], "gpt": conv.roles[1]}
        src = [{"from": f, "value": v} for f, v in source]
        if roles[src[0]["from"]] != conv.roles[0]:
            src = src[1:]
        conv.messages = []
        for j, sentence in enumerate(src):
            role = roles[sentence["from"]]
            assert role == conv.roles[j % 2]
            conv.append_message(role, sentence["value"])
        rows.append({"conversations": [{"from": f, "value": v} for f, v in source], "text": conv.get_prompt()})
    write(out, "embed_text.jsonl", rows)


# ----- AlpaGasus (rating/chatgpt_rating.py and filter.py parse_score; get_scores.py parse_score) -------

ALPAGASUS_REVIEWS = [
    "4.5\nThe response is accurate and helpful.",
    "5\nPerfect.",
    "3\n",
    "Score: 4.5\nThe answer is good.",
    "score: 4\nGood.",
    "4.5/5\nThe answer is fine.",
    "4.5 out of 5\nGood.",
    "The response deserves 4.\nIt is fine.",
    "Score: 5",
    "Score:\n4.5",
    "Score: 4.5 - accurate",
    "score: 3.5 because it misses a step\nmore",
    "  4  \nleading spaces",
    "",
    "Explanation first.\nScore: 2",
    "I would rate it score: 1\n",
    "5.0",
    "-1\nnegative",
    "nan\nodd",
    "6\nabove the scale",
    "Score: 10\nabove the scale",
    "Rating: 4\nno score keyword",
]


def record_alpagasus(root: Path, out: Path) -> None:
    import logging

    rows = []
    for script in ("chatgpt_rating.py", "get_scores.py"):
        ns = load_defs(root / "rating" / script, {"parse_score"},
                       {"logger": logging.getLogger("alpagasus"), "logging": logging})
        for review in ALPAGASUS_REVIEWS:
            try:
                score, error = ns["parse_score"](review), None
            except Exception as exc:  # the official script crashes on this review
                score, error = None, type(exc).__name__
            score = str(score) if isinstance(score, float) and score != score else score  # nan as text
            rows.append({"script": script, "review": review, "score": score, "error": error})
    write(out, "parse_score.jsonl", rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--official", type=Path, default=Path("/tmp/official"), help="folder of OWNER+NAME extracts")
    ap.add_argument("--out", type=Path, default=Path("tests/golden"))
    ap.add_argument("--prometheus-wheel", type=Path, help="unpacked prometheus-eval wheel (its prometheus_eval folder)")
    ap.add_argument("--only", nargs="*", default=["mtbench", "prometheus", "deita", "alpagasus"])
    args = ap.parse_args()
    logging_off = __import__("logging")
    logging_off.disable(logging_off.CRITICAL)
    for repo, commit in PINS.items():
        pinned = (args.official / repo / "COMMIT")
        if pinned.exists() and pinned.read_text().strip() != commit:
            sys.exit(f"{repo}: extracted at {pinned.read_text().strip()}, expected {commit}")
    jobs = {"mtbench": (record_mtbench, "lm-sys+FastChat"), "prometheus": (record_prometheus, "prometheus-eval+prometheus-eval"),
            "deita": (record_deita, "hkust-nlp+deita"), "alpagasus": (record_alpagasus, "gpt4life+alpagasus")}
    for name in args.only:
        fn, repo = jobs[name]
        fn(args.official / repo, args.out / name)
    if args.prometheus_wheel and "prometheus" in args.only:
        version = next(args.prometheus_wheel.parent.glob("prometheus_eval-*.dist-info")).name.split("-")[1][: -len(".dist")]
        record_prometheus(args.official / "prometheus-eval+prometheus-eval", args.out / "prometheus",
                          args.prometheus_wheel, f"-pypi-{version}")


if __name__ == "__main__":
    main()
