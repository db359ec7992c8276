"""Every hosted provider through litellm (OpenAI, Anthropic, Gemini, Bedrock, Mistral, ...).

litellm is imported lazily (it is slow to import) and always with its local cost map, so nothing
reaches for the internet. Provider errors are mapped to TransientError or ModelCallError.
"""

from __future__ import annotations

import os
from typing import Any

from .http_openai import (
    FINAL_STATUSES,
    chat_payload,
    completion_payload,
    json_object_fallback,
    parse_choices,
    parse_text_choices,
)
from .limits import report_headers, retry_after_of
from .pricing import import_litellm
from .types import (
    Backend,
    Completion,
    CompletionBackend,
    EmbeddingBackend,
    GenParams,
    ModelCallError,
    TransientError,
)

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


PROVIDER_PREFIX = "llm_provider-"


def provider_headers(headers: Any) -> dict[str, Any]:
    """The provider's own headers where litellm passes them on (`llm_provider-` prefixed), else the
    headers as given. Where the provider sent `anthropic-ratelimit-*`, litellm's `x-ratelimit-*`
    copies of them are left out: they drop the reset time, which would then read as a minute."""
    try:
        items = {str(k).lower(): v for k, v in headers.items()}
    except (AttributeError, TypeError):
        return {}
    own = {k[len(PROVIDER_PREFIX) :]: v for k, v in items.items() if k.startswith(PROVIDER_PREFIX)} or items
    if any(k.startswith("anthropic-ratelimit-") for k in own):
        own = {k: v for k, v in own.items() if not k.startswith("x-ratelimit-")}
    return own


def error_headers(exc: Exception) -> dict[str, Any]:
    """The provider's response headers carried by a litellm exception (rate limits, retry-after)."""
    for headers in (getattr(exc, "litellm_response_headers", None),
                    getattr(getattr(exc, "response", None), "headers", None)):  # fmt: skip
        if headers and (found := provider_headers(headers)):
            return found
    return {}


def report_response_headers(response: Any) -> None:
    """Hand the provider's headers of a litellm response to the rate-limit gate."""
    hidden = getattr(response, "_hidden_params", None) or {}
    headers = hidden.get("additional_headers") if isinstance(hidden, dict) else None
    report_headers(provider_headers(headers) if headers else None)


class LiteLLMBackend(Backend, CompletionBackend, EmbeddingBackend):
    """Chat, raw completions and embeddings through `litellm.acompletion` / `atext_completion` /
    `aembedding`."""

    kind = "litellm"
    supports_n = True

    def __init__(self, model: str, api_base: str | None = None, api_key: str | None = None, timeout: float = 600.0,
                 *, extra: dict[str, Any] | None = None, json_schema: bool | None = None,
                 penalties: bool | None = None):
        """`extra`: more litellm arguments (Azure's api_version); `json_schema` / `penalties`: what the
        provider takes when the caller knows it (named providers, `providers.py`), else decided here."""
        self.model = model
        self.model_id = model
        self.api_base = api_base
        # A self-hosted OpenAI-compatible server (an api_base) takes response_format; other hosted
        # providers are asked by parse, validate and repair.
        self.supports_json_schema = api_base is not None if json_schema is None else json_schema
        self._api_key = api_key
        self.timeout = timeout
        self._extra = dict(extra or {})
        import_litellm()  # slow: paid before the first request leaves, not during it
        self._penalties: bool | None = penalties

    @property
    def supports_penalties(self) -> bool:
        """Whether litellm maps presence/frequency penalty for this provider (Anthropic and Bedrock's
        Claude, for instance, have none); computed once from litellm's own table."""
        if self._penalties is None:
            litellm = import_litellm()
            try:
                model, provider, _, _ = litellm.get_llm_provider(self.model, api_base=self.api_base)
                supported = litellm.get_supported_openai_params(model=model, custom_llm_provider=provider) or []
            except Exception:  # a model litellm cannot place: send nothing it may reject
                supported = []
            self._penalties = "presence_penalty" in supported and "frequency_penalty" in supported
        return self._penalties

    def _kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"timeout": self.timeout, "num_retries": 0, **self._extra}
        if self.api_base:
            kwargs["api_base"] = self.api_base
        if self._api_key:
            kwargs["api_key"] = self._api_key
        return kwargs

    def _scrub(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text

    def _map_error(self, exc: Exception) -> ModelCallError:
        litellm = import_litellm()
        status = getattr(exc, "status_code", None)
        msg = self._scrub(f"{type(exc).__name__}: {exc}")[:500]
        transient = (
            litellm.RateLimitError,
            litellm.Timeout,
            litellm.APIConnectionError,
            litellm.InternalServerError,
            litellm.ServiceUnavailableError,
        )
        headers = error_headers(exc)
        report_headers(headers)
        if isinstance(exc, transient) or (isinstance(status, int) and (status == 429 or status >= 500)):
            return TransientError(msg, status=status, retry_after=retry_after_of(headers))
        final = isinstance(exc, litellm.AuthenticationError) or status in FINAL_STATUSES  # as on the HTTP path
        return ModelCallError(msg, retryable=not final, status=status)

    async def chat(self, messages: list[dict], params: GenParams, n: int = 1) -> list[Completion]:
        litellm = import_litellm()
        body = chat_payload(self.model, messages, params, n)
        kwargs = self._kwargs()
        try:
            try:
                response = await litellm.acompletion(**body, **kwargs)
            except Exception as exc:
                fallback = json_object_fallback(body, exc)
                if fallback is None:
                    raise
                response = await litellm.acompletion(**fallback, **kwargs)
        except Exception as exc:  # litellm raises many provider-specific types
            raise self._map_error(exc) from exc
        report_response_headers(response)
        data = response.model_dump() if hasattr(response, "model_dump") else dict(response)
        return parse_choices(data)

    async def complete(self, prompt: str, params: GenParams, n: int = 1) -> list[Completion]:
        """A raw prompt through `litellm.atext_completion` (the provider's completions endpoint)."""
        litellm = import_litellm()
        try:
            response = await litellm.atext_completion(
                **completion_payload(self.model, prompt, params, n), **self._kwargs()
            )
        except Exception as exc:
            raise self._map_error(exc) from exc
        report_response_headers(response)
        data = response.model_dump() if hasattr(response, "model_dump") else dict(response)
        return parse_text_choices(data)

    async def embed(self, texts: list[str]) -> list[list[float]]:
        litellm = import_litellm()
        kwargs: dict[str, Any] = {"timeout": self.timeout}
        if self.api_base:
            kwargs["api_base"] = self.api_base
        if self._api_key:
            kwargs["api_key"] = self._api_key
        try:
            response = await litellm.aembedding(model=self.model, input=texts, **kwargs)
        except Exception as exc:
            raise self._map_error(exc) from exc
        rows = sorted(response.data, key=lambda d: d["index"] if isinstance(d, dict) else d.index)
        return [r["embedding"] if isinstance(r, dict) else r.embedding for r in rows]

    async def aclose(self) -> None:
        return None
