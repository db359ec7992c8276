"""Raw-text completion (`LLM.acomplete`, no chat template) and presence/frequency penalties, on the real
local model, the real llama.cpp server (`/v1/completions`, through our HTTP path and litellm) and litellm's
own provider table."""

from __future__ import annotations

import math

import pytest
import torch

from instructkit.models import LLM, GenParams
from instructkit.models.llm import is_placeholder
from instructkit.models.local import load_local_backend

PROMPT = "The capital of France is"
REPEAT = "apple banana apple banana apple banana apple"


@pytest.fixture(scope="module")
def backend():
    return load_local_backend("local")


def test_local_raw_prompt_has_no_chat_template(backend, tmp_cache) -> None:
    llm = LLM("local", backend=backend, cache=tmp_cache)  # the transformers engine, compared with its own model
    comp = llm.complete(PROMPT, max_tokens=6)
    ids = backend.tokenizer(PROMPT).input_ids  # the tokenizer's own default encoding, BOS as it adds one
    assert backend.raw_prompt_ids(PROMPT) == ids
    assert comp.usage.prompt_tokens == len(ids)
    assert comp.usage.prompt_tokens < len(backend.prompt_ids([{"role": "user", "content": PROMPT}]))
    # Greedy continuation, computed independently token by token from the model's own logits.
    seq = list(ids)
    with torch.inference_mode():
        for _ in range(comp.usage.completion_tokens):
            seq.append(int(backend.model(input_ids=torch.tensor([seq])).logits[0, -1].argmax()))
    assert comp.text == backend.tokenizer.decode(seq[len(ids) :], skip_special_tokens=True)
    # Its own cache entry, apart from a chat turn with the same text.
    again = llm.complete(PROMPT, max_tokens=6)
    assert again.cached and again.text == comp.text
    chat = llm.chat(PROMPT, max_tokens=6)
    assert not chat.cached
    assert llm.complete_key(PROMPT, GenParams(max_tokens=6)) != llm.chat_key(
        [{"role": "user", "content": PROMPT}], GenParams(max_tokens=6)
    )


def test_raw_completion_dry_run_counts_without_loading(tmp_path) -> None:
    llm = LLM("local", cache_dir=str(tmp_path), dry_run=True)
    assert is_placeholder(llm.complete(PROMPT, max_tokens=8))  # counted, answered by a stand-in
    assert llm._backend is None and llm.stats.estimated_calls == 1
    with pytest.raises(ValueError, match="json_schema"):
        llm.complete(PROMPT, json_schema={"type": "object"})


def _penalised_greedy(backend, ids: list[int], steps: int, presence: float, frequency: float) -> list[int]:
    """Greedy decoding with OpenAI's penalty definitions, one full forward pass per step."""
    seq, out = list(ids), []
    with torch.inference_mode():
        for _ in range(steps):
            logits = backend.model(input_ids=torch.tensor([seq])).logits[0, -1].float()
            for tok in set(out):
                logits[tok] -= out.count(tok) * frequency + presence
            nxt = int(logits.argmax())
            if nxt in backend.eos_ids:
                break
            seq.append(nxt)
            out.append(nxt)
    return out


def test_local_penalties_follow_the_openai_definition(backend, tmp_cache) -> None:
    llm = LLM("local", backend=backend, cache=tmp_cache)
    ids = backend.raw_prompt_ids(REPEAT)
    plain = llm.complete(REPEAT, max_tokens=10)
    penalised = llm.complete(REPEAT, max_tokens=10, presence_penalty=1.5, frequency_penalty=0.5)
    want = _penalised_greedy(backend, ids, 10, 1.5, 0.5)
    assert penalised.text == backend.tokenizer.decode(want, skip_special_tokens=True)
    assert penalised.text != plain.text  # the penalties changed the greedy path (the test can fail)
    assert llm.stats.dropped_presence_penalty == 0 and llm.stats.dropped_frequency_penalty == 0
    # Rows with and without penalties share one batch and each keeps its own.
    import asyncio

    async def both():
        return await asyncio.gather(
            backend.complete(REPEAT, GenParams(max_tokens=10)),
            backend.complete(REPEAT, GenParams(max_tokens=10, presence_penalty=1.5, frequency_penalty=0.5)),
        )

    (a,), (b,) = asyncio.run(both())
    assert (a.text, b.text) == (plain.text, penalised.text)


def test_a_backend_without_penalties_drops_them_loudly(capsys) -> None:
    from instructkit.models.litellm_backend import LiteLLMBackend

    claude = LiteLLMBackend("anthropic/claude-3-5-sonnet-20240620")
    assert not claude.supports_penalties
    assert LiteLLMBackend("openai/gpt-4o-mini").supports_penalties
    llm = LLM("anthropic/claude-3-5-sonnet-20240620", backend=claude, cache=False)
    asked = GenParams(presence_penalty=2.0)
    for _ in range(3):
        sent = llm._honoured(asked)
        assert sent.presence_penalty == 0.0
    assert llm.stats.dropped_presence_penalty == 3 and llm.stats.dropped_frequency_penalty == 0
    err = capsys.readouterr().err
    assert err.count("cannot apply presence_penalty") == 1


@pytest.mark.parametrize("via", ["http", "litellm"])
def test_server_completions_endpoint(llama_server: str, tmp_cache, via: str, backend) -> None:
    llm = LLM("smollm2", api_base=llama_server, via=via, cache=tmp_cache, max_retries=1, timeout=120)
    comp = llm.complete(PROMPT, max_tokens=6, logprobs=True, top_logprobs=3)
    chat = llm.chat(PROMPT, max_tokens=6)
    # The raw prompt reached the model as it is: a few tokens, not the chat template's dozens.
    assert comp.usage.prompt_tokens <= len(backend.tokenizer(PROMPT).input_ids) + 1
    assert chat.usage.prompt_tokens > comp.usage.prompt_tokens + 10
    assert "Paris" in comp.text
    assert comp.logprobs and len(comp.logprobs) == comp.usage.completion_tokens
    for tok in comp.logprobs:
        assert math.isfinite(tok.logprob) and tok.logprob <= 1e-6
        alts = [lp for _, lp in tok.top]
        assert 1 <= len(alts) <= 3 and alts == sorted(alts, reverse=True)
    assert "".join(t.token for t in comp.logprobs) == comp.text
    assert llm.complete(PROMPT, max_tokens=6, logprobs=True, top_logprobs=3).cached
    llm.close()
