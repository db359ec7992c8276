"""Judge input formats of released judges: `format=prometheus` (rubric and pairwise), `format=mtbench` (pairwise).

No official text lives in this project. Where a preset needs a released prompt byte for byte, it is read
at run time from the official package and checked against the sha256 digests recorded here:
- Prometheus 2's absolute and relative grading strings (what its weights were trained on) come from the
  `prometheus-eval` package (`pip install 'instructkit[prometheus]'`): its `prometheus_eval/prompts.py` is
  read as text and its string constants taken without importing the package (which would import litellm).
  PyPI's 0.1.20 and the repository at dcfb442 differ in the relative-grading prompt; both are known.
- MT-Bench's pair-v2 and pair-math-v1 (FastChat llm_judge) are in FastChat's `judge_prompts.jsonl`, which
  no package ships (the `fschat` wheel and sdist leave `llm_judge/data` out): it is read from a FastChat
  checkout, `-o fastchat_prompts PATH`, or found beside an installed `fastchat` package when that is an
  editable install of a checkout (`pip install -e .`, as FastChat's llm_judge README installs it).
Our own MT-Bench wording (below) is the default: the layout markers and the verdict format ("[[A]]",
"[[B]]", "[[C]]" after the explanation) are the format's facts, the prose is ours.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
from functools import cache
from pathlib import Path

# sha256 of each string, per known release (recorded by bench/golden/record_judges.py: tests/golden/prometheus).
PROMETHEUS_DIGESTS = {
    "ABS_SYSTEM_PROMPT": {"526b5b77a2d7eeaf33b21720197b6be536710d867d22cb468b0fb8f6022b62ab"},
    "REL_SYSTEM_PROMPT": {"2d7f53af02b6a37c5701ed6a821289874a82615c0a6af9d181dc465b2fb5df20"},
    "ABSOLUTE_PROMPT": {"edf9508ea2ca3c4f624938634990e8df0e89dba337b3e15311166ff2e3c6c67a"},
    "ABSOLUTE_PROMPT_WO_REF": {"f4358c8f7953f324df3d70c86bc483d29eb8016567f1b1571cfbe6dee6722656"},
    "SCORE_RUBRIC_TEMPLATE": {"a4c75273d26b02112e2149674ba34ed103da82fa8a5c39c477f76f0292099352"},
    "RELATIVE_PROMPT": {"16909d49a4da133a8aa80076b4dc4b9ca3ab402146fff41081c4b56b0e72ee29",  # PyPI 0.1.20
                        "b63ae34a2bac0ce12ea5270c2f6adefcf631832c89d6f284d25f7707ba445d45"},  # dcfb442
    "RELATIVE_PROMPT_WO_REF": {"2b992796d7579dc5af8241134830d116c57fb7c8687788443191c357ed826815",
                               "ca920719db01d48a23abefa2fde5f1810e50f7bd551dfcddcf87b53dd68941a9"},
}
# sha256 of FastChat's judge_prompts.jsonl entries (lm-sys/FastChat @ 0e6d3e4; tests/golden/mtbench).
FASTCHAT_DIGESTS = {
    "pair-v2": {"system_prompt": "8d6df8feee26e1c9994a4fae884fc839bfcb1787a3a9522d1be611db68c93338",
                "prompt_template": "22f93e573bf9343e52c3dd0a36b1a033a47a6dc0045ab3d40357da8d3c613d57"},
    "pair-math-v1": {"system_prompt": "0f6f71b71c14a4914b95d9272901c265d73dbc772319416e3180820c9962b2c0",
                     "prompt_template": "16f835dc77def64b208c62cfa9ac5992cb965d769f138362741c139d1fc7281b"},
}
PROMETHEUS_INSTALL = "pip install 'instructkit[prometheus]' (the prometheus-eval package)"
FASTCHAT_INSTALL = (
    "FastChat's judge_prompts.jsonl is in no package (the fschat wheel leaves it out): git clone lm-sys/FastChat "
    "and pass -o fastchat_prompts FastChat/fastchat/llm_judge/data/judge_prompts.jsonl (or pip install -e the clone)"
)


class OfficialTextMissing(ValueError):
    """The official package (or file) that holds a released prompt is not installed; the message says what to do."""


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _string_literal(node: ast.expr) -> str | None:
    """A string constant, or one with `.strip()` (how prompts.py writes SCORE_RUBRIC_TEMPLATE); else None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if (isinstance(node, ast.Call) and not node.args and not node.keywords and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("strip", "lstrip", "rstrip")):  # fmt: skip
        inner = _string_literal(node.func.value)
        return None if inner is None else getattr(inner, node.func.attr)()
    return None


@cache
def prometheus_strings() -> dict[str, str]:
    """Prometheus 2's grading strings, read from the installed prometheus-eval's prompts.py (string
    constants only: nothing of the package runs) and checked against the known digests."""
    spec = importlib.util.find_spec("prometheus_eval")
    folder = list(spec.submodule_search_locations or []) if spec is not None else []
    path = Path(folder[0]) / "prompts.py" if folder else None
    if path is None or not path.is_file():
        raise OfficialTextMissing(f"format=prometheus reads Prometheus 2's prompts from prometheus-eval: {PROMETHEUS_INSTALL}")
    found = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        value = _string_literal(node.value) if isinstance(node, ast.Assign) else None
        for target in node.targets if value is not None else []:
            if isinstance(target, ast.Name) and target.id in PROMETHEUS_DIGESTS:
                found[target.id] = value
    for name, digests in PROMETHEUS_DIGESTS.items():
        if name not in found or _sha(found[name]) not in digests:
            raise OfficialTextMissing(f"{path}: {name} is not a known Prometheus 2 prompt (sha256 differs); {PROMETHEUS_INSTALL}")
    return found


