"""A loopback fake OpenAI-compatible server, for fault-injection tests and throughput benchmarks only
(tests/ is not installed: pytest puts this folder on sys.path, the benches add it themselves).

It never stands in for a model in behaviour tests (those use the real local model or llama.cpp's
server). It answers `/v1/chat/completions` (n, logprobs/top_logprobs, usage, JSON-schema replies),
`/v1/embeddings`, and Anthropic's `/v1/messages` (its headers, shapes, errors and
anthropic-ratelimit-* headers; the same chat gets the same reply text on both APIs) with
deterministic replies derived from the request, after a fixed latency,
and injects faults by rule: 429 with Retry-After, 5xx, timeouts, broken JSON bodies and
connections dropped mid-response. Every request is recorded (time, headers, body, fault).
With `rate_limit={"requests": N, "window": S, "style": "openai"|"anthropic"}` it also enforces a
fixed window of N chat requests per S seconds the way providers do: every reply carries the
remaining/reset headers of that style, and a request over the limit gets a 429 (recorded as fault
"rate_limit"). With `max_tokens_cut=True`, replies longer than the request's `max_tokens` (in
space-separated words) are cut there with finish_reason "length", as a real server does.
`rate_limit={..., "kind": "bucket", "start": F}` enforces a token bucket instead (OpenAI's way: it
holds `requests` and refills them over `window` seconds; `start` is the share it starts with); the
headers then say the limit, what is left and when the bucket is full again.
`max_in_flight=N` admits N requests at a time and answers the rest at once with a 429 and
`Retry-After: cap_retry_after` (no rate-limit headers: a concurrency cap, as gateways have).
`random_faults={"seed": S, "rules": [{"kind": "500", "p": 0.1}, ...]}` draws each request's fate
from a seeded generator (one rule at most, by its probability; rule fields as `Fault`).
`reply="score"` answers a judge's way ("4" on the first line, then `reply_words` words), and
logprobs are OpenAI's shape (token, logprob, bytes, top_logprobs; digits among the alternatives
of the first token).

It runs as a separate process (a raw asyncio HTTP/1.1 server, uvloop when installed) so it does
not compete with the client's event loop; one process sustains several thousand requests/s.

    with serve_fake(latency=0.2, faults=[Fault("429", match="X", times=1, retry_after=1)]) as url:
        llm = LLM("fake-model", api_base=url)          # url is a str: http://127.0.0.1:PORT/v1
        ...
        url.count("X")                                  # chat requests whose prompt contains X

This module imports only the standard library: the server process runs this file directly, without
importing the instructkit package.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import math
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

FAULT_KINDS = ("429", "500", "status", "timeout", "broken_json", "drop")
CONTROL = "/_fake"


@dataclass
class Fault:
    """One fault rule; the first rule that applies to a request decides its fate.

    kind: "429" (with `retry_after`), "500", "status" (any `status` with `body`), "timeout"
    (answer only after `delay` seconds), "broken_json" (200 with a truncated body) or "drop"
    (send part of the response, then close the socket).
    A rule applies when every given condition holds: `match` is a substring of the prompt (all
    message contents joined), `at` holds the request's global index (0-based, chat and embeddings),
    and the prompt has been seen fewer than `times` times before (the first `times` attempts fail;
    None means always).
    """

    kind: str
    match: str | None = None
    times: int | None = None
    at: list[int] | None = None
    retry_after: float | None = None
    status: int = 500
    body: str | None = None
    delay: float = 30.0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; one of {FAULT_KINDS}")


# ----- deterministic replies (shared by the server and by tests that predict them) ---------------


def prompt_text(messages: list[dict]) -> str:
    """All message contents joined by newlines (text parts of multi-part contents included)."""
    parts = []
    for m in messages or []:
        content = m.get("content")
        if isinstance(content, list):
            content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        parts.append(str(content or ""))
    return "\n".join(parts)


def reply_text(prompt: str, index: int = 0, seed: Any = None) -> str:
    """The fake answer for one prompt and sample index: a short hash, so tests can predict it."""
    digest = hashlib.sha256(f"{prompt}|{seed}".encode()).hexdigest()[:12]
    return f"ok {digest} {index}"


def example_for_schema(schema: dict) -> Any:
    """A small value that validates against common JSON schemas (object, array, enum, scalars)."""
    if not isinstance(schema, dict):
        return None
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for combo in ("anyOf", "oneOf", "allOf"):
        if schema.get(combo):
            return example_for_schema(schema[combo][0])
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        return {k: example_for_schema(v) for k, v in props.items()}
    if kind == "array":
        n = int(schema.get("minItems", 0))
        return [example_for_schema(schema.get("items", {})) for _ in range(n)]
    if kind == "integer":
        return int(schema.get("minimum", 1))
    if kind == "number":
        return float(schema.get("minimum", 1.0))
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return "x" * int(schema.get("minLength", 1))


def reply_tokens(prompt: str, index: int, seed: Any, style: str, words: int) -> list[str]:
    """The fake answer's tokens: `reply_text` split at spaces, or (style "score") a judge's reply, a
    score from 1 to 5 on its own line and then `words` words, all derived from the prompt."""
    if style != "score":
        return reply_text(prompt, index, seed).split(" ")
    digest = hashlib.sha256(f"{prompt}|{seed}|{index}".encode()).digest()
    letters = "abcdefghijklmnopqrstuvwxyz"  # the words are the same in every reply: their logprobs serialise once
    return [str(1 + digest[0] % 5), "\n"] + [" " + letters[j % 26] * (1 + j % 3) for j in range(words)]


def token_logprobs(tokens: list[str], top: int, digits: bool = False) -> list[dict]:
    """OpenAI's `logprobs.content` for these tokens: each with its bytes and `top` alternatives (with
    `digits`, the other digits first where the token is a digit, so a score's distribution is readable)."""
    content = []
    for j, tok in enumerate(tokens):
        lp = -0.05 * (j + 1)
        others = [d for d in "54321" if d != tok] if digits and tok.isdigit() else []
        others += [f"alt{k}" for k in range(max(0, top - 1 - len(others)))]
        alts = [{"token": tok, "logprob": lp, "bytes": list(tok.encode())}]
        alts += [{"token": o, "logprob": lp - 1.0 - k, "bytes": list(o.encode())} for k, o in enumerate(others)]
        content.append({"token": tok, "logprob": lp, "bytes": list(tok.encode()), "top_logprobs": alts[:top]})
    return content


