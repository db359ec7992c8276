"""The local transformers backend on the real SmolLM2-135M-Instruct (no mocks)."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
import torch

from instructkit.models import LLM, GenParams, ModelCallError
from instructkit.models.local import load_local_backend
from instructkit.models.local_files import META_FILE
from instructkit.models.types import EmbeddingBackend, ScoringBackend
from instructkit.numerics import fp32_tolerance


def llamacpp_identity() -> dict:
    """What `local`'s identity adds where llama.cpp generates (its probe passed here), else nothing:
    on the transformers fallback the identity is the model's alone (tests/test_engine_probe.py)."""
    from instructkit.models.engine_probe import llamacpp_installed, llamacpp_verdict

    return {"engine": "llama.cpp", "weights": "q8_0"} if llamacpp_installed() and llamacpp_verdict().ok else {}

PROMPTS = ["What is 2+2?", "Name three colors.", "Write a haiku about the sea.", "Hi"]


@pytest.fixture(scope="module")
def backend():
    return load_local_backend("local")


def chat(backend, prompt: str, **params) -> object:
    return asyncio.run(backend.chat([{"role": "user", "content": prompt}], GenParams().replace(**params)))[0]


def test_loaded_once_and_identified(backend):
    assert load_local_backend("local") is backend
    assert (backend.path / META_FILE).is_file()
    assert backend.model_id.startswith("SmolLM2-135M-Instruct") and backend.model_id.endswith(":float32")
    assert backend.kind == "local" and not backend.supports_n
    assert backend.supports_json_schema  # llguidance (the local extra) constrains its decoding


def test_greedy_is_deterministic_and_batching_changes_nothing(backend):
    params = GenParams(max_tokens=16)
    single = [chat(backend, p, max_tokens=16) for p in PROMPTS]
    again = [chat(backend, p, max_tokens=16) for p in PROMPTS]

    async def together():
        msgs = [[{"role": "user", "content": p}] for p in PROMPTS]
        return await asyncio.gather(*[backend.chat(m, params) for m in msgs])

    batched = [c[0] for c in asyncio.run(together())]
    assert [c.text for c in single] == [c.text for c in again] == [c.text for c in batched]
    assert all(c.text for c in single)
    for c in single:
        assert c.finish_reason in ("stop", "length") and c.cost == 0.0
        assert c.usage.prompt_tokens > 0 and 0 < c.usage.completion_tokens <= 16


def test_seeded_sampling_is_reproducible(backend):
    kw = dict(max_tokens=12, temperature=1.0, top_p=0.95)
    a = chat(backend, PROMPTS[2], seed=11, **kw)
    b = chat(backend, PROMPTS[2], seed=11, **kw)
    assert a.text == b.text
    others = {chat(backend, PROMPTS[2], seed=s, **kw).text for s in (1, 2, 3)}
    assert len(others | {a.text}) > 1


def test_logprobs_under_greedy(backend):
    c = chat(backend, PROMPTS[1], max_tokens=10, logprobs=True, top_logprobs=3)
    assert c.logprobs is not None and len(c.logprobs) == c.usage.completion_tokens
    for t in c.logprobs:
        assert t.logprob <= 0 and len(t.top) == 3
        assert t.top[0][0] == t.token and t.top[0][1] == pytest.approx(t.logprob, abs=1e-6)
        assert [v for _, v in t.top] == sorted((v for _, v in t.top), reverse=True)
    assert "".join(t.token for t in c.logprobs) == c.text


def test_stop_strings_and_length(backend):
    full = chat(backend, PROMPTS[1], max_tokens=16)
    stop = full.text.split()[1]
    cut = chat(backend, PROMPTS[1], max_tokens=16, stop=[stop], logprobs=True)
    assert cut.finish_reason == "stop"
    assert cut.text == full.text[: full.text.index(stop)]
    assert "".join(t.token for t in cut.logprobs).startswith(cut.text)
    short = chat(backend, PROMPTS[2], max_tokens=3)
    assert short.finish_reason == "length" and short.usage.completion_tokens == 3


PAIRS = [
    ("Question: what is 2+2?\nAnswer:", " 4, because two and two make four."),
    ("Write a poem.", "Roses are red, violets are blue."),
    ("", "Hello there friend."),
    ("Translate to French: cat\n", "chat"),
    ("Summarise: " + "the cat sat on the mat. " * 6, "A cat sat on a mat."),
]


def reference_logits(backend, ids: list[int]) -> torch.Tensor:
    """Full fp32 logits of one whole sequence, no padding."""
    with torch.no_grad():
        return backend.model(torch.tensor([ids])).logits[0].float()


def reference_logprobs(backend, prompt_ids: list[int], answer_ids: list[int]) -> list[float]:
    """Straightforward: full logits of the whole sequence, log_softmax, gather the answer tokens."""
    full = prompt_ids + answer_ids
    logp = torch.log_softmax(reference_logits(backend, full), dim=-1)
    start = max(len(prompt_ids), 1)
    return [logp[t - 1, full[t]].item() for t in range(start, len(full))]


def fp32_tol(backend, ids: list[int]) -> float:
    """The fp32 bound for this sequence: accumulation over hidden size + length, at its largest |logit|."""
    scale = float(reference_logits(backend, ids).abs().max())
    return fp32_tolerance(backend.model.config.hidden_size + len(ids), scale)


