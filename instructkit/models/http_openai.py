"""A lean aiohttp client for OpenAI-compatible servers (vLLM, llama.cpp, Ollama, SGLang, OpenAI).

litellm spends about 1.8 ms of CPU per call, which caps a 2-core machine near 300 req/s; this
path does the minimum (one pooled session per event loop, bodies through `fastjson`) and reaches the
server's own limit. Errors are mapped to TransientError (retry) or ModelCallError (give up).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from .. import fastjson
from .limits import report_headers, retry_after_of
from .logprobs import LazyTop, TopText, split_tops
from .types import (
    Backend,
    Completion,
    CompletionBackend,
    EmbeddingBackend,
    GenParams,
    ModelCallError,
    TokenLogprob,
    TransientError,
    Usage,
)

RETRY_STATUSES = {408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524}
FINAL_STATUSES = (400, 401, 403, 404, 422)  # the request itself is wrong: a later run would fail alike


def chat_payload(model: str, messages: list[dict], params: GenParams, n: int) -> dict[str, Any]:
    """The OpenAI chat-completions body for these params (shared with the litellm and batch paths)."""
    body: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "max_tokens": params.max_tokens,
    }
    if n != 1:
        body["n"] = n
    if params.stop:
        body["stop"] = list(params.stop)
    if params.seed is not None:
        body["seed"] = params.seed
    if params.presence_penalty:
        body["presence_penalty"] = params.presence_penalty
    if params.frequency_penalty:
        body["frequency_penalty"] = params.frequency_penalty
    if params.logprobs or params.top_logprobs:
        body["logprobs"] = True
        if params.top_logprobs:
            body["top_logprobs"] = params.top_logprobs
    if params.json_schema is not None:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": params.json_schema, "strict": True},
        }
    return body


def completion_payload(model: str, prompt: str, params: GenParams, n: int) -> dict[str, Any]:
    """The OpenAI (legacy) completions body: the chat body's sampling options, the raw `prompt`, and
    `logprobs` as the number of alternatives per token (that API's form)."""
    body = chat_payload(model, [], params, n)
    del body["messages"]
    body.pop("top_logprobs", None)
    body.pop("response_format", None)
    body["prompt"] = prompt
    if params.logprobs or params.top_logprobs:
        body["logprobs"] = max(params.top_logprobs, 1)
    else:
        body.pop("logprobs", None)
    return body


def json_object_fallback(body: dict[str, Any], exc: object) -> dict[str, Any] | None:
    """The body with `response_format={"type": "json_object", "schema": ...}` when a server rejected
    the OpenAI `json_schema` form (llama-cpp-python's server accepts only the former); else None."""
    fmt = body.get("response_format") or {}
    if fmt.get("type") != "json_schema" or "response_format" not in str(exc):
        return None
    return {**body, "response_format": {"type": "json_object", "schema": fmt["json_schema"]["schema"]}}


def _chat_choice(choice: dict[str, Any]) -> tuple[str, list[TokenLogprob] | None]:
    """Text and token logprobs of one chat-completions choice."""
    text = (choice.get("message") or {}).get("content") or ""
    raw = choice.get("logprobs")
    if not raw or raw.get("content") is None:
        return text, None
    # The alternatives are turned into pairs only where a reader looks (LazyTop).
    return text, [TokenLogprob(t["token"], float(t["logprob"]), LazyTop(t.get("top_logprobs"))) for t in raw["content"]]


def _text_choice(choice: dict[str, Any]) -> tuple[str, list[TokenLogprob] | None]:
    """Text and token logprobs of one (legacy) completions choice: logprobs come as parallel lists,
    `tokens`, `token_logprobs` and `top_logprobs` ({token: logprob} per position)."""
    raw = choice.get("logprobs") or {}
    text = choice.get("text") or ""
    if raw.get("tokens") is None:
        return text, None
    tops = raw.get("top_logprobs") or [None] * len(raw["tokens"])
    return text, [
        TokenLogprob(tok, float(lp if lp is not None else 0.0),
                     sorted(((a, float(b)) for a, b in (top or {}).items()), key=lambda x: -x[1]))
        for tok, lp, top in zip(raw["tokens"], raw["token_logprobs"], tops)
    ]  # fmt: skip


def loads_lazy_tops(raw: bytes) -> dict[str, Any] | None:
    """A chat-completions body parsed without its tokens' top alternatives, each token's
    `top_logprobs` left as its JSON text for `LazyTop` to parse where it is read (`split_tops`);
    None when the body is not of that shape or the split does not check out (parse it whole)."""
    split = split_tops(raw)
    if split is None:
        return None
    body, tops = split
    try:
        data = fastjson.loads(body, small_ints=True)
        content = [t for c in data["choices"] for t in ((c.get("logprobs") or {}).get("content") or [])]
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    if len(content) != len(tops) or any(t.get("top_logprobs") != [] for t in content):
        return None
    for k, (token, top) in enumerate(zip(content, tops)):
        token["top_logprobs"] = TopText(top, raw, k)
    return data


def parse_choices(data: dict[str, Any], read: Any = _chat_choice) -> list[Completion]:
    """Completions from an OpenAI response body, each choice read by `read` (chat by default;
    `parse_text_choices` for the completions API). Raises TransientError on a malformed body."""
    try:
        choices = sorted(data["choices"], key=lambda c: c.get("index", 0))
        usage = data.get("usage") or {}
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        completion_tokens = int(usage.get("completion_tokens") or 0)
        out = []
        for i, choice in enumerate(choices):
            text, lps = read(choice)
            # Usage is per request; split completion tokens evenly, prompt tokens counted once.
            out.append(
                Completion(
                    text=text,
                    finish_reason=choice.get("finish_reason") or "stop",
                    logprobs=lps,
                    usage=Usage(prompt_tokens if i == 0 else 0, completion_tokens // max(len(choices), 1)),
                )
            )
        if not out:
            raise ValueError("no choices")
        return out
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise TransientError(f"malformed response body: {exc!r}") from exc


def parse_text_choices(data: dict[str, Any]) -> list[Completion]:
    """Completions from an OpenAI (legacy) completions response body."""
    return parse_choices(data, _text_choice)


class OpenAICompatibleBackend(Backend, CompletionBackend, EmbeddingBackend):
    """Chat, raw completions and embeddings against `{api_base}/chat/completions`, `/completions`
    and `/embeddings`."""

    kind = "openai-compatible"
    supports_n = True
    supports_json_schema = True  # response_format (json_schema, or the json_object form it learns)
    supports_penalties = True  # sent; the server applies them (vLLM, llama.cpp, OpenAI do)

    def __init__(self, model: str, api_base: str, api_key: str | None = None, timeout: float = 600.0):
        self.model = model
        self.model_id = model
        self.api_base = api_base.rstrip("/")
        self._api_key = api_key
        self.timeout = timeout
        self._sessions: dict[int, aiohttp.ClientSession] = {}
        self._json_object_schema = False  # learned: the server wants the json_object+schema form

    def _session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        session = self._sessions.get(id(loop))
        if session is None or session.closed:
            headers = {"Content-Type": "application/json", **self._auth_headers()}
            connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=30)
            session = aiohttp.ClientSession(
                headers=headers,
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                json_serialize=json.dumps,
            )
            self._sessions[id(loop)] = session
        return session

    def _auth_headers(self) -> dict[str, str]:
        """How the key is sent (OpenAI's bearer token; Azure's `api-key` header)."""
        return {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    def _scrub(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text

    async def _post(self, path: str, body: dict[str, Any], lazy_tops: bool = False) -> dict[str, Any]:
        url = f"{self.api_base}{path}"
        try:
            # A ready payload: aiohttp would otherwise look its type up in its payload registry per request.
            data = aiohttp.BytesPayload(fastjson.dumps(body), content_type="application/json")
            async with self._session().post(url, data=data) as resp:
                raw = await resp.read()
                report_headers(resp.headers)
                if resp.status in RETRY_STATUSES:
                    raise TransientError(
                        f"HTTP {resp.status}: {self._scrub(raw[:300].decode('utf-8', 'replace'))}",
                        status=resp.status,
                        retry_after=retry_after_of(resp.headers),
                    )
                if resp.status >= 400:
                    raise ModelCallError(
                        f"HTTP {resp.status}: {self._scrub(raw[:500].decode('utf-8', 'replace'))}",
                        retryable=resp.status not in FINAL_STATUSES,
                        status=resp.status,
                    )
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, asyncio.TimeoutError) as exc:
            raise TransientError(f"connection failed: {type(exc).__name__}: {self._scrub(str(exc))}") from exc
        if lazy_tops and (data := loads_lazy_tops(raw)) is not None:
            return data
        try:
            return fastjson.loads(raw, small_ints=True)
        except ValueError as exc:
            raise TransientError(f"malformed JSON body: {raw[:120]!r}") from exc

    async def chat(self, messages: list[dict], params: GenParams, n: int = 1) -> list[Completion]:
        body = chat_payload(self.model, messages, params, n)
        if self._json_object_schema and params.json_schema is not None:
            body = json_object_fallback(body, "response_format") or body
        try:
            data = await self._post("/chat/completions", body, lazy_tops=bool(params.top_logprobs))
        except ModelCallError as exc:
            fallback = json_object_fallback(body, exc)
            if fallback is None:
                raise
            self._json_object_schema = True
            data = await self._post("/chat/completions", fallback)
        return parse_choices(data)

    async def complete(self, prompt: str, params: GenParams, n: int = 1) -> list[Completion]:
        """A raw prompt through `{api_base}/completions` (no chat template on the server's side)."""
        return parse_text_choices(await self._post("/completions", completion_payload(self.model, prompt, params, n)))

    async def embed(self, texts: list[str]) -> list[list[float]]:
        data = await self._post("/embeddings", {"model": self.model, "input": texts})
        try:
            rows = sorted(data["data"], key=lambda d: d.get("index", 0))
            return [r["embedding"] for r in rows]
        except (KeyError, TypeError) as exc:
            raise TransientError(f"malformed embeddings body: {exc!r}") from exc

    async def aclose(self) -> None:
        for session in self._sessions.values():
            if not session.closed:
                await session.close()
        self._sessions.clear()
