"""instructkit.models.pricing: flat prices read from litellm's bundled map agree with litellm itself,
and pricing a plain HTTP model imports neither litellm nor the litellm backend."""

from __future__ import annotations

import subprocess
import sys

from instructkit.models.pricing import cost_of, flat_prices, is_priced, price_map


def test_flat_prices_agree_with_litellm_cost_per_token() -> None:
    from instructkit.models.litellm_backend import import_litellm

    litellm = import_litellm()
    flat = [name for name in price_map() if flat_prices(name) is not None]
    assert "gpt-4o-mini" in flat and len(flat) > 50
    # every named provider with a fast path (providers.py) is priced without litellm, as litellm prices it
    assert {"anthropic", "groq", "together_ai", "fireworks_ai", "mistral", "azure"} <= {
        price_map()[name]["litellm_provider"] for name in flat}
    for name in flat:
        provider = price_map()[name]["litellm_provider"]
        how = {} if provider.endswith("openai") else {"custom_llm_provider": provider}
        for prompt_tokens, completion_tokens in [(1000, 1000), (123457, 4321), (1, 0)]:
            p, c = litellm.cost_per_token(model=name, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                                          **how)  # fmt: skip
            ours = cost_of(name, prompt_tokens, completion_tokens)
            # two products and a sum in float64, possibly in another order: a few ulps apart at most
            assert abs(ours - (p + c)) <= 1e-12 * (p + c), (name, prompt_tokens, completion_tokens, ours, p + c)


def test_unknown_and_local_models_are_free() -> None:
    assert not is_priced("my-self-hosted-llama") and cost_of("my-self-hosted-llama", 100, 100) == 0.0
    assert cost_of("", 100, 100) == 0.0 and cost_of("gpt-4o-mini", 0, 0) == 0.0
    assert is_priced("gpt-4o-mini") and cost_of("gpt-4o-mini", 1000, 1000) > 0


def test_pricing_an_http_model_imports_no_litellm() -> None:
    code = (
        "import sys\n"
        "from instructkit.models import LLM\n"
        "llm = LLM('gpt-4o-mini', api_base='http://127.0.0.1:9/v1')\n"
        "from instructkit.models.pricing import cost_of\n"
        "assert llm.cost_model == 'gpt-4o-mini' and cost_of(llm.cost_model, 10, 10) > 0\n"
        "print(sorted(m for m in sys.modules if 'litellm' in m))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_embedding_and_batch_prices_need_no_litellm() -> None:
    code = (
        "import sys\n"
        "from instructkit.models.pricing import BATCH_DISCOUNT, cost_of, priced_name\n"
        "assert priced_name('openai-compatible', 'text-embedding-3-small') == 'text-embedding-3-small'\n"
        "assert priced_name('openai-compatible', 'my-llama') == '' and priced_name('local', 'local') == ''\n"
        "assert cost_of('text-embedding-3-small', 1000, 0) > 0\n"
        "assert cost_of('gpt-4o-mini', 10, 10, batch=True) == cost_of('gpt-4o-mini', 10, 10) * BATCH_DISCOUNT\n"
        "print(sorted(m for m in sys.modules if 'litellm' in m))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
