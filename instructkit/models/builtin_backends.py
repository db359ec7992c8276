"""The built-in backends, registered like any other (`spec.register_backend`): local engines
(transformers, llama.cpp), the lean OpenAI-compatible HTTP client, named hosted providers (their fast
clients or litellm) and litellm for everything else. Each factory imports its module on first use."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..credentials import environment_key
from .providers import provider_key
from .spec import BackendSettings, ModelRef, register_backend
from .types import ModelBackend


def server_key(ref: ModelRef, api_key: str | None) -> str | None:
    """The key for a served model: the explicit one, else the environment's only for a provider's own
    host (`credentials.environment_key`)."""
    return api_key or environment_key(ref.api_base)


def _local(ref: ModelRef, settings: BackendSettings) -> ModelBackend:
    from .local import load_local_model

    return load_local_model(ref.model, **settings.local)


def _local_identity(ref: ModelRef, settings: BackendSettings) -> dict[str, Any]:
    from .local import local_identity  # without loading the model (a dry run never needs it)

    opts = settings.local
    return local_identity(ref.model, opts.get("dtype") or "float32", opts.get("engine", "auto"))


def _openai_compatible(ref: ModelRef, settings: BackendSettings) -> ModelBackend:
    from .http_openai import OpenAICompatibleBackend

    return OpenAICompatibleBackend(ref.model, ref.api_base, server_key(ref, settings.api_key), settings.timeout)


def _hosted(ref: ModelRef, settings: BackendSettings) -> ModelBackend:
    from .hosted import named_backend

    assert ref.route is not None
    return named_backend(ref.model, ref.route, settings.api_key, settings.timeout)


def _litellm(ref: ModelRef, settings: BackendSettings) -> ModelBackend:
    from .litellm_backend import LiteLLMBackend

    if ref.family == "openai-compatible":  # --via litellm to a server
        # Self-hosted servers need no key, but the OpenAI SDK under litellm insists on one.
        key = server_key(ref, settings.api_key) or "EMPTY"
        return LiteLLMBackend(f"openai/{ref.model}", ref.api_base, key, settings.timeout)
    return LiteLLMBackend(ref.model, ref.api_base, settings.api_key, settings.timeout)


register_backend("local", _local, in_process=True, identity=_local_identity, supports_n=False)
register_backend("openai-compatible", _openai_compatible)
register_backend("hosted", _hosted)
register_backend("litellm", _litellm)


@dataclass(frozen=True)
class Endpoint:
    """Where a served model's requests go (`LLM.endpoint`; batch mode sends its files there): the model
    name in request bodies, the base URL, the key for it and the timeout."""

    model: str
    api_base: str | None
    api_key: str | None
    timeout: float


def endpoint_of(ref: ModelRef, settings: BackendSettings) -> Endpoint:
    if ref.route is not None:  # a named provider: its own key variable only (providers.provider_key)
        key = provider_key(ref.route.provider, settings.api_key)
        return Endpoint(ref.route.wire_model, ref.route.api_base or None, key, settings.timeout)
    return Endpoint(ref.model, ref.api_base, server_key(ref, settings.api_key), settings.timeout)
