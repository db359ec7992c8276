"""Schema-constrained JSON (`LLM.ajson`, `GenParams.json_schema`) on real models.

Every sample must validate: 100 samples at temperature 1 on the local transformers model (llguidance
masks the logits each step) and on llama.cpp's server (`response_format`). The schema's fields are
small enums, integers and booleans so that a short max_tokens always holds the whole value.
"""

from __future__ import annotations

import json
import math

import jsonschema
import pytest
from pydantic import BaseModel, Field

from instructkit.models import LLM
from instructkit.models.cache import ResponseCache
from instructkit.models.local import load_local_backend

SCHEMA = {
    "type": "object",
    "properties": {
        # an enum, not minimum/maximum: llama.cpp's schema-to-grammar conversion ignores those bounds
        "score": {"enum": [1, 2, 3, 4, 5]},
        "verdict": {"type": "string", "enum": ["good", "bad"]},
        "ok": {"type": "boolean"},
    },
    "required": ["score", "verdict", "ok"],
    "additionalProperties": False,
}
PROMPT = "Rate this answer to 'Name a color.': 'Blue'. Reply in JSON with a score, a verdict and ok."


class Rating(BaseModel):
    score: int = Field(ge=1, le=5)
    verdict: str = Field(pattern="^(good|bad)$")


@pytest.fixture(scope="module")
def transformers_llm(tmp_path_factory: pytest.TempPathFactory) -> LLM:
    """The embedded model on the transformers backend, whatever LLM('local') generates with."""
    cache = ResponseCache(tmp_path_factory.mktemp("constrained_cache"))
    yield LLM("local", cache=cache, backend=load_local_backend("local"))
    cache.close()


def check_samples(comps: list, n: int) -> None:
    values = [json.loads(c.text) for c in comps]  # strict JSON: no fences, no prose
    assert len(values) == n
    for value in values:
        jsonschema.validate(value, SCHEMA)
    assert len({json.dumps(v, sort_keys=True) for v in values}) > 1  # sampled, not one answer repeated


def test_transformers_json_schema_validates_on_100_samples(transformers_llm: LLM) -> None:
    assert transformers_llm.supports_json_schema
    comps = transformers_llm.sample(PROMPT, 100, temperature=1.0, seed=0, max_tokens=32, json_schema=SCHEMA)
    check_samples(comps, 100)
    assert all(c.finish_reason == "stop" for c in comps)


def test_ajson_returns_a_validated_pydantic_instance(transformers_llm: LLM) -> None:
    value, comp = transformers_llm.json(PROMPT, Rating, max_tokens=32)
    assert isinstance(value, Rating) and 1 <= value.score <= 5 and value.verdict in ("good", "bad")
    assert Rating.model_validate_json(comp.text) == value
    value, _ = transformers_llm.json(PROMPT, SCHEMA, max_tokens=32)
    jsonschema.validate(value, SCHEMA)
    with pytest.raises(TypeError, match="pydantic model class"):
        transformers_llm.json(PROMPT, int)


def test_constrained_logprobs_are_the_raw_model_distribution(transformers_llm: LLM) -> None:
    """The mask picks the token; reported log-probs are the model's own (they sum to <= 1, and the
    top alternatives may be tokens the grammar forbade), so expected scores read true probabilities."""
    comp = transformers_llm.chat(PROMPT, max_tokens=32, json_schema=SCHEMA, logprobs=True, top_logprobs=5)
    plain = transformers_llm.chat(PROMPT, max_tokens=1, logprobs=True, top_logprobs=5)
    first, ref = comp.logprobs[0].top, plain.logprobs[0].top  # the same first-step distribution
    assert [t for t, _ in first] == [t for t, _ in ref]
    assert [v for _, v in first] == pytest.approx([v for _, v in ref], abs=1e-5)  # same rows, fp32
    assert json.loads(comp.text) is not None


def test_llama_server_json_schema_validates_on_every_sample(llama_server: str, tmp_path) -> None:
    """Fewer samples than in-process: the fixture's server decodes one request at a time (~1 s each)."""
    cache = ResponseCache(tmp_path / "cache")
    llm = LLM("smollm2", api_base=llama_server, cache=cache, max_retries=1, timeout=300)
    try:
        assert llm.supports_json_schema
        comps = llm.sample(PROMPT, 16, temperature=1.0, seed=0, max_tokens=32, json_schema=SCHEMA)
        check_samples(comps, 16)
        value, _ = llm.json(PROMPT, Rating, max_tokens=32, repairs=0)
        assert isinstance(value, Rating)
    finally:
        llm.close()
        cache.close()


