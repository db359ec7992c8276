"""Generation parameters are typed end to end: one GenParams built at the facade's entry."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from instructkit.models import LLM, GenOptions, GenParams


def test_the_keyword_options_are_exactly_the_gen_params_fields() -> None:
    assert set(typing.get_type_hints(GenOptions)) == {f.name for f in dataclasses.fields(GenParams)}


def test_one_gen_params_from_params_and_keywords() -> None:
    base = GenParams(max_tokens=8, temperature=0.5)
    assert GenParams.of() == GenParams()
    assert GenParams.of(base) is base
    assert GenParams.of(base, {"max_tokens": 4, "stop": "x"}) == GenParams(max_tokens=4, temperature=0.5, stop=("x",))
    with pytest.raises(TypeError):
        GenParams.of(None, {"max_token": 4})  # type: ignore[typeddict-unknown-key]


def test_a_misspelt_option_fails_before_any_call(tmp_path) -> None:
    llm = LLM("m@http://127.0.0.1:9/v1", cache_dir=str(tmp_path), dry_run=True)
    with pytest.raises(TypeError):
        llm.chat("Hi", max_token=4)
    assert llm.stats.estimated_calls == 0
    # the same request given as GenParams or as keywords is one cache key
    assert llm.chat_key([{"role": "user", "content": "Hi"}], GenParams.of(None, {"max_tokens": 4})) == llm.chat_key(
        [{"role": "user", "content": "Hi"}], GenParams(max_tokens=4))
    llm.chat("Hi", params=GenParams(max_tokens=4))
    llm.chat("Hi", max_tokens=4)  # the dry run's first answer, found again
    assert llm.stats.estimated_calls == 1 and llm.stats.cache_hits == 1
