"""WaveCoder, LIFT and TEGIT: their rules against the official code's outputs (recorded by running it),
their selection steps against direct computations, and whole runs from the CLI and a pipeline (the
fake OpenAI server answering JSON-schema requests as servers do) and on the real local model."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import test_generators_local
from instructkit.generators import lift as lg
from instructkit.generators import tegit as tg
from instructkit.generators import wavecoder as wc
from instructkit.judge import lift as lj
from instructkit.selection import lift_variety as lv

from instructkit.numerics import gamma
from instructkit.run.runner import RunContext

ROOT = Path(__file__).resolve().parents[1]
llm = test_generators_local.llm  # the real local model, the fixture the other generator tests share
CODES = {
    "fib.py": 'def fib(n):\n    """Return the n-th Fibonacci number."""\n    a, b = 0, 1\n    for _ in range(n):\n'
              "        a, b = b, a + b\n    return a\n",
    "total.js": "function total(xs) {\n  let sum = 0;\n  for (const x of xs) sum += x;\n  return sum;\n}\n",
    "gcd.py": "def gcd(a, b):\n    while b:\n        a, b = b, a % b\n    return a\n",
    "tiny.py": "x = 1\n",
}  # fmt: skip


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _code_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "code"
    folder.mkdir()
    for name, text in CODES.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


# ----- WaveCoder ------------------------------------------------------------------------------------
def test_wavecoder_rule_filter_at_its_bounds() -> None:
    o = wc.WaveCoderOptions(min_chars=50, max_chars=60, min_lines=3, max_line_chars=40)
    three = "a = 1\nb = 2\n"  # 12 characters, padded below to the bound under test
    assert wc.rule_failure(three + "c" * 38, o) is None  # 50 characters, 3 lines: kept
    assert wc.rule_failure(three + "c" * 37, o) == "too_short"
    assert wc.rule_failure(three + "c" * 38 + "\nd = 1" + "d" * 4, o) is None  # 60 characters: kept
    assert wc.rule_failure(three + "c" * 38 + "\nd = 1" + "d" * 5, o) == "too_long"
    assert wc.rule_failure("a" * 25 + "\n" + "b" * 25, o) == "too_few_lines"
    assert wc.rule_failure("a\nb\n" + "c" * 41 + "\nd", wc.WaveCoderOptions(min_chars=1, max_line_chars=40)) == "long_line"
    kept, dropped = wc.filter_code([{"id": "1", "code": "x = 1\ny = 2\nz = 3\n" * 3},
                                    {"id": "2", "code": "x = 1\n  y = 2\nz = 3\n" * 3}], wc.WaveCoderOptions(min_chars=1))  # fmt: skip
    assert [k["id"] for k in kept] == ["1"] and dropped == [{"id": "2", "reason": "duplicate"}]


# The official `analysis_filter` + `extract_message` (microsoft/WaveCoder @ 64e5ef634eee, run on these
# replies): quality and result as it returned them.
OFFICIAL_REPLIES = [
    ("task_name: Area\ninstruction: Write a Python function that returns the area of a circle.\n"
     "information: The area is pi * r^2.\nsolution: import math\ndef area(r):\n    return math.pi * r ** 2",
     {"task_name": "Area", "instruction": "Write a Python function that returns the area of a circle.",
      "information": "The area is pi * r^2.", "solution": "import math\ndef area(r):\n    return math.pi * r ** 2"}),
    ("task_name: Area\ninstruction: Write a Python function for the area.\ninformation: none\n"
     "solution: def area(r): return 3.14 * r * r\n\nAnalysis: looks fine",
     {"task_name": "Area", "instruction": "Write a Python function for the area.", "information": "<noinput>",
      "solution": "def area(r): return 3.14 * r * r"}),
    ("task_name: A\ninstruction: Do x.\ninformation: none\nsolution: x\ntask_name: B\ninstruction: Do y.\n"
     "information: none\nsolution: y", None),
    ("task_name: A\ninstruction: Do x. Then y. Then z.\ninformation: none\nsolution: x", None),
    ("task_name: A\ninstruction: Do x.\ninformation: One. Two. Three.\nsolution: x", None),
    ("task_name: <noinput>\ninstruction: Do x.\ninformation: <noinput>\nsolution: x", None),
    ("Here is a task for you.", None),
]  # fmt: skip


@pytest.mark.parametrize("reply, official", OFFICIAL_REPLIES)
def test_wavecoder_reply_rules_match_the_official_extract_message(reply: str, official: dict | None) -> None:
    fields, status = wc.parse_instance(reply, "generation")
    assert fields == official, status
    assert (status == "ok") == (official is not None)


def test_wavecoder_information_limit_only_where_it_is_prose() -> None:
    reply = "task_name: Sum\ninstruction: Summarize this Python code.\ninformation: a = 1. b = 2. c = 3.\nsolution: Sums."
    assert wc.parse_instance(reply, "generation")[1] == "information_sentences"
    assert wc.parse_instance(reply, "summarization")[1] == "ok"


def test_wavecoder_verdict_as_the_official_extract_answer_reads_it() -> None:
    reply = ("- step 1: check the Instruction:\n1. Instruction: named. <answer: yes, Python is named.>\n"
             "- step 2: check the Solution:\n1. Solution: related. <answer: no, it does not import math.>\n"
             "- Overall answer: no\n- reasons: math is not imported.\n")  # fmt: skip
    v = wc.parse_verdict(reply)
    # official: (feedback, ["yes", "no"], "no")
    assert v["overall"] == "no" and [c["answer"] for c in v["checks"]] == ["yes", "no"]
    assert v["reasons"] == "math is not imported." and v["checks"][1]["reason"] == "it does not import math."
    assert wc.parse_verdict("I think it is fine.")["overall"] is None
    js = wc.parse_verdict('{"checks": [{"answer": "yes", "reason": "r"}], "overall": "yes", "reasons": "ok"}', True)
    assert js["overall"] == "yes" and "- Overall answer: yes" in js["analysis"]
    assert wc.parse_verdict('{"checks": [], "overall": "maybe"}', True)["overall"] is None


def test_wavecoder_verdicts_feed_the_task_pools_whole() -> None:
    pools = wc.seed_pools(["generation", "repair"])
    fields = {"task_name": "t", "instruction": "i", "information": "n", "solution": "s"}
    results = [
        {"id": "a", "task": "generation", "overall": "yes", "fields": fields, "code": "A", "analysis": "fine"},
        {"id": "b", "task": "generation", "overall": "no", "fields": fields, "code": "B", "analysis": "bad"},
        {"id": "c", "task": "repair", "overall": None, "fields": fields, "code": "C", "analysis": "?"},
        {"id": "d", "task": "repair", "status": "unparsed"},
    ]
    wc.feed_back(pools, results)
    assert [c["id"] for c in pools["generation"]["good"]] == ["seed:generation:good", "a"]
    assert [c["id"] for c in pools["generation"]["bad"]] == ["seed:generation:bad", "b"]
    assert [len(pools["repair"][k]) for k in ("good", "bad")] == [1, 1]  # no verdict: no case
    good, bad = wc.draw_cases(pools, "generation", 5, 1, random.Random(0))
    assert sorted(c["id"] for c in good) == ["a", "seed:generation:good"] and len(bad) == 1
    text = wc.case_text(pools["generation"]["good"][1])
    assert text.startswith("Input:\nA\n\nOutput:\ntask_name: t\n") and text.endswith("Analysis:\nfine")


def test_wavecoder_through_the_cli_feeds_earlier_verdicts_into_later_prompts(fake_server, tmp_path: Path) -> None:
    folder = _code_folder(tmp_path)
    out = tmp_path / "wc.jsonl"
    run = subprocess.run(
        [sys.executable, "-m", "instructkit.cli", "generate", "wavecoder", str(folder), "--out", str(out),
         "-m", f"fake-model@{fake_server}", "--quiet", "--cache-dir", str(tmp_path / "cache"),
         "-o", "constrained", "auto", "-o", "tasks", "generation", "-o", "round_size", "1", "-o", "n_good", "3",
         "-o", "min_chars", "40"],
        capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Traceback" not in run.stderr and "Unclosed" not in run.stderr
    work = tmp_path / "wc.jsonl.work"
    verdicts = _jsonl(work / "wavecoder.verdicts.jsonl")
    assert _jsonl(work / "wavecoder.filtered.jsonl") == [{"id": "tiny.py", "reason": "too_short"}]
    # the fake server fills each schema with its first allowed value: every pair is judged "yes"
    assert [v["status"] for v in verdicts] == ["kept"] * 3 and [v["round"] for v in verdicts] == [0, 1, 2]
    assert sorted(v["id"] for v in verdicts) == ["fib.py", "gcd.py", "total.js"]  # k-center order
    for i, v in enumerate(verdicts):  # every earlier verdict is in the pool a later row draws from
        assert sorted(v["good_cases"]) == sorted(["seed:generation:good", *(w["id"] for w in verdicts[:i])])
    prompts = [r["prompt"] for r in fake_server.requests() if "Raw code:" in r["prompt"]]
    assert len(prompts) == 3 and CODES[verdicts[0]["id"]].strip() in prompts[2].split("Raw code:")[0]
    rows = _jsonl(out)
    assert len(rows) == 3 and all(r["wavecoder_keep"] and r["provenance"]["doc_id"] == r["code_id"] for r in rows)
    assert all(len(r["wavecoder_checks"]) == 5 and r["language"] in ("Python", "JavaScript") for r in rows)
    counts = json.loads((work / "wavecoder.manifest.json").read_text())["counts"]
    assert counts["pools"] == {"generation": {"good": 4, "bad": 1}} and counts["coreset"] == 3


def test_wavecoder_refuses_a_row_without_code_before_any_call(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"code": "def f():\\n    return 1\\n"}\n{"text": "no code"}\n', encoding="utf-8")
    run = subprocess.run([sys.executable, "-m", "instructkit.cli", "generate", "wavecoder", str(bad), "--out",
                          str(tmp_path / "o.jsonl"), "-m", "nothing@http://127.0.0.1:9/v1"], capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 2 and f"{bad}:2" in run.stderr and "field 'code'" in run.stderr
    assert "Traceback" not in run.stderr and not (tmp_path / "o.jsonl").exists()


def test_wavecoder_dry_run_walks_both_roles_and_sends_nothing(fake_server, tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "instructkit.cli", "generate", "wavecoder", str(_code_folder(tmp_path)), "--out",
         str(tmp_path / "o.jsonl"), "-m", f"fake-model@{fake_server}", "--dry-run", "--quiet", "--cache-dir",
         str(tmp_path / "cache"), "-o", "coreset_size", "0", "-o", "min_chars", "40",
         "-o", "discriminator_model", f"judge-model@{fake_server}"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    # three codes pass the filter: each walked through the generator and (as if it parsed) the discriminator
    assert "dry run: 6 calls" in run.stderr and fake_server.count() == 0


def test_wavecoder_a_failed_call_loses_one_pair_and_the_rerun_pays_only_for_it(fake_server, tmp_path: Path) -> None:
    from fakes import Fault

    folder, out = _code_folder(tmp_path), tmp_path / "o.jsonl"
    args = [sys.executable, "-m", "instructkit.cli", "generate", "wavecoder", str(folder), "--out", str(out), "-m",
            f"fake-model@{fake_server}", "--quiet", "--cache-dir", str(tmp_path / "cache"), "--max-retries", "0",
            "-o", "constrained", "auto", "-o", "min_chars", "40", "-o", "coreset_size", "0"]  # fmt: skip
    fake_server.configure(faults=[Fault("500", match="def gcd")])
    first = subprocess.run(args, capture_output=True, text=True)
    assert first.returncode == 1 and "Traceback" not in first.stderr, first.stderr[-2000:]
    assert sorted(r["code_id"] for r in _jsonl(out)) == ["fib.py", "total.js"]
    statuses = {v["id"]: v["status"] for v in _jsonl(tmp_path / "o.jsonl.work" / "wavecoder.verdicts.jsonl")}
    assert statuses == {"fib.py": "kept", "gcd.py": "call_failed", "total.js": "kept"}
    fake_server.configure(faults=[], reset=True)
    second = subprocess.run(args, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr[-2000:]
    assert sorted(r["code_id"] for r in _jsonl(out)) == ["fib.py", "gcd.py", "total.js"]
    assert fake_server.count() == 2  # only gcd's generator and discriminator are asked again
    assert "ok 3 failed 0 reused 2" in second.stderr  # the other pairs come back from the journal


# ----- TEGIT ----------------------------------------------------------------------------------------
def test_tegit_native_prompt_is_the_released_wrapper_input_byte_for_byte() -> None:
    # sha256 of inference.py's `template.format(instruction_for_wrapping.format(text))` (Bahuia/Dog-Instruct
    # @ b22a3ec9191a), computed by running those lines
    text = "Enchiladas Verdes is a dish.\nIt is green."
    digest = "0b5f0940c853aef55afb009f47fffa66eb5657024857ea4b393d928f44b33d13"
    assert hashlib.sha256(tg.native_prompt(text).encode()).hexdigest() == digest


@pytest.mark.parametrize(
    "reply, official",
    [  # `convert_response_to_task`'s output, from running it
        ('#instruction#: "Classify the review." #input#: The food was cold. #output#: negative',
         {"instruction": "Classify the review.", "input": "The food was cold.", "output": "negative"}),
        ("#instruction#: Summarize. #input#:\n#output#: A short summary.\n",
         {"instruction": "Summarize.", "input": "", "output": "A short summary."}),
        # the released `rstrip("</s>")` also strips the answer's last "s" ("tortilla"): we cut the suffix only
        ("#instruction#: Do you have a recipe?\n#input#: #output#: Ingredients:\n- tortillas</s>",
         {"instruction": "Do you have a recipe?", "input": "", "output": "Ingredients:\n- tortillas"}),
    ],
)  # fmt: skip
def test_tegit_task_parse_as_the_released_parser(reply: str, official: dict) -> None:
    assert tg.parse_task(reply) == (official, "ok")


def test_tegit_drops_and_verdicts() -> None:
    assert tg.parse_task("No labels here.") == (None, "unparsed")
    assert tg.parse_task("#instruction#: Name it. #input#: x") == (None, "empty_output")
    assert tg.parse_task("#instruction#:  #output#: y") == (None, "empty_instruction")
    assert tg.parse_verdict("Verdict: Reject\nReason: not in the passage.") == ("reject", "not in the passage.")
    assert tg.parse_verdict("accept.")[0] == "accept" and tg.parse_verdict("Looks good")[0] is None


def test_presets_are_the_released_settings() -> None:
    from instructkit.registry import get

    t = get("generate", "tegit").make_options({"preset": "official"})
    assert (t.mode, t.temperature, t.top_p, t.max_tokens) == ("native", 0.0, 0.95, 2048)  # inference.sh
    w = get("generate", "wavecoder").make_options({"preset": "official", "round_size": "4"})
    assert (w.tasks, w.n_good, w.n_bad, w.temperature, w.max_tokens) == (["generation"], 1, 1, 1.0, 512)
    assert (w.discriminator_max_tokens, w.random_state, w.round_size) == (512, 42, 4)  # explicit options win


# ----- LIFT -----------------------------------------------------------------------------------------
def test_lift_variety_is_the_variance_of_the_pca_coordinates() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 12)).astype(np.float32)
    got = lv.pca_row_variance(x, 5)
    centred = x.astype(np.float64) - x.astype(np.float64).mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    # the variance depends on each component's sign: sklearn's convention makes its largest loading positive
    vt = vt * np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(axis=1)])[:, None]
    want = (centred @ vt[:5].T).var(axis=1)
    # both are float64 SVDs of the same matrix: backward error gamma(size) ||X||, squared by the variance
    tol = 4 * gamma(x.size, 2.0**-53) * float(np.linalg.norm(centred)) ** 2
    assert np.allclose(got, want, rtol=0, atol=tol)
    idx, var = lv.variety_select(x, 7, 5)
    assert list(idx) == list(np.argsort(-var, kind="stable")[:7])


def test_lift_variety_ties_go_to_the_lower_index() -> None:
    x = np.array([[0, 0], [2, 2], [2, 2], [-1, -1], [-1, -1], [-1, -1]], dtype=np.float64)
    idx, var = lv.variety_select(x, 1, 2)
    assert var[1] == var[2] == var.max() and list(idx) == [1]  # rows 1 and 2 tie: the lower index
    assert list(lv.variety_select(x, 2, 2)[0]) == [1, 2]


@pytest.mark.parametrize(
    "text, values, status",
    [
        ("Accuracy: 10\nExplanation: 1\nClarity: 7\nDifficulty: 3.5\nLength: 8", [10, 1, 7, 3.5, 8], "ok"),
        ("Accuracy: 11\nExplanation: 1\nClarity: 7\nDifficulty: 3\nLength: 8", [None, 1, 7, 3, 8], "partial"),
        ("Accuracy - 0/10\nExplanation: 1", [None, 1, None, None, None], "partial"),
        ("All fine.", [None] * 5, "unparsed"),
    ],
)
def test_lift_aspects_parse_on_the_1_to_10_scale(text: str, values: list, status: str) -> None:
    got, st = lj.parse_aspects(text)
    assert [got[a] for a in lj.ASPECTS] == values and st == status
    as_json = json.dumps({a: v for a, v in zip(lj.ASPECTS, values) if v is not None})
    assert lj.parse_aspects(as_json, json_reply=True) == (got, st)


def test_lift_expansion_rules() -> None:
    assert lg.clean_instruction('New instruction: "Name three rivers."\n\nThis broadens it.') == "Name three rivers."
    assert lg.expansion_failure("Name a river.", " name a  RIVER. ") == "repeats_seed"
    assert lg.expansion_failure("Name a river.", "") == "empty"
    assert lg.expansion_failure("Name a river.", "Name a lake.") is None


def _records(tmp_path: Path) -> Path:
    rows = [{"id": f"r{i}", "instruction": q, "input": "", "output": a} for i, (q, a) in enumerate(
        [("What is 2 + 2?", "4"), ("Name a red fruit.", "Apple."), ("Who wrote Hamlet?", "Shakespeare."),
         ("Give a synonym of big.", "Large."), ("What is the capital of Italy?", "Rome."),
         ("Translate 'cat' into French.", "Chat.")])]  # fmt: skip
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_tegit_and_lift_from_the_cli(fake_server, tmp_path: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess:
        run = subprocess.run([sys.executable, "-m", "instructkit.cli", "generate", *args, "-m", f"fake-model@{fake_server}",
                              "--quiet", "--cache-dir", str(tmp_path / "cache")], capture_output=True, text=True,
                             env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip
        assert run.returncode == 0 and "Traceback" not in run.stderr and "Unclosed" not in run.stderr, run.stderr
        return run

    cli("tegit", str(ROOT / "examples" / "documents"), "--out", str(tmp_path / "t.jsonl"), "-o", "max_passages", "2")
    counts = json.loads((tmp_path / "t.jsonl.work" / "tegit.manifest.json").read_text())["counts"]
    assert counts == {"passages": 2, "statuses": {"unparsed": 2}, "kept": 0}  # the fake's text has no labels
    assert fake_server.count() == 2  # no discriminator call for an unparsed task
    cli("lift", str(_records(tmp_path)), "--out", str(tmp_path / "l.jsonl"), "-o", "expand_seeds", "1",
        "-o", "pca_components", "2", "-o", "constrained", "auto", "-o", "quality_k", "1")  # fmt: skip
    (row,) = _jsonl(tmp_path / "l.jsonl")
    assert row["lift_parse"] == "ok" and row["lift_score"] == 1.0  # the schema's first value on each aspect
    log = _jsonl(tmp_path / "l.jsonl.work" / "lift.expanded.jsonl")
    assert len(log) == 1 and log[0]["status"] == "ok" and log[0]["seed_index"] in range(6)


def test_the_three_run_as_pipeline_steps(fake_server, tmp_path: Path) -> None:
    from instructkit.run.pipeline import Pipeline

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "turtles.txt").write_text("Sea turtles lay their eggs on sandy beaches at night.", encoding="utf-8")
    path = tmp_path / "p.yaml"
    path.write_text(f"""
