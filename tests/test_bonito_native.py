"""Bonito native mode sends upstream's `<|tasktype|>...<|task|>` input as a raw completion (no chat template),
as `vllm.LLM.generate` does upstream: in process on the real local model and through llama.cpp's server's
`/v1/completions`. SmolLM2 is not Bonito, so these tests check what reaches the model, not the tasks."""

from __future__ import annotations

from pathlib import Path

from instructkit.generators import bonito as bo
from instructkit.generators.common import call_seed, passages_for

from instructkit.models import LLM
from instructkit.models.local import load_local_backend
from instructkit.registry import get
from instructkit.run.runner import RunContext

DOCS = [{"doc_id": "tides", "text": "The tide rises twice a day. The moon's pull causes it."}]


def _run_native(llm: LLM, work: Path) -> tuple[RunContext, list[dict]]:
    options = get("generate", "bonito").make_options({"preset": "official", "task_types": "ynqa", "max_tokens": "12"})
    assert options.mode == "native" and (options.temperature, options.top_p) == (0.5, 0.95)
    ctx = RunContext(llm=llm, options=options, method="bonito", work_dir=work, random_state=7, progress=False)
    return ctx, bo.bonito(DOCS, ctx)


def _assert_raw_request(llm: LLM, ctx: RunContext, max_prompt_tokens: int) -> None:
    passage = passages_for(DOCS, ctx, "text", 384)[0]
    text = bo.native_input("ynqa", passage.text)
    seed = call_seed(ctx, "bonito", passage.doc_id, passage.passage_index, "ynqa")
    calls = llm.stats.calls
    comp = llm.complete(text, temperature=0.5, top_p=0.95, max_tokens=12, seed=seed)
    assert comp.cached and llm.stats.calls == calls  # the generator made exactly this raw request
    assert not llm.chat(text, temperature=0.5, top_p=0.95, max_tokens=1, seed=seed).cached
    assert 0 < comp.usage.prompt_tokens <= max_prompt_tokens  # the native input alone, no template


def test_native_in_process_is_a_raw_completion(tmp_path: Path, tmp_cache) -> None:
    llm = LLM("local", cache=tmp_cache)
    ctx, out = _run_native(llm, tmp_path)
    counts = ctx.extras["generate_summary"]["bonito"]
    assert counts["attempted"] == 1 == len(out) + counts["invalid"]
    passage = passages_for(DOCS, ctx, "text", 384)[0]
    ids = load_local_backend("local").raw_prompt_ids(bo.native_input("ynqa", passage.text))
    _assert_raw_request(llm, ctx, len(ids) + 1)  # llama.cpp may add a BOS the HF tokenizer does not


def test_native_on_a_server_uses_the_completions_endpoint(llama_server: str, tmp_path: Path, tmp_cache) -> None:
    llm = LLM("smollm2", api_base=llama_server, cache=tmp_cache, max_retries=1, timeout=120)
    ctx, out = _run_native(llm, tmp_path)
    assert ctx.extras["generate_summary"]["bonito"]["attempted"] == 1
    tokenizer = load_local_backend("local").tokenizer
    passage = passages_for(DOCS, ctx, "text", 384)[0]
    n = len(tokenizer(bo.native_input("ynqa", passage.text)).input_ids)
    _assert_raw_request(llm, ctx, n + 1)  # llama.cpp may add a BOS the HF tokenizer does not
    llm.close()
