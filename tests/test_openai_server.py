"""A real OpenAI-compatible server (llama.cpp's, with SmolLM2) through our HTTP fast path and litellm."""

from __future__ import annotations

import math

import jsonschema
import pytest

from instructkit.models import LLM, GenParams, to_messages

PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}


def make(server: str, via: str, cache=False) -> LLM:
    return LLM("smollm2", api_base=server, via=via, cache=cache, max_retries=1, timeout=120)


@pytest.mark.parametrize("via", ["http", "litellm"])
def test_generation(llama_server: str, tmp_cache, via: str) -> None:
    llm = make(llama_server, via, tmp_cache)
    comp = llm.chat("Say hello in one short sentence.", max_tokens=12)
    assert comp.text.strip()
    assert comp.finish_reason in ("stop", "length")
    assert comp.usage.prompt_tokens > 0 and 0 < comp.usage.completion_tokens <= 12
    assert comp.cost == 0.0 and not comp.cached
    again = llm.chat("Say hello in one short sentence.", max_tokens=12)
    assert again.cached and again.text == comp.text
    assert llm.stats.calls == 1 and llm.stats.cache_hits == 1
    llm.close()


def test_logprobs_agree_across_paths(llama_server: str) -> None:
    got = {}
    for via in ("http", "litellm"):
        llm = make(llama_server, via)
        comp = llm.chat("Name one fruit.", max_tokens=6, logprobs=True, top_logprobs=3)
        llm.close()
        assert comp.logprobs, via
        for tok in comp.logprobs:
            assert tok.logprob <= 1e-6 and math.isfinite(tok.logprob)
            assert 1 <= len(tok.top) <= 3
            alts = [lp for _, lp in tok.top]
            assert alts == sorted(alts, reverse=True) and all(lp <= 1e-6 for lp in alts)
        got[via] = comp
    http, lite = got["http"], got["litellm"]
    assert http.text == lite.text
    assert [t.token for t in http.logprobs] == [t.token for t in lite.logprobs]
    for a, b in zip(http.logprobs, lite.logprobs):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-4)


@pytest.mark.parametrize("via", ["http", "litellm"])
def test_json_schema_output(llama_server: str, via: str) -> None:
    llm = make(llama_server, via)
    value, comp = llm.json("Give a made-up person as JSON with a name and an age.", PERSON, max_tokens=40)
    jsonschema.validate(value, PERSON)
    assert comp.json() == value  # constrained decoding: the reply is the JSON, nothing around it
    assert llm.stats.calls == 1  # no repair round was needed
    llm.close()


@pytest.mark.parametrize("first,second", [("http", "litellm"), ("litellm", "http")])
def test_same_request_same_cache_entry(llama_server: str, tmp_cache, first: str, second: str) -> None:
    prompt = f"Complete: the sky is ({first} first)"
    a, b = make(llama_server, first, tmp_cache), make(llama_server, second, tmp_cache)
    params = {"max_tokens": 8, "logprobs": True, "top_logprobs": 2}
    msgs = to_messages(prompt)
    assert a.chat_key(msgs, GenParams().replace(**params)) == b.chat_key(msgs, GenParams().replace(**params))
    fresh = a.chat(prompt, **params)
    hit = b.chat(prompt, **params)
    assert a.stats.calls == 1 and b.stats.calls == 0 and b.stats.cache_hits == 1
    a.close()
    assert hit.cached and hit.text == fresh.text
    assert [(t.token, t.logprob, t.top) for t in hit.logprobs] == [
        (t.token, t.logprob, t.top) for t in fresh.logprobs
    ]