name: gen-dis
model: fake-model@{fake_server}
model_options: {{cache_dir: {tmp_path / "cache"}}}
out: {tmp_path / "out"}
steps:
  - name: code
    generate: wavecoder
    input: {_code_folder(tmp_path)}
    options: {{constrained: auto, min_chars: 40, coreset_size: 2}}
  - name: tasks
    generate: tegit
    input: {docs}
  - name: lifted
    generate: lift
    input: {_records(tmp_path)}
    options: {{expand_seeds: 2, pca_components: 3, constrained: auto, quality_k: 2}}
""")
    result = Pipeline.from_yaml(path).run(progress=False)
    steps = {s["step"]: s for s in result["steps"]}
    assert steps["code"]["rows_out"] == 2 and steps["code"]["counts"]["filtered"] == {"too_short": 1}
    # the fake server's free text is no labelled task: counted, nothing written
    assert steps["tasks"]["rows_out"] == 0 and steps["tasks"]["counts"]["statuses"] == {"unparsed": 1}
    lifted = _jsonl(tmp_path / "out" / "03_lifted.jsonl")
    counts = steps["lifted"]["counts"]
    assert counts["pool"] == 6 + counts["expanded"] and counts["variety_kept"] == counts["pool"] // 2
    assert len(lifted) == 2 and all(r["lift_parse"] == "ok" and r["lift_variance"] > 0 for r in lifted)


# ----- on the real local model --------------------------------------------------------------------
def _ctx(model, options, name: str, work: Path, **extras) -> RunContext:
    return RunContext(llm=model, options=options, method=name, work_dir=work, random_state=7, progress=False,
                      extras=extras)  # fmt: skip


def test_wavecoder_and_tegit_on_the_local_model_count_every_pair_and_resume(llm, tmp_path: Path) -> None:
    opts = wc.WaveCoderOptions(tasks=["repair"], coreset_size=0, max_tokens=24, discriminator_max_tokens=16,
                               min_chars=40)  # fmt: skip
    rows = [{"id": "fib", "code": CODES["fib.py"]}, {"id": "gcd", "code": CODES["gcd.py"]}]
    out = wc.wavecoder(rows, _ctx(llm, opts, "wavecoder", tmp_path / "w"))
    verdicts = _jsonl(tmp_path / "w" / "wavecoder.verdicts.jsonl")
    assert [v["id"] for v in verdicts] == ["fib", "gcd"] and len(out) == sum(v["status"] == "kept" for v in verdicts)
    assert all(v["gen_raw"] is not None and v["status"] != "call_failed" for v in verdicts)
    calls = llm.stats.calls
    again = _ctx(llm, opts, "wavecoder", tmp_path / "w")
    assert wc.wavecoder(rows, again) == out and llm.stats.calls == calls and again.stats.reused == 2

    topts = tg.TegitOptions(max_tokens=32, discriminator_max_tokens=12)
    docs = [{"doc_id": "t", "text": "Sea turtles lay their eggs on sandy beaches at night."}]
    ctx = _ctx(llm, topts, "tegit", tmp_path / "t")
    kept = tg.tegit(docs, ctx)
    counts = ctx.extras["generate_summary"]["tegit"]
    assert sum(counts["statuses"].values()) == 1 and counts["kept"] == len(kept)
    dropped = _jsonl(tmp_path / "t" / "tegit.dropped.jsonl") if not kept else []
    assert all(d["raw"] is not None for d in dropped)
    # the released wrapper's format as a raw completion (SmolLM2 is not the wrapper: usually unparsed)
    native = _ctx(llm, tg.TegitOptions(mode="native", max_tokens=16, discriminator_max_tokens=8), "tegit", tmp_path / "n")
    tg.tegit(docs, native)
    assert sum(native.extras["generate_summary"]["tegit"]["statuses"].values()) == 1


def test_lift_scores_on_the_local_model_parse_or_say_why(llm, tmp_path: Path) -> None:
    rows = [{"instruction": "What is 2 + 2?", "input": "", "output": "4"},
            {"instruction": "Name a red fruit.", "input": "", "output": "An apple."}]  # fmt: skip
    ctx = _ctx(llm, lj.LiftScoreOptions(max_tokens=40, constrained="auto"), "lift", tmp_path)
    out = lj.lift(rows, ctx)
    for r in out:  # the grammar holds every aspect to 1..10: all five parse, the score is their mean
        assert r["lift_parse"] == "ok" and r["lift_score"] == sum(r["lift_scores"].values()) / 5, r["lift_raw"]
    assert ctx.extras["judge_summary"]["lift"]["parse"] == {"ok": 2}
