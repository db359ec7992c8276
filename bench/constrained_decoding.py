"""Constrained-decoding libraries on this machine: grammar compile time and per-token mask overhead.

For the in-process transformers path (`LocalBackend.generate_batch` with `GenParams.json_schema`) we
need a maintained library that turns a JSON Schema into a per-step allowed-token mask over the model's
vocabulary. This compares xgrammar, llguidance, outlines-core and lm-format-enforcer on the embedded
model's tokenizer (SmolLM2, 49152 tokens): compile = schema -> ready matcher (first use, cold), mask =
mean time per generated token to compute the mask and advance the matcher, walking a fixed valid
reply token by token. The ideal is 0 (no constraint); the model's own decode step (one token, batch 1,
fp32, 2 threads) is printed beside it, since mask time adds to it directly.

    python bench/constrained_decoding.py [--repeat 3]

A library that is not installed is listed as such (pip install xgrammar llguidance outlines-core
lm-format-enforcer to compare all four).
"""

from __future__ import annotations

import argparse
import json
import time

SCHEMA = {
    "type": "object",
    "properties": {
        "score": {"type": "integer", "enum": [0, 1, 2, 3, 4, 5]},
        "explanation": {"type": "string", "maxLength": 400},
    },
    "required": ["score", "explanation"],
    "additionalProperties": False,
}
REPLY = json.dumps(
    {"score": 4, "explanation": "The answer is correct and complete, but it could be a little shorter."}
)


def run_llguidance(tok, ids: list[int]) -> tuple[float, float]:
    import llguidance
    import llguidance.hf
    import llguidance.torch

    t0 = time.perf_counter()
    lltok = llguidance.hf.from_tokenizer(tok)
    grammar = llguidance.LLMatcher.grammar_from_json_schema(
        SCHEMA, defaults={"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
    )
    matcher = llguidance.LLMatcher(lltok, grammar)
    mask = llguidance.torch.allocate_token_bitmask(1, lltok.vocab_size)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for t in ids:
        llguidance.torch.fill_next_token_bitmask(matcher, mask, 0)
        assert matcher.consume_token(t), matcher.get_error()
    return compile_s, (time.perf_counter() - t0) / len(ids)


def run_xgrammar(tok, ids: list[int]) -> tuple[float, float]:
    import xgrammar as xgr

    t0 = time.perf_counter()
    info = xgr.TokenizerInfo.from_huggingface(tok, vocab_size=len(tok))
    compiled = xgr.GrammarCompiler(info).compile_json_schema(json.dumps(SCHEMA), any_whitespace=False)
    matcher = xgr.GrammarMatcher(compiled)
    mask = xgr.allocate_token_bitmask(1, info.vocab_size)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for t in ids:
        matcher.fill_next_token_bitmask(mask)
        assert matcher.accept_token(t)
    return compile_s, (time.perf_counter() - t0) / len(ids)


def run_outlines_core(tok, ids: list[int]) -> tuple[float, float]:
    from outlines_core import Guide, Index, Vocabulary
    from outlines_core.json_schema import build_regex_from_schema
    from outlines_core.kernels.torch import allocate_token_bitmask, fill_next_token_bitmask

    t0 = time.perf_counter()
    vocab: dict[str, list[int]] = {}
    for token, i in tok.get_vocab().items():
        if i != tok.eos_token_id:
            vocab.setdefault(tok.convert_tokens_to_string([token]), []).append(i)
    index = Index(build_regex_from_schema(json.dumps(SCHEMA)), Vocabulary(tok.eos_token_id, vocab))
    guide = Guide(index)
    mask = allocate_token_bitmask(len(tok))
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for t in ids:
        fill_next_token_bitmask(guide, mask)
        guide.advance(t)
    return compile_s, (time.perf_counter() - t0) / len(ids)


def run_lm_format_enforcer(tok, ids: list[int]) -> tuple[float, float]:
    from lmformatenforcer import JsonSchemaParser, TokenEnforcer
    from lmformatenforcer.integrations.transformers import build_token_enforcer_tokenizer_data

    t0 = time.perf_counter()
    enforcer = TokenEnforcer(build_token_enforcer_tokenizer_data(tok), JsonSchemaParser(SCHEMA))
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for k in range(len(ids)):
        allowed = enforcer.get_allowed_tokens(ids[:k])
        assert ids[k] in set(allowed)
    return compile_s, (time.perf_counter() - t0) / len(ids)


LIBRARIES = {
    "llguidance": run_llguidance,
    "xgrammar": run_xgrammar,
    "outlines-core": run_outlines_core,
    "lm-format-enforcer": run_lm_format_enforcer,
}


def decode_step_ms(backend, steps: int = 32) -> float:
    """One greedy decode step of the local model (batch 1, KV cache), the cost a mask adds to."""
    import torch
    from transformers import DynamicCache

    ids = backend.prompt_ids([{"role": "user", "content": "Say something."}])
    best = float("inf")
    for _ in range(2):
        with torch.inference_mode():
            cache = DynamicCache()
            out = backend.model(input_ids=torch.tensor([ids]), past_key_values=cache, use_cache=True)
            t0 = time.perf_counter()
            for _ in range(steps):
                nxt = out.logits[:, -1].argmax(-1, keepdim=True)
                out = backend.model(input_ids=nxt, past_key_values=cache, use_cache=True)
            best = min(best, (time.perf_counter() - t0) / steps * 1000)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    from instructkit.models.local import load_local_backend

    backend = load_local_backend("local")
    tok = backend.tokenizer
    ids = tok(REPLY, add_special_tokens=False).input_ids
    step = decode_step_ms(backend)
    print(f"reply: {len(ids)} tokens; vocabulary {len(tok)}; model decode step {step:.1f} ms/token")
    print(f"{'library':<20}{'version':>10}{'compile ms':>12}{'mask ms/token':>15}{'vs decode step':>16}")
    print(f"{'ideal (none)':<20}{'':>10}{0:>12.1f}{0:>15.3f}{'+0%':>16}")
    from importlib.metadata import PackageNotFoundError, version

    for name, fn in LIBRARIES.items():
        try:
            ver = version(name)
            results = [fn(tok, ids) for _ in range(args.repeat)]
        except PackageNotFoundError:
            print(f"{name:<20}{'-':>10}  not installed")
            continue
        except ImportError as exc:  # installed, but does not import beside this transformers
            print(f"{name:<20}{ver:>10}  does not import: {str(exc)[:70]}")
            continue
        first = results[0][0] * 1000
        mask = min(r[1] for r in results) * 1000
        print(f"{name:<20}{ver:>10}{first:>12.1f}{mask:>15.3f}{f'+{mask / step * 100:.1f}%':>16}")


if __name__ == "__main__":
    main()
