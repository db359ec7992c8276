"""The backends of named hosted providers (`providers.py` says which path a spec takes and why)."""

from __future__ import annotations

from typing import Any

from .http_openai import OpenAICompatibleBackend
from .providers import AZURE_API_VERSION, LITELLM, Route, provider_key
from .types import Backend


class AzureOpenAIBackend(OpenAICompatibleBackend):
    """Azure OpenAI: the deployment's URL (`{endpoint}/openai/deployments/{name}`), `api-version` on
    every request, the key in an `api-key` header."""

    kind = "azure-openai"

    def __init__(self, deployment: str, endpoint: str, api_key: str | None, timeout: float, api_version: str):
        super().__init__(deployment, f"{endpoint}/openai/deployments/{deployment}", api_key, timeout)
        self.api_version = api_version

    def _auth_headers(self) -> dict[str, str]:
        return {"api-key": self._api_key} if self._api_key else {}

    async def _post(self, path: str, body: dict[str, Any], lazy_tops: bool = False) -> dict[str, Any]:
        return await super()._post(f"{path}?api-version={self.api_version}", body, lazy_tops)


def named_backend(spec: str, route: Route, api_key: str | None, timeout: float) -> Backend:
    """The backend of a named provider's spec on its route: the fast client its API takes, or litellm
    with the same URL and key. What the provider's API takes (JSON schema, penalties) is set from
    the table on both paths alike."""
    provider = route.provider
    key = provider_key(provider, api_key)
    backend: Backend
    if route.path == LITELLM:
        from .litellm_backend import LiteLLMBackend

        extra: dict[str, Any] = {"api_version": route.api_version} if route.api_version else {}
        if provider.api == "anthropic":  # no logprobs there: a reply without them, as on the fast path
            extra["drop_params"] = True
        return LiteLLMBackend(spec, route.api_base or None, key, timeout, extra=extra,
                              json_schema=provider.json_schema, penalties=provider.penalties)
    elif provider.api == "anthropic":
        from .http_anthropic import AnthropicBackend

        backend = AnthropicBackend(route.wire_model, route.api_base, key, timeout)
    elif provider.api == "azure":
        backend = AzureOpenAIBackend(route.wire_model, route.api_base, key, timeout, route.api_version or AZURE_API_VERSION)
    else:
        backend = OpenAICompatibleBackend(route.wire_model, route.api_base, key, timeout)
    backend.supports_json_schema = provider.json_schema
    backend.supports_penalties = provider.penalties
    return backend