@functools.lru_cache(maxsize=256)
def token_logprobs_json(tokens: tuple[str, ...], top: int, digits: bool) -> str:
    """`token_logprobs` serialised once per reply shape (the server answers thousands a second)."""
    return json.dumps(token_logprobs(list(tokens), top, digits))


def chat_body(req: dict, model_default: str, cut: bool = False, style: str = "hash", words: int = 0,
              raw_logprobs: list[str] | None = None) -> dict:
    """One chat-completions body. With `raw_logprobs` (a list), each choice's `logprobs.content` is a
    placeholder string and its JSON is appended there, to be spliced into the serialised body."""
    messages = req.get("messages") or []
    prompt = prompt_text(messages)
    n = int(req.get("n") or 1)
    fmt = req.get("response_format") or {}
    schema = (fmt.get("json_schema") or {}).get("schema") if fmt.get("type") == "json_schema" else fmt.get("schema")
    top = int(req.get("top_logprobs") or 0)
    choices = []
    completion_tokens = 0
    for i in range(n):
        if schema is not None:
            tokens = json.dumps(example_for_schema(schema)).split(" ")
        else:
            tokens = reply_tokens(prompt, i, req.get("seed"), style, words)
        joiner = "" if style == "score" and schema is None else " "
        text = joiner.join(tokens)
        finish = "stop"
        if cut and req.get("max_tokens") is not None and len(tokens) > int(req["max_tokens"]):
            tokens, finish = tokens[: int(req["max_tokens"])], "length"
            text = joiner.join(tokens)
        completion_tokens += len(tokens)
        choice: dict[str, Any] = {
            "index": i,
            "message": {"role": "assistant", "content": text},
            "finish_reason": finish,
            "logprobs": None,
        }
        if req.get("logprobs") and raw_logprobs is not None:
            raw_logprobs.append(token_logprobs_json(tuple(tokens), top, style == "score"))
            choice["logprobs"] = {"content": f"@@logprobs{i}@@"}
        elif req.get("logprobs"):
            choice["logprobs"] = {"content": token_logprobs(tokens, top, digits=style == "score")}
        choices.append(choice)
    prompt_tokens = max(1, len(prompt) // 4)
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 0,
        "model": req.get("model") or model_default,
        "service_tier": "default",  # as OpenAI's replies carry it (litellm's Groq path reads it)
        "system_fingerprint": "fp_fake",
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def messages_prompt(req: dict) -> str:
    """An Anthropic Messages request's prompt text: its `system` (a string or text blocks) first, then
    the messages, joined as `prompt_text` joins chat messages (the same chat gets the same reply)."""
    system = req.get("system")
    head = [{"role": "system", "content": system}] if system else []
    return prompt_text(head + list(req.get("messages") or []))


def messages_body(req: dict, model_default: str) -> dict:
    """An Anthropic Messages API reply: text blocks, stop_reason (max_tokens where the reply is cut at
    the request's `max_tokens` words) and usage in input/output tokens."""
    text = reply_text(messages_prompt(req), 0, None)
    words = text.split(" ")
    stop = "end_turn"
    if len(words) > int(req["max_tokens"]):
        words, stop = words[: int(req["max_tokens"])], "max_tokens"
    return {"id": "msg_fake", "type": "message", "role": "assistant", "model": req.get("model") or model_default,
            "content": [{"type": "text", "text": " ".join(words)}], "stop_reason": stop, "stop_sequence": None,
            "usage": {"input_tokens": max(1, len(messages_prompt(req)) // 4), "output_tokens": len(words)}}


def messages_refusal(req: dict, headers: dict[str, str]) -> tuple[int, dict] | None:
    """The Messages API's own refusals, checked before anything else: no key (401), no
    anthropic-version, no max_tokens or no messages (400); None for a well-formed request."""
    def error(kind: str, message: str) -> dict:
        return {"type": "error", "error": {"type": kind, "message": message}}

    if not headers.get("x-api-key"):
        return 401, error("authentication_error", "x-api-key header is required")
    if not headers.get("anthropic-version"):
        return 400, error("invalid_request_error", "anthropic-version: header is required")
    if not isinstance(req.get("max_tokens"), int) or not req.get("messages"):
        return 400, error("invalid_request_error", "max_tokens: Field required" if "max_tokens" not in req
                          else "messages: at least one message is required")
    if any(m.get("role") not in ("user", "assistant") for m in req["messages"]):
        return 400, error("invalid_request_error", "messages: roles must be user or assistant (system goes in `system`)")
    return None


def embedding_of(text: str, dim: int = 8) -> list[float]:
    """The fake embedding of one text: unit-norm floats from its hash."""
    raw = hashlib.sha256(text.encode()).digest() * (dim // 32 + 1)
    vec = [(b - 127.5) / 127.5 for b in raw[:dim]]
    norm = sum(v * v for v in vec) ** 0.5 or 1.0
    return [v / norm for v in vec]


def embed_body(req: dict, dim: int) -> dict:
    inputs = req.get("input")
    texts = [inputs] if isinstance(inputs, str) else list(inputs or [])
    data = [{"object": "embedding", "index": i, "embedding": embedding_of(str(t), dim)} for i, t in enumerate(texts)]
    tokens = sum(max(1, len(str(t)) // 4) for t in texts)
    return {
        "object": "list",
        "data": data,
        "model": req.get("model") or "fake-embed",
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


# ----- the server process ----------------------------------------------------------------------

def rate_limit_headers(style: str, limit: int, remaining: int, reset_s: float) -> dict[str, str]:
    """The headers a provider of `style` sends with `remaining` of `limit` requests, refilled in `reset_s`."""
    if style == "anthropic":
        from datetime import datetime, timezone

        at = datetime.fromtimestamp(time.time() + reset_s, timezone.utc).isoformat().replace("+00:00", "Z")
        return {"anthropic-ratelimit-requests-limit": str(limit),
                "anthropic-ratelimit-requests-remaining": str(remaining),
                "anthropic-ratelimit-requests-reset": at}
    reset = f"{math.ceil(reset_s * 1000)}ms" if reset_s < 1 else f"{math.ceil(reset_s * 1000) / 1000:.3f}s"
    return {"x-ratelimit-limit-requests": str(limit), "x-ratelimit-remaining-requests": str(remaining),
            "x-ratelimit-reset-requests": reset}


REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests",
           500: "Internal Server Error", 529: "Overloaded"}


def http_response(status: int, body: bytes, headers: dict[str, str] | None = None, close: bool = False) -> bytes:
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    head = (
        f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}"
        f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n"
    )
    return head.encode("latin-1") + body


class ServerState:
    """The server's mutable state: config, fault rules, the request log and per-prompt attempt counts."""

    def __init__(self, config: dict[str, Any]):
        self.config: dict[str, Any] = {"latency": 0.0, "model": "fake-model", "embed_dim": 8, "record": True,
                                       "rate_limit": None, "max_tokens_cut": False, "max_in_flight": None,
                                       "cap_retry_after": 1.0, "random_faults": None, "reply": "hash",
                                       "reply_words": 0}
        self.active = 0  # chat requests admitted and not yet answered (the concurrency cap counts them)
        self.bucket: float | None = None  # a "bucket" rate limit's level
        self.bucket_at = 0.0
        self.random: Any = None
        self.faults: list[Fault] = []
        self.requests: list[dict[str, Any]] = []
        self.seen: dict[str, int] = {}
        self.index = 0
        self.window_start: float | None = None
        self.window_used = 0
        self.configure(config)

    def rate_check(self, style: str | None = None) -> tuple[bool, dict[str, str], float]:
        """Count one chat request against `rate_limit`: (allowed, headers to send, seconds to reset);
        `style` overrides the rule's (the Messages API always answers in Anthropic's headers)."""
        rule = self.config.get("rate_limit")
        if not rule:
            return True, {}, 0.0
        now = time.monotonic()
        window = float(rule.get("window", 1.0))
        if rule.get("kind") == "bucket":
            return self.bucket_check(rule, now)
        if self.window_start is None or now >= self.window_start + window:
            self.window_start, self.window_used = now, 0
        reset = self.window_start + window - now
        limit = int(rule["requests"])
        allowed = self.window_used < limit
        self.window_used += int(allowed)
        style = style or rule.get("style", "openai")
        return allowed, rate_limit_headers(style, limit, limit - self.window_used, reset), reset

    def bucket_check(self, rule: dict[str, Any], now: float) -> tuple[bool, dict[str, str], float]:
        """A token bucket of `requests` refilled over `window` seconds: (allowed, headers, retry-after)."""
        limit = float(rule["requests"])
        rate = limit / float(rule.get("window", 60.0))
        if self.bucket is None:
            self.bucket, self.bucket_at = limit * float(rule.get("start", 1.0)), now
        self.bucket = min(limit, self.bucket + (now - self.bucket_at) * rate)
        self.bucket_at = now
        allowed = self.bucket >= 1.0
        self.bucket -= float(allowed)
        headers = rate_limit_headers(rule.get("style", "openai"), int(limit), int(self.bucket),
                                     (limit - self.bucket) / rate)  # fmt: skip
        return allowed, headers, (1.0 - self.bucket) / rate

    def configure(self, config: dict[str, Any]) -> None:
        config = dict(config)
        if config.pop("reset", False):
            self.requests.clear()
            self.seen.clear()
            self.index = 0
            self.window_start, self.window_used = None, 0
            self.bucket = None
        if "faults" in config:
            self.faults = [Fault(**f) for f in config.pop("faults") or []]
        if "random_faults" in config or "rate_limit" in config:
            self.random, self.bucket = None, None
        self.config.update(config)

    def random_rule(self) -> Fault | None:
        """One request's fate under `random_faults`: a rule drawn by its probability, or none."""
        spec = self.config.get("random_faults")
        if not spec:
            return None
        if self.random is None:
            import random

            self.random = random.Random(spec.get("seed", 0))
        draw = self.random.random()
        for rule in spec["rules"]:
            fields = {k: v for k, v in rule.items() if k != "p"}
            draw -= float(rule["p"])
            if draw < 0:
                return Fault(**fields)
        return None

    def admit(self, prompt: str) -> tuple[int, int, Fault | None]:
        """Number one more request: (request index, attempt for this prompt, fault rule to apply)."""
        index = self.index
        self.index += 1
        attempt = self.seen.get(prompt, 0)
        self.seen[prompt] = attempt + 1
        return index, attempt, self.rule_for(index, prompt, attempt)

    def rule_for(self, index: int, prompt: str, attempt: int) -> Fault | None:
        for rule in self.faults:
            if rule.at is not None and index not in rule.at:
                continue
            if rule.match is not None and rule.match not in prompt:
                continue
            if rule.times is not None and attempt >= rule.times:
                continue
            return rule
        return self.random_rule()


class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection (Content-Length bodies; no pipelining needed by clients)."""

    def __init__(self, state: ServerState):
        self.state = state
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = self.buf[:end].decode("latin-1").split("\r\n")
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if "chunked" in headers.get("transfer-encoding", ""):
                # Clients of OpenAI-style APIs send Content-Length; say so rather than misparse.
                self.send(http_response(411, b'{"error": {"message": "send Content-Length"}}', close=True), abort=True)
                return
            length = int(headers.get("content-length") or 0)
            if len(self.buf) < end + 4 + length:
                return
            body = self.buf[end + 4 : end + 4 + length]
            self.buf = self.buf[end + 4 + length :]
            method, target = (lines[0].split(" ") + ["", ""])[:2]
            self.handle(method, target, headers, body)

    def send_later(self, delay: float, data: bytes, abort: bool = False, admitted: bool = False) -> None:
        if delay > 0:
            asyncio.get_running_loop().call_later(delay, self.send, data, abort, admitted)
        else:
            self.send(data, abort, admitted)

    def send(self, data: bytes, abort: bool = False, admitted: bool = False) -> None:
        if admitted:
            self.state.active -= 1
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.write(data)
        if abort:
            transport.abort()

    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> None:
        state = self.state
        path = target.split("?", 1)[0]
        close = headers.get("connection", "").lower() == "close"
        if path.startswith(CONTROL):
            self.control(path, body, close)
            return
        if path.endswith("/models"):
            data = {"object": "list", "data": [{"id": state.config["model"], "object": "model"}]}
            self.send(http_response(200, json.dumps(data).encode(), close=close))
            return
        try:
            req = json.loads(body) if body else {}
        except ValueError:
            self.send(http_response(400, b'{"error": {"message": "request body is not JSON"}}', close=close))
            return
        is_chat = path.endswith("/chat/completions")
        is_messages = path.endswith("/v1/messages")  # Anthropic's Messages API
        if is_messages:
            refused = messages_refusal(req, headers)
            if refused is not None:
                self.send(http_response(refused[0], json.dumps(refused[1]).encode(), close=close))
                return
            prompt = messages_prompt(req)
        elif is_chat:
            prompt = prompt_text(req.get("messages") or [])
        elif path.endswith("/embeddings"):
            inputs = req.get("input")
            prompt = inputs if isinstance(inputs, str) else "\n".join(map(str, inputs or []))
        else:
            self.send(http_response(404, b'{"error": {"message": "not found"}}', close=close))
            return
        cap = state.config.get("max_in_flight")
        if is_chat and cap is not None and state.active >= int(cap):  # over the cap: refused at once
            if state.config["record"]:
                state.requests.append({"i": -1, "t": time.time(), "path": path, "headers": headers, "body": req,
                                       "prompt": prompt, "attempt": -1, "fault": "cap"})  # fmt: skip
            err = b'{"error": {"message": "too many concurrent requests (fake)", "type": "rate_limit_error"}}'
            self.send(http_response(429, err, {"Retry-After": f"{state.config['cap_retry_after']:g}"}, close=close),
                      abort=close)  # fmt: skip
            return
        admitted = is_chat and cap is not None
        state.active += int(admitted)
        index, attempt, rule = state.admit(prompt)
        allowed, rate_headers, reset = (state.rate_check("anthropic" if is_messages else None)
                                        if is_chat or is_messages else (True, {}, 0.0))
        if not allowed:
            rule = Fault("429", retry_after=round(reset, 3))
        if state.config["record"]:
            state.requests.append(
                {
                    "i": index,
                    "t": time.time(),
                    "path": path,
                    "query": target.partition("?")[2],
                    "headers": headers,
                    "body": req,
                    "prompt": prompt,
                    "attempt": attempt,
                    "fault": ("rate_limit" if not allowed else rule.kind) if rule else None,
                }
            )
        latency = float(state.config["latency"])
        config = state.config
        if rule is None or rule.kind == "timeout":
            cut = bool(config["max_tokens_cut"])
            raw: list[str] = []
            if is_messages:
                out = messages_body(req, config["model"])
            else:
                out = (chat_body(req, config["model"], cut, config["reply"], int(config["reply_words"]), raw) if is_chat
                       else embed_body(req, int(config["embed_dim"])))  # fmt: skip
            text = json.dumps(out)
            for i, lps in enumerate(raw):
                text = text.replace(f'"@@logprobs{i}@@"', lps, 1)
            delay = latency + (rule.delay if rule else 0.0)
            self.send_later(delay, http_response(200, text.encode(), rate_headers, close=close), abort=close,
                            admitted=admitted)  # fmt: skip
        elif rule.kind == "429":
            extra = {"Retry-After": f"{rule.retry_after:g}"} if rule.retry_after is not None else {}
            extra.update(rate_headers)
            err = b'{"error": {"message": "rate limited (fake)", "type": "rate_limit_error"}}'
            if is_messages:
                err = b'{"type": "error", "error": {"type": "rate_limit_error", "message": "rate limited (fake)"}}'
            self.send_later(latency, http_response(429, err, extra, close=close), abort=close, admitted=admitted)
        elif rule.kind in ("500", "status"):
            status = 500 if rule.kind == "500" else rule.status
            text = rule.body if rule.body is not None else '{"error": {"message": "server error (fake)"}}'
            text = text.replace("{authorization}", headers.get("authorization", "") or headers.get("x-api-key", "")
                                or headers.get("api-key", ""))
            self.send_later(latency, http_response(status, text.encode(), close=close), abort=close, admitted=admitted)
        elif rule.kind == "broken_json":
            full = json.dumps(chat_body(req, config["model"]) if is_chat else embed_body(req, 8)).encode()
            self.send_later(latency, http_response(200, full[: len(full) // 2], close=close), abort=close,
                            admitted=admitted)  # fmt: skip
        else:  # drop: headers promise a body, part of it comes, then the socket closes
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 4096\r\n\r\n"
            self.send_later(latency, head + b'{"id": "chatcmpl-fa', abort=True, admitted=admitted)

    def control(self, path: str, body: bytes, close: bool) -> None:
        state = self.state
        if path == f"{CONTROL}/requests":
            out = json.dumps(state.requests).encode()
        elif path == f"{CONTROL}/config":
            state.configure(json.loads(body) if body else {})
            out = json.dumps({"ok": True}).encode()
        else:
            self.send(http_response(404, b"{}", close=close))
            return
        self.send(http_response(200, out, close=close))


async def serve(config: dict[str, Any], state_type: type[ServerState] = ServerState,
                connection_type: type[Connection] = Connection) -> None:
    """Serve on 127.0.0.1 (`config["port"]`, 0: any free port) and announce `LISTENING <port>` on stdout."""
    state = state_type(config)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: connection_type(state), "127.0.0.1", int(config.pop("port", 0)),
                                      backlog=4096)
    print(f"LISTENING {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str], state_type: type[ServerState] = ServerState,
         connection_type: type[Connection] = Connection) -> None:
    """The server process: `python FILE '{config json}'` (uvloop when installed)."""
    config = json.loads(argv[1]) if len(argv) > 1 else {}
    try:
        import uvloop  # type: ignore[import-not-found]

        uvloop.run(serve(config, state_type, connection_type))
    except ImportError:
        asyncio.run(serve(config, state_type, connection_type))


# ----- the client-side handle --------------------------------------------------------------------


class FakeServer(str):
    """The base URL (`http://127.0.0.1:PORT/v1`) plus helpers to reconfigure and inspect the server."""

    process: subprocess.Popen

    def __new__(cls, url: str, process: subprocess.Popen) -> FakeServer:
        obj = super().__new__(cls, url)
        obj.process = process
        return obj

    def __reduce__(self) -> tuple:
        return (str, (str(self),))  # pickles (e.g. into worker processes) as the plain URL

    @property
    def url(self) -> str:
        return str(self)

    @property
    def root(self) -> str:
        return str(self).rsplit("/v1", 1)[0]

    def _call(self, path: str, payload: Any = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(self.root + path, data=data, method="GET" if data is None else "POST")
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())

    def configure(
        self,
        *,
        faults: list[Fault] | None = None,
        latency: float | None = None,
        reset: bool = False,
        **config: Any,
    ) -> None:
        """Change fault rules and settings; `reset` also forgets recorded requests and attempt counts."""
        payload: dict[str, Any] = dict(config, reset=reset)
        if faults is not None:
            payload["faults"] = [asdict(f) for f in faults]
        if latency is not None:
            payload["latency"] = latency
        self._call(f"{CONTROL}/config", payload)

    def reset(self) -> None:
        """Forget recorded requests and per-prompt attempt counts (fault rules stay)."""
        self._call(f"{CONTROL}/config", {"reset": True})

    def requests(self, path: str | None = "/v1/chat/completions") -> list[dict[str, Any]]:
        """Every recorded request (oldest first), for one path or (path=None) all of them."""
        rows = self._call(f"{CONTROL}/requests")
        return rows if path is None else [r for r in rows if r["path"] == path]

    def count(self, contains: str | None = None, path: str | None = "/v1/chat/completions") -> int:
        """How many requests were received (whose prompt contains `contains`, when given)."""
        return sum(1 for r in self.requests(path) if contains is None or contains in r["prompt"])


@contextlib.contextmanager
def serve_fake(
    faults: list[Fault] | None = None,
    latency: float = 0.0,
    *,
    rate_limit: dict[str, Any] | None = None,
    max_tokens_cut: bool = False,
    max_in_flight: int | None = None,
    random_faults: dict[str, Any] | None = None,
    reply: str = "hash",
    reply_words: int = 0,
    port: int = 0,
    model: str = "fake-model",
    embed_dim: int = 8,
    record: bool = True,
    startup_timeout: float = 30.0,
) -> Iterator[FakeServer]:
    """Start the fake server in its own process on 127.0.0.1; yield its base URL (a `FakeServer`)."""
    config = {
        "faults": [asdict(f) for f in faults or []],
        "latency": latency,
        "port": port,
        "model": model,
        "embed_dim": embed_dim,
        "record": record,
        "rate_limit": rate_limit,
        "max_tokens_cut": max_tokens_cut,
        "max_in_flight": max_in_flight,
        "random_faults": random_faults,
        "reply": reply,
        "reply_words": reply_words,
    }
    with server_process(__file__, config, FakeServer, "fake server", startup_timeout) as url:
        yield url


@contextlib.contextmanager
def server_process(script: str, config: dict[str, Any], handle: type[FakeServer], what: str,
                   startup_timeout: float = 30.0) -> Iterator[Any]:
    """Run `script` (a fake server module) in its own process with `config`; yield `handle(url, process)`,
    and stop the process on exit."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHONPATH")}
    proc = subprocess.Popen(
        [sys.executable, "-u", os.path.abspath(script), json.dumps(config)],
        stdout=subprocess.PIPE,
        stderr=None,
        env=env,
        text=True,
    )
    try:
        port = wait_listening(proc, startup_timeout, what)
        yield handle(f"http://127.0.0.1:{port}/v1", proc)
    finally:
        stop_process(proc)
        if proc.stdout is not None:
            proc.stdout.close()


def wait_listening(proc: subprocess.Popen, timeout: float, what: str = "server") -> int:
    """The port a child server announces with a `LISTENING <port>` line on its (text) stdout."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    line = ""
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("LISTENING") or not line:
            break
    if not line.startswith("LISTENING"):
        raise RuntimeError(f"{what} did not start (exit code {proc.poll()})")
    return int(line.split()[1])


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM a child process, then SIGKILL it if it has not exited after `timeout` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


if __name__ == "__main__":
    main(sys.argv)