# ----- expected-value scores and constrained judges on the real local model -------------------------

MATH = {"instruction": "Add 2 and 2.", "input": "", "output": "4"}
COLOR = {"instruction": "Name a color.", "input": "", "output": "Blue"}


def judge(name: str, records: list[dict], llm: LLM, **options):
    from instructkit.registry import get
    from instructkit.run.runner import RunContext

    info = get("judge", name)
    ctx = RunContext(llm=llm, options=info.make_options(options), method=name, progress=False)
    return info.func(records, ctx)


def test_expected_score_equals_an_independent_softmax(transformers_llm: LLM) -> None:
    """alpagasus_expected at the first answer token (max_tokens 1) against a softmax, computed here,
    over the full-distribution log-probs of the six score tokens after the same prompt."""
    from instructkit.judge.alpagasus import AlpagasusOptions, rating_messages

    rows = judge(
        "alpagasus", [MATH, COLOR], transformers_llm, max_tokens=1, top_logprobs=5000, score="expected"
    )
    backend = transformers_llm.backend
    for rec, row in zip([MATH, COLOR], rows):
        msgs = rating_messages(rec, AlpagasusOptions())
        text = backend.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        lps = backend.next_token_logprobs(text, [str(s) for s in range(6)])
        weights = [math.exp(v - max(lps)) for v in lps]
        expected = sum(s * w for s, w in enumerate(weights)) / sum(weights)
        # Two fp32 forward passes of the same prompt (a batch of one in the generator, a plain pass
        # here): log-probs agree to ~1e-6, so the expectation over 0-5 to well within 1e-4.
        assert row["alpagasus_expected"] == pytest.approx(expected, abs=1e-4), row["alpagasus_raw"]
        assert (
            row["alpagasus_score_source"] == "expected"
            and row["alpagasus_score"] == row["alpagasus_expected"]
        )


def test_score_modes_on_the_local_judge(transformers_llm: LLM) -> None:
    auto = judge("alpagasus", [MATH, COLOR], transformers_llm, max_tokens=8)
    text = judge("alpagasus", [MATH, COLOR], transformers_llm, max_tokens=8, score="text")
    for a, t in zip(auto, text):
        assert a["alpagasus_raw"] == t["alpagasus_raw"]  # the same cached reply, read two ways
        if t["alpagasus_text_parse"] == "ok":
            assert a["alpagasus_score"] == t["alpagasus_score"] and a["alpagasus_score_source"] == "text"
        else:
            assert t["alpagasus_score"] is None and t["alpagasus_parse"] == t["alpagasus_text_parse"]
            assert a["alpagasus_score"] == a["alpagasus_expected"]
        assert a["alpagasus_keep"] == (a["alpagasus_score"] is not None and a["alpagasus_score"] >= 4.5)


def test_constrained_judges_score_every_row(transformers_llm: LLM) -> None:
    rows = judge(
        "alpagasus", [MATH, COLOR], transformers_llm, max_tokens=24, constrained="auto", score="text"
    )
    for row in rows:
        assert row["alpagasus_raw"].startswith('{"score": ') and row["alpagasus_parse"] == "ok"
        assert (
            row["alpagasus_score"] in [v / 2 for v in range(11)] and row["alpagasus_score_source"] == "text"
        )
    rows = judge("rubric", [MATH], transformers_llm, max_tokens=16, constrained="auto", score="text")
    assert rows[0]["rubric_parse"] == "ok" and rows[0]["rubric_score"] in {1, 2, 3, 4, 5}
    rec = {"instruction": "Name a color.", "response_a": "Blue", "response_b": "A dog"}
    rows = judge("pairwise", [rec], transformers_llm, max_tokens=16, constrained="auto", score="text")
    assert rows[0]["pairwise_parse"] in ("ok", "inconsistent") and rows[0]["pairwise_first"] in (
        "A",
        "B",
        "tie",
    )
    rows = judge("deita", [MATH], transformers_llm, constrained="auto", score="text", aspects=["quality"])
    assert rows[0]["deita_quality_parse"] == "ok" and rows[0]["deita_quality"] in {1, 2, 3, 4, 5, 6}
