"""DEITA `mode=scorer` (preset `official`): the released scorers' raw input, read as the released code does.

The released deita-complexity-scorer / deita-quality-scorer are LLaMA models: their tokenizer is
SentencePiece (Metaspace "▁", digits split) and adds BOS; `Scorer.infer_score` encodes the raw template
with that BOS, reads the logits at the first generated position at the ids of "1".."6", softmaxes those
six and returns Σ s·p(s). Here the same on a tiny random LLaMA with such a tokenizer built in the test, and
on llama.cpp's server through `/v1/completions`.
"""

from __future__ import annotations

import math

import pytest
import torch
from instructkit.judge.deita import SCORER_TEMPLATES, scorer_prompt

from instructkit.models import LLM
from instructkit.registry import get
from instructkit.run.runner import RunContext
from instructkit.shared.scores import OK

DIGITS = [str(i) for i in range(1, 7)]
REC = {"instruction": "Write a haiku about rain.", "input": "", "output": "Soft rain on the roof."}
# hkust-nlp/deita @ b279f2c, src/deita/selection/scorer/llama_scorer.py, copied by hand as the oracle.
RELEASED_COMPLEXITY = (
    "You are a helpful assistant. Please identify the complexity score of the following user query. "
    "\n##Query: {instruction}  \n##Complexity: "
)
RELEASED_QUALITY = (
    "You are a helpful assistant. Please identify the quality score of the Response corresponding to the "
    "Question. \n #Question#:\n{instruction}\n#Response#:\n{output} \n##Quality: "
)


