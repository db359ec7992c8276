"""`LLM.supports`: what a method may ask a model for, answered without loading a local model or
building a hosted backend where that decides it (docs/DEVELOPING.md, "One door")."""

from __future__ import annotations

import pytest

from instructkit.models import LLM
from instructkit.models.capabilities import CAPABILITIES


def test_a_local_model_states_its_capabilities_unloaded():
    llm = LLM("local", cache=False)
    offered = {c for c in CAPABILITIES if c != "json_schema" and llm.supports(c)}
    assert offered == {"chat", "complete", "next_token_distribution", "span_scores", "count_tokens"}
    assert llm._backend is None  # nothing was loaded to learn it


def test_a_hosted_model_has_no_in_process_capabilities():
    llm = LLM("openai/gpt-4o-mini", api_key="sk-test", cache=False)
    for capability in ("next_token_distribution", "span_scores", "count_tokens"):
        assert not llm.supports(capability), capability
    assert llm._backend is None
    with pytest.raises(Exception, match="token-level scoring needs a local model"):
        llm.local_scorer()


def test_an_unknown_capability_is_refused():
    with pytest.raises(ValueError, match="unknown capability 'logits'"):
        LLM("local", cache=False).supports("logits")


def test_the_split_engine_answers_protocol_checks_without_loading_either_engine():
    from instructkit.models import (
        Backend,
        ClassifierBackend,
        CompletionBackend,
        EmbeddingBackend,
        ScoringBackend,
        TokenCountingBackend,
    )
    from instructkit.models.local.split import SplitLocalBackend

    split = SplitLocalBackend("local", {"dtype": "float32"}, {"parallel": 2})
    for protocol in (Backend, CompletionBackend, ScoringBackend, TokenCountingBackend):
        assert isinstance(split, protocol), protocol
    for protocol in (EmbeddingBackend, ClassifierBackend):
        assert not isinstance(split, protocol), protocol
    assert split.supports_json_schema and split.model_id.endswith(":float32")
    assert split._scorer is None and split._generator is None  # neither engine was loaded to answer
