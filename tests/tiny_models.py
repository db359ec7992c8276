"""A tiny random LLaMA with the embedded SmolLM2 tokenizer (its chat template included): a causal LM
that trains and scores in well under a second a step on CPU, for the train/evaluate loop's tests."""

from __future__ import annotations

from pathlib import Path


def tiny_chat_llama(path: Path, seed: int = 0, hidden: int = 32, layers: int = 2) -> Path:
    """Save a random LlamaForCausalLM (`hidden` wide, `layers` deep) with SmolLM2-135M-Instruct's
    tokenizer to `path` and return it; the folder loads like any transformers model."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from instructkit.models.local_files import default_chat_model, set_offline

    set_offline()
    tok = AutoTokenizer.from_pretrained(str(default_chat_model()))
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=512, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, tie_word_embeddings=True)  # fmt: skip
    torch.manual_seed(seed)
    LlamaForCausalLM(cfg).save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path