@pytest.fixture(scope="module")
def scorer_folder(tmp_path_factory: pytest.TempPathFactory):
    """A LLaMA-style tokenizer (Metaspace, split digits, BOS added by its post-processor) and a tiny
    random LLaMA in a folder; returns (folder, the raw `tokenizers.Tokenizer`)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>"]
    chars = sorted(set("".join(RELEASED_COMPLEXITY + RELEASED_QUALITY + REC["instruction"] + REC["output"])))
    pieces = ["▁", *[c for c in chars if c != " "], *"0123456789", "▁#", "##"]
    vocab = {}
    for tok in specials + pieces:
        vocab.setdefault(tok, len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[("▁", "#"), ("#", "#")], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first"), pre_tokenizers.Digits(True)]
    )
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<unk>"
    )
    path = tmp_path_factory.mktemp("deita_scorer")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(hf_tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, initializer_range=0.5,
                      bos_token_id=vocab["<s>"], eos_token_id=vocab["</s>"], pad_token_id=0)  # fmt: skip
    LlamaForCausalLM(cfg).save_pretrained(str(path))
    hf_tok.save_pretrained(str(path))
    return path, tok


def run_deita(llm: LLM, records: list[dict], **options) -> list[dict]:
    info = get("judge", "deita")
    ctx = RunContext(llm=llm, options=info.make_options(options), method="deita", progress=False)
    return info.func(records, ctx)


def test_templates_are_the_released_ones() -> None:
    assert SCORER_TEMPLATES == {"complexity": RELEASED_COMPLEXITY, "quality": RELEASED_QUALITY}
    assert scorer_prompt("quality", "a {b}", "c") == RELEASED_QUALITY.format(instruction="a {b}", output="c")
    assert get("judge", "deita").make_options({"preset": "official"}).mode == "scorer"


def test_local_scorer_reads_the_six_digit_ids_after_the_raw_prompt(scorer_folder, tmp_cache) -> None:
    path, raw_tok = scorer_folder
    llm = LLM(f"hf:{path}", cache=tmp_cache)
    rows = run_deita(llm, [REC], preset="official")
    row = rows[0]
    assert row["deita_parse"] == OK and row["deita_complexity_source"] == ["distribution"]
    backend = llm.backend
    vocab = raw_tok.get_vocab()
    for aspect in ("complexity", "quality"):
        prompt = RELEASED_COMPLEXITY.format(instruction=REC["instruction"]) if aspect == "complexity" else (
            RELEASED_QUALITY.format(instruction=REC["instruction"], output=REC["output"]))  # fmt: skip
        # The raw prompt's ids: BOS once, then the prompt as the tokenizer itself splits it (no template).
        ids = raw_tok.encode(prompt).ids
        assert ids[0] == vocab["<s>"] and ids.count(vocab["<s>"]) == 1
        assert backend.raw_prompt_ids(prompt) == ids and ids[-1] == vocab["▁"]  # the trailing space
        # The six score ids: the digit pieces themselves ("1", not "▁" nor "▁1"), as llama_scorer.py's id2score.
        from instructkit.models.score_tokens import score_token_ids

        found = score_token_ids(backend.tokenizer, DIGITS, prompt)
        assert found.ids == [vocab[d] for d in DIGITS]
        assert backend.bos_prefix(prompt) + found.context_ids == ids
        # Independent: the released infer_score on a whole-model forward pass.
        with torch.inference_mode():
            logits = backend.model(input_ids=torch.tensor([ids])).logits[0, -1].double()
        six = torch.softmax(logits[[vocab[d] for d in DIGITS]], dim=0)
        want = float((six * torch.arange(1, 7, dtype=torch.float64)).sum())
        # float32 forward passes of one 2-layer model by two code paths: a few ulps of |logit| < 50.
        assert row[f"deita_{aspect}"] == pytest.approx(want, abs=1e-4)
        assert not math.isclose(want, 3.5, abs_tol=1e-3)  # a random model's six logits are not flat
    assert row["deita_score"] == pytest.approx(row["deita_complexity"] * row["deita_quality"])


def test_server_scorer_goes_through_the_completions_endpoint(llama_server: str, tmp_cache) -> None:
    llm = LLM("smollm2", api_base=llama_server, cache=tmp_cache, max_retries=1, timeout=120)
    rows = run_deita(llm, [REC], preset="official", aspects=["complexity"], top_logprobs=20)
    row = rows[0]
    prompt = RELEASED_COMPLEXITY.format(instruction=REC["instruction"])
    comp = llm.complete(prompt, temperature=0.0, max_tokens=1, logprobs=True, top_logprobs=20)
    assert comp.cached  # the judge made exactly this raw request
    # The preset reads as the released code on vLLM: the tokens "1".."6" exactly, softmax over the six
    # (3.0 when one is missing: tests/golden/deita); SmolLM2 puts all six among its top 20 here.
    probs = {}
    for text, lp in [(comp.logprobs[0].token, comp.logprobs[0].logprob), *comp.logprobs[0].top]:
        if text in DIGITS:
            probs.setdefault(int(text), math.exp(lp))
    assert len(probs) == 6
    want = sum(s * p for s, p in probs.items()) / sum(probs.values())
    assert row["deita_complexity_parse"] == OK and row["deita_complexity"] == pytest.approx(want, abs=1e-9)
    assert row["deita_complexity_source"] == ["logprobs"]
    llm.close()


def test_server_scorer_official_preset_scores_3_when_a_digit_is_missing(llama_server: str, tmp_cache) -> None:
    """The preset asks for the released code's 1000 log-probs (the server returns what it has); with fewer
    alternatives than the six digits, a digit is missing and the row scores the released code's 3.0."""
    from instructkit.judge.deita import official_server_score

    llm = LLM("smollm2", api_base=llama_server, cache=tmp_cache, max_retries=1, timeout=120)
    (row,) = run_deita(llm, [REC], preset="official", aspects=["complexity"])
    prompt = RELEASED_COMPLEXITY.format(instruction=REC["instruction"])
    full = llm.complete(prompt, temperature=0.0, max_tokens=1, logprobs=True, top_logprobs=1000)
    assert full.cached and row["deita_complexity"] == official_server_score(full.logprobs)
    assert row["deita_complexity"] != 3.0  # all six digits came back: a softmax, not the fallback
    (few,) = run_deita(llm, [REC], preset="official", aspects=["complexity"], top_logprobs=2)
    assert (few["deita_complexity"], few["deita_complexity_parse"]) == (3.0, OK)
    llm.close()
