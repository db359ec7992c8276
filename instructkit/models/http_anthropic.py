"""Anthropic's Messages API on plain aiohttp (`-m anthropic/MODEL`), in the documented shapes.

litellm spends several ms of CPU per Anthropic call translating to and from OpenAI's shapes
(bench/api_throughput.py measures it); this path sends the Messages body itself, through the same
pooled session as the OpenAI-compatible client (`http_openai.py`), and reads the reply into a
`Completion`. The API has no logprobs, no `n`, no seed and no penalties: a request for logprobs gets
a reply without them (the judges then read the text), samples are asked one at a time.
Errors: 429 (with `retry-after`), 5xx and 529 (overloaded) are transient, other 4xx final; the
`anthropic-ratelimit-*` headers of every reply go to the rate-limit gate.
"""

from __future__ import annotations

from typing import Any

from .http_openai import OpenAICompatibleBackend
from .types import Completion, GenParams, ModelCallError, TransientError, Usage

ANTHROPIC_VERSION = "2023-06-01"
OVERLOADED = 529  # the API is busy: try again later
# stop_reason -> finish_reason (OpenAI's words, which the rest of the project reads)
FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls",
          "refusal": "content_filter", "pause_turn": "stop"}  # fmt: skip


def messages_payload(model: str, messages: list[dict], params: GenParams) -> dict[str, Any]:
    """The Messages API body: system messages joined into `system`, the rest as they are. Temperature
    only, never top_p: Claude 4.5 and later refuse a request that sets both (a 400 for every row of
    Evol-Instruct's or Self-Instruct's defaults), and temperature is the one every method sets."""
    system = [str(m.get("content") or "") for m in messages if m.get("role") == "system"]
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": params.max_tokens,
        "messages": [{"role": m["role"], "content": m.get("content") or ""} for m in messages
                     if m.get("role") != "system"],
        "temperature": params.temperature,
    }  # fmt: skip
    if system:
        body["system"] = "\n\n".join(system)
    if params.stop:
        body["stop_sequences"] = list(params.stop)
    return body


def parse_message(data: dict[str, Any]) -> Completion:
    """A `Completion` from a Messages API reply (its text blocks joined). Raises TransientError on a
    malformed body."""
    try:
        text = "".join(block.get("text") or "" for block in data["content"] if block.get("type") == "text")
        usage = data.get("usage") or {}
        return Completion(text=text, finish_reason=FINISH.get(data.get("stop_reason") or "", "stop"),
                          usage=Usage(int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0)))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise TransientError(f"malformed Messages body: {exc!r}") from exc


class AnthropicBackend(OpenAICompatibleBackend):
    """Chat through `{api_base}/v1/messages` (x-api-key, anthropic-version); no raw completions or
    embeddings (the API has neither)."""

    kind = "anthropic"
    supports_n = False
    supports_json_schema = False  # asked by parse, validate and repair, as through litellm
    supports_penalties = False

    def _auth_headers(self) -> dict[str, str]:
        headers = {"anthropic-version": ANTHROPIC_VERSION}
        if self._api_key:
            headers["x-api-key"] = self._api_key
        return headers

    async def chat(self, messages: list[dict], params: GenParams, n: int = 1) -> list[Completion]:
        """One reply (`supports_n` is False: the facade asks each sample on its own)."""
        try:
            data = await self._post("/v1/messages", messages_payload(self.model, messages, params))
        except ModelCallError as exc:
            if exc.status != OVERLOADED:
                raise
            raise TransientError(str(exc), status=exc.status) from None
        return [parse_message(data)]

    async def complete(self, prompt: str, params: GenParams, n: int = 1) -> list[Completion]:
        raise ModelCallError(f"{self.model}: the Messages API takes chat messages only, not raw prompts",
                             retryable=False)  # fmt: skip

    async def embed(self, texts: list[str]) -> list[list[float]]:
        raise ModelCallError(f"{self.model}: Anthropic has no embeddings API", retryable=False)
