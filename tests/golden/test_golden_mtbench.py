"""MT-Bench pairwise under `-o preset official` against golden outputs of FastChat's own code
(tests/golden/mtbench/README.md): `run_judge_pair`'s verdict on real-looking and adversarial replies, and
the pair-v2 / pair-math-v1 prompts it sent (sha256), with the reference answer switching the judge."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from instructkit.judge import formats
from instructkit.judge.pairwise import PairwiseOptions, read_verdict

from instructkit.models import LLM
from instructkit.models.cache import ResponseCache
from instructkit.registry import get
from instructkit.run.runner import RunContext

GOLDEN = Path(__file__).parent / "mtbench"
WINNER = {"A": 0.0, "B": 1.0, "tie": 0.5, "error": None}
# FastChat's judge_prompts.jsonl is in no package: these tests read it from a checkout when one is named.
PROMPTS_FILE = os.environ.get("INSTRUCTKIT_FASTCHAT_PROMPTS")


def _rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (GOLDEN / name).read_text(encoding="utf-8").splitlines()]


def _official() -> PairwiseOptions:
    return get("judge", "pairwise").make_options({"preset": "official"})


def test_golden_verdicts_are_fastchats() -> None:
    opts = _official()
    rows = _rows("verdicts.jsonl")
    assert len(rows) >= 20
    for row in rows:
        parsed = read_verdict(row["judgment"], opts.format, opts.parse)
        assert (parsed.value if parsed.ok else None) == WINNER[row["winner"]], row["judgment"]
    # The strict (default) reading differs on the replies the audit named: the golden file can fail.
    strict = [read_verdict(r["judgment"], "mtbench", "strict") for r in rows]
    assert sum((p.value if p.ok else None) != WINNER[r["winner"]] for p, r in zip(strict, rows)) >= 4


def test_preset_is_fastchats_configuration() -> None:
    opts = _official()
    assert (opts.format, opts.prompts, opts.parse) == ("mtbench", "official", "official")
    for row in _rows("prompts.jsonl"):
        assert (opts.temperature, opts.max_tokens) == (row["temperature"], row["max_tokens"])


@pytest.mark.skipif(not PROMPTS_FILE, reason="set INSTRUCTKIT_FASTCHAT_PROMPTS to FastChat's judge_prompts.jsonl")
def test_golden_prompts_are_fastchats() -> None:
    rows = _rows("prompts.jsonl")
    assert {r["judge"] for r in rows} == {"pair-v2", "pair-math-v1"}
    for row in rows:
        system, user = formats.fastchat_pair_prompt(row["question"], row["answer_a"], row["answer_b"],
                                                    row["reference"], PROMPTS_FILE)  # fmt: skip
        sha = [hashlib.sha256(t.encode()).hexdigest() for t in (system, user)]
        assert sha == [row["system_sha256"], row["user_sha256"]], row["question"]


def test_official_prompts_need_fastchats_file(tmp_path: Path) -> None:
    """Without the file, or with a file whose prompts are not FastChat's, the preset stops before any
    call with one line saying what to do."""
    info = get("judge", "pairwise")
    rec = {"instruction": "Name a color.", "response_a": "Blue", "response_b": "A dog"}
    fake = tmp_path / "judge_prompts.jsonl"
    fake.write_text(json.dumps({"name": "pair-v2", "system_prompt": "x", "prompt_template": "{question}"}) + "\n")
    for path in (str(tmp_path / "missing.jsonl"), str(fake)):
        opts = info.make_options({"preset": "official", "fastchat_prompts": path})
        ctx = RunContext(llm=LLM("never-called", api_base="http://127.0.0.1:9/v1"), options=opts,
                         method="pairwise", progress=False)  # fmt: skip
        with pytest.raises(formats.OfficialTextMissing) as err:
            info.func([rec], ctx)
        assert "\n" not in str(err.value) and "git clone lm-sys/FastChat" in str(err.value)


@pytest.mark.skipif(not PROMPTS_FILE, reason="set INSTRUCTKIT_FASTCHAT_PROMPTS to FastChat's judge_prompts.jsonl")
def test_official_preset_end_to_end(tmp_path: Path) -> None:
    """The preset on the real local model: each order sent as FastChat's messages (cached under exactly
    these), each verdict read as FastChat reads it."""
    llm = LLM("local", cache=ResponseCache(tmp_path / "cache"))
    info = get("judge", "pairwise")
    opts = info.make_options({"preset": "official", "max_tokens": "12", "fastchat_prompts": PROMPTS_FILE})
    recs = [{"instruction": "What is 2 + 2?", "response_a": "4", "response_b": "5", "reference": "4"},
            {"instruction": "Name a color.", "response_a": "Blue", "response_b": "A dog"}]  # fmt: skip
    ctx = RunContext(llm=llm, options=opts, method="pairwise", progress=False)
    out = info.func(recs, ctx)
    sent = ctx.extras["judge_summary"]["pairwise"]["official_text_sha256"]  # the manifest names the text sent
    assert sent == {f"{n}.{k}": d for n, e in formats.FASTCHAT_DIGESTS.items() for k, d in e.items()}
    for rec, row in zip(recs, out):
        for (a, b), raw, col in (((rec["response_a"], rec["response_b"]), row["pairwise_raw"][0], "first"),
                                 ((rec["response_b"], rec["response_a"]), row["pairwise_raw"][1], None)):
            system, user = formats.fastchat_pair_prompt(rec["instruction"], a, b, rec.get("reference"), PROMPTS_FILE)
            msgs = [{"role": "system", "content": system}, {"role": "user", "content": user}]
            again = llm.chat(msgs, temperature=0.0, max_tokens=12)
            assert again.cached and again.text == raw
            if col:
                parsed = read_verdict(raw, "mtbench", "official")
                assert row["pairwise_first"] == ({0.0: "A", 0.5: "tie", 1.0: "B"}[parsed.value] if parsed.ok else None)