def prometheus_prompt(instruction: str, response: str, criteria: str, descriptions: list[str], reference: str = "") -> str:
    """The Prometheus 2 absolute-grading user turn (with the reference answer when there is one)."""
    if len(descriptions) != 5:
        raise ValueError(f"format=prometheus grades on 1-5: it needs 5 score descriptions, not {len(descriptions)}")
    text = prometheus_strings()
    rubric = text["SCORE_RUBRIC_TEMPLATE"].format(
        criteria=criteria, **{f"score{i + 1}_description": d for i, d in enumerate(descriptions)}
    )
    fields = {"instruction": instruction, "response": response, "rubric": rubric, "reference_answer": reference}
    return text["ABSOLUTE_PROMPT" if reference else "ABSOLUTE_PROMPT_WO_REF"].format(**fields)


def prometheus_relative_prompt(instruction: str, response_a: str, response_b: str, rubric: str, reference: str = "") -> str:
    """The Prometheus 2 relative-grading user turn (with the reference answer when there is one)."""
    fields = {"instruction": instruction, "response_A": response_a, "response_B": response_b, "rubric": rubric,
              "reference_answer": reference}  # fmt: skip
    return prometheus_strings()["RELATIVE_PROMPT" if reference else "RELATIVE_PROMPT_WO_REF"].format(**fields)


def prometheus_system(relative: bool = False) -> str:
    return prometheus_strings()["REL_SYSTEM_PROMPT" if relative else "ABS_SYSTEM_PROMPT"]


def fastchat_prompts_path(path: str | None = None) -> Path:
    """FastChat's judge_prompts.jsonl: `path`, else beside an installed `fastchat` that is a checkout."""
    if path:
        return Path(path)
    spec = importlib.util.find_spec("fastchat")
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        candidate = Path(folder) / "llm_judge" / "data" / "judge_prompts.jsonl"
        if candidate.is_file():
            return candidate
    raise OfficialTextMissing(f"prompts=official uses MT-Bench's pair-v2 / pair-math-v1: {FASTCHAT_INSTALL}")


@cache
def fastchat_prompts(path: str | None = None) -> dict[str, dict[str, str]]:
    """pair-v2 and pair-math-v1 from FastChat's judge_prompts.jsonl, checked against the known digests."""
    file = fastchat_prompts_path(path)
    if not file.is_file():
        raise OfficialTextMissing(f"{file}: no such file; {FASTCHAT_INSTALL}")
    entries = {}
    for line in file.read_text(encoding="utf-8").splitlines():
        if line.strip():
            entry = json.loads(line)
            entries[entry.get("name")] = entry
    for name, digests in FASTCHAT_DIGESTS.items():
        entry = entries.get(name) or {}
        if any(_sha(str(entry.get(key, ""))) != digest for key, digest in digests.items()):
            raise OfficialTextMissing(f"{file}: {name} is not FastChat's released prompt (sha256 differs); {FASTCHAT_INSTALL}")
    return {name: entries[name] for name in FASTCHAT_DIGESTS}


def official_digests(fmt: str, fastchat_path: str | None = None) -> dict[str, str]:
    """sha256 of the official strings a run used (`prometheus` or `mtbench`), for the run's manifest."""
    if fmt == "prometheus":
        return {name: _sha(text) for name, text in prometheus_strings().items()}
    return {f"{name}.{key}": _sha(entry[key]) for name, entry in fastchat_prompts(fastchat_path).items()
            for key in ("system_prompt", "prompt_template")}  # fmt: skip


def fastchat_pair_prompt(
    question: str, answer_a: str, answer_b: str, reference: str | None, path: str | None = None
) -> tuple[str, str]:
    """(system, user) of FastChat's pairwise judge: pair-math-v1 with the reference answer when the row has
    one (FastChat's math, reasoning and coding questions), else pair-v2; filled with `str.format` as there."""
    entry = fastchat_prompts(path)["pair-math-v1" if reference is not None else "pair-v2"]
    extra = {"ref_answer_1": reference} if reference is not None else {}
    user = entry["prompt_template"].format(question=question, answer_a=answer_a, answer_b=answer_b, **extra)
    return entry["system_prompt"], user


MTBENCH_SYSTEM = (
    "You are an impartial judge. Below are a user's question and the answers of two AI assistants. Decide which "
    "assistant follows the user's instructions and answers the question better, weighing helpfulness, "
    "relevance, accuracy, depth, creativity and level of detail. First compare the two answers and explain your "
    "reasoning briefly. The order in which the answers appear, their length and the assistants' names must not "
    "sway you; be as objective as you can. After the explanation, give your final verdict in exactly this "
    'format: "[[A]]" if assistant A is better, "[[B]]" if assistant B is better, "[[C]]" for a tie.'
)


def mtbench_prompt(
    question: str, answer_a: str, answer_b: str, criteria: str | None = None, reference: str = ""
) -> str:
    """The MT-Bench pairwise user turn: its layout markers around the question, the reference answer when
    there is one (pair-math-v1) and the two answers."""
    head = f"[Criterion]\n{criteria}\n\n" if criteria else ""
    ref = f"[The Start of Reference Answer]\n{reference}\n[The End of Reference Answer]\n\n" if reference else ""
    return (
        f"{head}[User Question]\n{question}\n\n{ref}"
        f"[The Start of Assistant A's Answer]\n{answer_a}\n[The End of Assistant A's Answer]\n\n"
        f"[The Start of Assistant B's Answer]\n{answer_b}\n[The End of Assistant B's Answer]"
    )