def test_span_scores_batched_single_and_reference_agree(backend):
    batched = backend.span_scores(PAIRS, batch_size=8)
    single = [backend.span_scores([p])[0] for p in PAIRS]
    for (prompt, answer), b, s in zip(PAIRS, batched, single):
        p_ids, a_ids = backend.span_ids(prompt, answer)
        ref = reference_logprobs(backend, p_ids, a_ids)
        assert b.n_prompt_tokens == len(p_ids) and b.n_tokens == len(ref) > 0
        # fp32: padding and batching change the order of every sum, nothing else
        tol = fp32_tol(backend, p_ids + a_ids)
        np.testing.assert_allclose(b.token_logprobs, s.token_logprobs, rtol=0, atol=tol)
        np.testing.assert_allclose(b.token_logprobs, ref, rtol=0, atol=tol)
        assert b.mean_loss == pytest.approx(s.mean_loss, abs=tol)
    pre = backend.span_scores([backend.span_ids(p, a) for p, a in PAIRS])
    assert [x.token_logprobs for x in pre] == [x.token_logprobs for x in batched]


def test_hidden_states(backend):
    texts = ["a short text", "another, somewhat longer text about cats"]
    mean = backend.hidden_states(texts, "mean")
    last = backend.hidden_states(texts, "last")
    assert mean.shape == last.shape == (2, backend.model.config.hidden_size)
    assert mean.dtype == np.float32 and not np.allclose(mean, last)
    np.testing.assert_allclose(backend.hidden_states(texts[1:], "mean")[0], mean[1], atol=1e-4)
    assert not isinstance(backend, EmbeddingBackend)  # a chat model states it does not embed...
    with pytest.raises(ModelCallError, match="does not embed"):  # ...and the facade says what does
        LLM("local", backend=backend, cache=False).embed(texts)


def test_facade_caches_and_scores(tmp_path):
    llm = LLM("local", cache_dir=str(tmp_path))
    first = llm.chat("Say hello.", max_tokens=8)
    second = llm.chat("Say hello.", max_tokens=8)
    assert not first.cached and second.cached and first.text == second.text
    assert llm.identity == {"family": "local", "model": llm.backend.model_id, **llamacpp_identity()}
    assert llm.span_scores(PAIRS[:2])[0].n_tokens > 0
    llm.close()


def test_dry_run_never_loads_the_model_and_keys_match(tmp_path, backend):
    from instructkit.models.llm import is_placeholder

    llm = LLM("local", cache_dir=str(tmp_path), dry_run=True)
    assert is_placeholder(llm.chat("Say hello.", max_tokens=8))  # counted, answered by a stand-in
    assert llm._backend is None and llm.stats.estimated_calls == 1
    assert llm.identity == {"family": "local", "model": backend.model_id, **llamacpp_identity()}
    fast = LLM("local:bf16", cache=False)
    assert fast.identity["model"] == backend.model_id.replace(":float32", ":bfloat16") and fast._backend is None
    llm.close()


def test_choice_logprobs_read_the_full_next_token_distribution(backend):
    msgs = [{"role": "user", "content": "Rate the difficulty from 1 to 6: add two numbers.\n##Complexity:"}]
    choices = ["1", "2", "3", "4", "5", "6"]
    ours = backend.choice_logprobs(msgs, choices)
    ids = backend.prompt_ids(msgs)
    ref = torch.log_softmax(reference_logits(backend, ids)[-1], dim=-1)
    token_ids = [backend.tokenizer(c, add_special_tokens=False).input_ids[0] for c in choices]
    np.testing.assert_allclose(ours, [float(ref[t]) for t in token_ids], rtol=0, atol=fp32_tol(backend, ids))
    llm = LLM("local", cache=False)
    assert asyncio.run(llm.achoice_logprobs(msgs, choices)) == pytest.approx(ours, abs=1e-6)


class CountingScorer(ScoringBackend):
    """The real transformers backend, with the most choice reads inside it at once recorded."""

    def __init__(self, inner):
        self.inner, self.model_id = inner, inner.model_id
        self.now = self.peak = 0
        self._lock = threading.Lock()

    def choice_logprobs(self, messages, choices):
        with self._lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        try:
            return self.inner.choice_logprobs(messages, choices)
        finally:
            with self._lock:
                self.now -= 1

    def next_token_logprobs(self, prompt, choices, special_tokens=False):
        return self.inner.next_token_logprobs(prompt, choices, special_tokens)

    def span_scores(self, pairs, **options):
        return self.inner.span_scores(pairs, **options)

    async def aclose(self) -> None:
        pass


def test_choice_reads_take_a_concurrency_slot_each(backend):
    """Eight reads asked at once with concurrency 2: two forward passes in the model at a time
    (each read waits for its slot, like every other call), answers unchanged."""
    counting = CountingScorer(backend)
    llm = LLM("local", backend=counting, cache=False, concurrency=2)
    choices = ["1", "2", "3", "4", "5", "6"]
    prompts = [f"Rate from 1 to 6 how hard it is to count to {i}." for i in range(8)]

    async def every() -> list[list[float]]:
        return await asyncio.gather(*(llm.achoice_logprobs(p, choices) for p in prompts))

    got = asyncio.run(every())
    assert counting.peak == 2 and llm.stats.calls == len(prompts)
    alone = backend.choice_logprobs([{"role": "user", "content": prompts[3]}], choices)
    np.testing.assert_allclose(got[3], alone, rtol=0, atol=1e-6)  # batch-free: one pass per read either way
