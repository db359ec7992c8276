"""What a model call costs: the one place that answers "is this model priced", "by which name" and
"what did this call cost" (synchronous or through a batch API). Nothing else in the project prices.

Prices come from the price map litellm bundles (its local copy; nothing is fetched). A plain chat or
completion or embedding model of OpenAI's with flat per-token prices (what an OpenAI-compatible server's model name
can match: a proxy serving `gpt-4o-mini`) is priced straight from that JSON, so an HTTP request never imports
litellm (slow) to price itself. Any other entry (tiered prices, per-image or per-second billing, provider
aliases) goes to litellm's own `cost_per_token`, so the two ways agree wherever both apply.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
from typing import Any

from .providers import provider_of

_FLAT_MODES = frozenset({"chat", "completion", "responses", "embedding"})
_TIERED = ("input_cost_per_token_above", "output_cost_per_token_above")  # prices that change with the prompt's size
BATCH_DISCOUNT = 0.5  # OpenAI bills batch requests at half the synchronous price
# Providers whose price-map entries are flat per-token prices that litellm's own cost_per_token applies
# as they are (tests/test_pricing.py holds every such entry to litellm's figure): priced without litellm.
# (Not deepseek: litellm discounts some of its models below their listed prices.)
_FLAT_PROVIDERS = frozenset({"openai", "text-completion-openai", "together_ai", "groq", "fireworks_ai", "openrouter",
                             "mistral", "azure", "anthropic"})  # fmt: skip


def import_litellm() -> Any:
    """litellm, imported on first need (it is slow) and always with its bundled price map, so nothing
    reaches for the internet; quiet (no debug banner, no telemetry)."""
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    import litellm

    litellm.suppress_debug_info = True
    litellm.telemetry = False
    return litellm


@functools.cache
def price_map() -> dict[str, dict[str, Any]]:
    """litellm's bundled price map, read as JSON without importing litellm ({} when it is absent)."""
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return {}
    path = os.path.join(next(iter(spec.submodule_search_locations)), "model_prices_and_context_window_backup.json")
    try:
        with open(path, encoding="utf-8") as fh:
            prices = json.load(fh)
    except (OSError, ValueError):
        return {}
    return {name: entry for name, entry in prices.items() if isinstance(entry, dict)}


def context_length(model: str) -> int | None:
    """The most prompt tokens the price map says `model` takes (`max_input_tokens`), else None."""
    entry = price_map().get(model) or price_map().get(model.split("/", 1)[-1])
    value = (entry or {}).get("max_input_tokens") or (entry or {}).get("max_tokens")
    return int(value) if isinstance(value, (int, float)) and value > 0 else None


def is_priced(model: str) -> bool:
    """True when the price map charges for `model` by the token (local and self-hosted names are free)."""
    entry = price_map().get(model)
    return bool(entry and (entry.get("input_cost_per_token") or entry.get("output_cost_per_token")))


def priced_name(family: str, model: str) -> str:
    """The name a model's calls are priced by: a litellm model's own name, an OpenAI-compatible
    server's model name when the price map knows it (a proxy serving `gpt-4o-mini`), else "" (free:
    local models, self-hosted names)."""
    if family == "litellm":
        key = price_key(model)
        # a named provider's model the map does not price (a new or self-served name): free, and no
        # litellm lookup per call; litellm's other providers may still price it by their own rules
        return key if is_priced(key) or provider_of(model) is None else ""
    if family == "openai-compatible" and is_priced(model):
        return model
    return ""


def price_key(spec: str) -> str:
    """The price map's name for a `provider/model` spec: the spec where the map lists it, else the
    model without its prefix where the map lists that under the same provider (OpenAI's and
    Anthropic's entries are unprefixed: `gpt-4o-mini`, not `openai/gpt-4o-mini`), else the spec."""
    prices = price_map()
    if spec in prices:
        return spec
    provider, _, model = spec.partition("/")
    entry = prices.get(model)
    if entry and entry.get("litellm_provider") in (provider, f"text-completion-{provider}"):
        return model
    return spec


def flat_prices(model: str) -> tuple[float, float] | None:
    """(input, output) dollars per token of an OpenAI chat, completion or embedding model with flat
    prices, else None."""
    entry = price_map().get(model)
    if not entry or entry.get("litellm_provider") not in _FLAT_PROVIDERS or model.startswith("ft:"):
        return None
    if entry.get("mode") not in _FLAT_MODES or any(key.startswith(_TIERED) for key in entry):
        return None
    if not (entry.get("input_cost_per_token") or entry.get("output_cost_per_token")):
        return None
    prices = float(entry.get("input_cost_per_token") or 0.0), float(entry.get("output_cost_per_token") or 0.0)
    bare = price_map().get(model.partition("/")[2]) if "/" in model else None
    if bare and (bare.get("input_cost_per_token"), bare.get("output_cost_per_token")) != tuple(entry.get(k) for k in (
            "input_cost_per_token", "output_cost_per_token")):
        return None  # listed twice at different prices (deepseek/x and x): litellm's own lookup decides
    return prices


def cost_of(model: str, prompt_tokens: int, completion_tokens: int, *, batch: bool = False) -> float:
    """Dollar cost of one call (`batch`: answered through a batch API, at `BATCH_DISCOUNT`); 0 for
    models the price map does not know (local, self-hosted)."""
    if not model or (not prompt_tokens and not completion_tokens):
        return 0.0
    if batch:
        return cost_of(model, prompt_tokens, completion_tokens) * BATCH_DISCOUNT
    flat = flat_prices(model)
    if flat is not None:
        return prompt_tokens * flat[0] + completion_tokens * flat[1]
    try:
        p, c = import_litellm().cost_per_token(  # only for entries litellm must interpret
            model=model, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens
        )
        return float(p + c)
    except Exception:
        return 0.0
