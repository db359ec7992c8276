"""Score tokens found in context (instructkit/models/score_tokens.py) on a SentencePiece-style tokenizer.

The tokenizer is built here with `tokenizers` the way LLaMA's works (Metaspace "▁" prefix, digits split
one by one), so "1" encodes alone as ["▁", "1"]: the first id of every choice is the same "▁", the bug
the in-context search fixes. The model is a tiny random LLaMA, so its distribution is not flat.
"""

from __future__ import annotations

import math

import pytest
import torch

from instructkit.models.local import load_local_backend
from instructkit.models.score_tokens import score_token_ids

DIGITS = [str(i) for i in range(1, 7)]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


@pytest.fixture(scope="module")
def sentencepiece_llama(tmp_path_factory: pytest.TempPathFactory):
    """A LLaMA-style SentencePiece tokenizer (Metaspace, split digits) and a tiny random LLaMA, loaded
    through the local backend from a folder, as `hf:PATH` users load theirs."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<|system|>"]
    pieces = ["▁", *DIGITS, "0", "7", "8", "9", "\n", *"abcdefghijklmnopqrstuvwxyz.,:?!", "▁a"]
    vocab = {tok: i for i, tok in enumerate(specials + pieces)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[("▁", "a")], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always"), pre_tokenizers.Digits(True)]
    )
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<unk>",
        additional_special_tokens=specials[3:],
    )
    hf_tok.chat_template = CHAT_TEMPLATE
    path = tmp_path_factory.mktemp("sp_llama")
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(hf_tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        initializer_range=0.5,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    LlamaForCausalLM(cfg).save_pretrained(str(path))
    hf_tok.save_pretrained(str(path))
    return load_local_backend(f"hf:{path}", dtype="float32")


def test_choices_alone_share_the_sentencepiece_prefix(sentencepiece_llama):
    tok = sentencepiece_llama.tokenizer
    alone = [tok(d, add_special_tokens=False).input_ids for d in DIGITS]
    assert all(ids[0] == tok.convert_tokens_to_ids("▁") for ids in alone)  # the old bug's input
    found = score_token_ids(tok, DIGITS)
    assert found.ids == tok.convert_tokens_to_ids(DIGITS) and found.context_ids == [
        tok.convert_tokens_to_ids("▁")
    ]


def test_score_tokens_in_the_chat_prompt_and_their_logprobs(sentencepiece_llama):
    be = sentencepiece_llama
    msgs = [{"role": "user", "content": "rate this: a b c"}]
    text = be.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    found = score_token_ids(be.tokenizer, DIGITS, text)
    assert len(set(found.ids)) == 6 and found.ids == be.tokenizer.convert_tokens_to_ids(DIGITS)
    prompt = be.prompt_ids(msgs)
    assert found.context_ids[: len(prompt)] == prompt
    got = be.choice_logprobs(msgs, DIGITS)
    # Independent: whole-model logits after the context, log_softmax, the digits' own ids.
    with torch.no_grad():
        logits = be.model(torch.tensor([found.context_ids])).logits[0, -1].double()
    ref = torch.log_softmax(logits, -1)[be.tokenizer.convert_tokens_to_ids(DIGITS)].tolist()
    # float32 forward passes of the same 2-layer model, two code paths: agree to a few float32 ulps of
    # the logits' scale (|logit| < 50 here), far below the spread between choices.
    assert got == pytest.approx(ref, abs=1e-4)
    assert max(got) - min(got) > 1e-3  # distinct tokens, distinct values (the bug gave six equal ones)
    assert sum(math.exp(v) for v in got) < 1.0


def test_choices_that_share_their_first_token_are_refused(sentencepiece_llama):
    tok = sentencepiece_llama.tokenizer
    with pytest.raises(ValueError, match="distinct tokens|no token of their own"):
        score_token_ids(tok, ["1", "10"])  # digits split one by one: "10" begins with "1"
    with pytest.raises(ValueError, match="no score choices"):
        score_token_ids(tok, [])
