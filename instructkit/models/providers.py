"""Named hosted providers: which `provider/model` specs take a fast HTTP path, and where they go.

A spec such as `openai/gpt-4o-mini` or `groq/llama-3.1-8b-instant` names a provider by its litellm
prefix. Providers whose API is OpenAI's chat-completions API (OpenAI, Together, Groq, Fireworks,
DeepSeek, OpenRouter, Mistral, Azure OpenAI) are sent by the lean aiohttp client
(`http_openai.py`), Anthropic's Messages API by `http_anthropic.py`; every other provider, and any
spec with `--via litellm`, goes through litellm. Each provider's documented base URL, key variable
and base-URL override variable (the one its official SDK reads) are listed once, here; both paths
get the same resolved URL and key, so they reach the same server.

A key read from the environment goes only to its own provider: to the documented host, or to the
base URL the same provider's override variable names (the user paired them). `--key` goes wherever
the user sends it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

FAST = "fast HTTP"
LITELLM = "litellm"


@dataclass(frozen=True)
class Provider:
    """One named provider: its litellm prefix, documented base URL, key and base-URL variables
    (first set wins), the wire protocol and what its API takes."""

    prefix: str  # as in the spec: "groq" in "groq/llama-3.1-8b-instant"
    base_url: str
    key_env: tuple[str, ...]
    base_env: tuple[str, ...] = ()
    api: str = "openai"  # "openai" (chat completions) | "azure" (openai + deployments URL) | "anthropic" (Messages)
    json_schema: bool = True  # takes response_format json_schema
    penalties: bool = True  # takes presence_penalty / frequency_penalty


# Base URLs and key variables as each provider documents them; override variables as the official
# SDKs read them (openai: OPENAI_BASE_URL; anthropic: ANTHROPIC_BASE_URL; groq: GROQ_BASE_URL;
# together: TOGETHER_BASE_URL), plus litellm's own names, so `--via litellm` and the fast path agree.
PROVIDERS: dict[str, Provider] = {p.prefix: p for p in (
    Provider("openai", "https://api.openai.com/v1", ("OPENAI_API_KEY",), ("OPENAI_BASE_URL", "OPENAI_API_BASE")),
    Provider("together_ai", "https://api.together.xyz/v1", ("TOGETHER_API_KEY", "TOGETHERAI_API_KEY"),
             ("TOGETHER_BASE_URL", "TOGETHERAI_API_BASE")),
    Provider("groq", "https://api.groq.com/openai/v1", ("GROQ_API_KEY",), ("GROQ_BASE_URL", "GROQ_API_BASE")),
    Provider("fireworks_ai", "https://api.fireworks.ai/inference/v1",
             ("FIREWORKS_API_KEY", "FIREWORKS_AI_API_KEY", "FIREWORKSAI_API_KEY"), ("FIREWORKS_API_BASE",),
             penalties=True),
    Provider("deepseek", "https://api.deepseek.com/v1", ("DEEPSEEK_API_KEY",), ("DEEPSEEK_API_BASE",),
             json_schema=False),  # json_object only
    Provider("openrouter", "https://openrouter.ai/api/v1", ("OPENROUTER_API_KEY", "OR_API_KEY"),
             ("OPENROUTER_API_BASE",)),
    Provider("mistral", "https://api.mistral.ai/v1", ("MISTRAL_API_KEY",), ("MISTRAL_API_BASE",), penalties=False),
    Provider("azure", "", ("AZURE_OPENAI_API_KEY", "AZURE_API_KEY"), ("AZURE_OPENAI_ENDPOINT", "AZURE_API_BASE"),
             api="azure"),
    Provider("anthropic", "https://api.anthropic.com", ("ANTHROPIC_API_KEY",), ("ANTHROPIC_BASE_URL", "ANTHROPIC_API_BASE"),
             api="anthropic", json_schema=False, penalties=False),
)}  # fmt: skip
AZURE_API_VERSION = "2024-10-21"  # the latest GA data-plane version; AZURE_API_VERSION / OPENAI_API_VERSION override
AZURE_VERSION_ENV = ("AZURE_API_VERSION", "OPENAI_API_VERSION")


@dataclass(frozen=True)
class Route:
    """Where a named provider's spec goes: the resolved base URL, the path and why."""

    provider: Provider
    wire_model: str  # the model name the provider's API takes (the spec without its prefix)
    api_base: str  # Azure: the resource endpoint (the deployment's URL is built from it)
    path: str  # FAST or LITELLM
    why: str
    default_base: bool  # api_base is the provider's documented one (not an override)
    api_version: str | None = None  # Azure


def provider_of(spec: str) -> Provider | None:
    """The named provider a `provider/model` spec starts with, else None."""
    prefix, sep, rest = spec.partition("/")
    return PROVIDERS.get(prefix) if sep and rest else None


def first_env(names: tuple[str, ...], environ: Mapping[str, str] | None = None) -> str | None:
    env = os.environ if environ is None else environ
    return next((env[n] for n in names if env.get(n)), None)


def route(spec: str, via: str | None = None, environ: Mapping[str, str] | None = None) -> Route | None:
    """The route of a named provider's spec (None for a spec no provider here names). `via="litellm"`
    forces litellm; the URL is resolved the same way for both paths."""
    provider = provider_of(spec)
    if provider is None:
        return None
    override = first_env(provider.base_env, environ)
    base = (override or provider.base_url).rstrip("/")
    version = (first_env(AZURE_VERSION_ENV, environ) or AZURE_API_VERSION) if provider.api == "azure" else None
    if via == "litellm":
        path, why = LITELLM, "--via litellm"
    elif provider.api == "azure" and not base:
        path, why = LITELLM, f"no Azure endpoint ({' or '.join(provider.base_env)} unset): litellm decides"
    else:
        kind = "Anthropic Messages API" if provider.api == "anthropic" else "OpenAI-compatible API"
        where = f"{provider.base_env[0] if override else 'documented'} base URL"
        path, why = FAST, f"{provider.prefix}: {kind}, {where}"
    return Route(provider, spec.partition("/")[2], base, path, why, override is None, version)


def provider_key(provider: Provider, explicit: str | None = None) -> str | None:
    """`--key`, else the provider's own key variable: never another provider's key."""
    return explicit or first_env(provider.key_env)


def litellm_reason(spec: str) -> str:
    """Why a spec that names no provider here goes through litellm."""
    return f"{spec.partition('/')[0]}: no fast path here (litellm handles this provider)"
