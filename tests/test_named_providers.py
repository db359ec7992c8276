"""Named hosted providers (`-m openai/NAME`, `groq/NAME`, `azure/DEPLOYMENT`, `anthropic/NAME`, ...): each
takes the fast HTTP path to its own documented URL (or the override variable its SDK reads) with its
own key, and behaves exactly as through litellm (`--via litellm`): replies, usage, cost, logprobs,
JSON schema, batch, rate-limit headers, errors and cache keys. One matrix, both paths, against the
fake server (tests/fakes.py), which speaks OpenAI's chat API and Anthropic's Messages API and
enforces rate limits the way those providers do; a real local server sends no rate-limit headers,
keys or Anthropic shapes."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from instructkit.models import LLM, parse_spec
from instructkit.models.cache import ResponseCache
from instructkit.models.pricing import cost_of
from instructkit.models.providers import FAST, LITELLM, PROVIDERS
from instructkit.models.types import ModelCallError
from instructkit.run.batch import batch_target, run_batched
from instructkit.run.runner import RunContext, merge_results

from fakes import Fault, prompt_text, reply_text

PATHS = ["http", "litellm"]
CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"
KEYS = {"OPENAI_API_KEY": "sk-openai-secret", "GROQ_API_KEY": "gsk-groq-secret",
        "ANTHROPIC_API_KEY": "sk-ant-secret", "AZURE_OPENAI_API_KEY": "azure-secret"}  # fmt: skip


@pytest.fixture
def env(fake_server, monkeypatch: pytest.MonkeyPatch):
    """Every provider's variables cleared, then: OpenAI, Groq and Anthropic pointed at the fake
    server by their SDKs' override variables, each with its own key."""
    for provider in PROVIDERS.values():
        for name in (*provider.key_env, *provider.base_env):
            monkeypatch.delenv(name, raising=False)
    for name in ("INSTRUCTKIT_API_KEY", "AZURE_API_VERSION", "OPENAI_API_VERSION"):
        monkeypatch.delenv(name, raising=False)
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("OPENAI_BASE_URL", fake_server)
    monkeypatch.setenv("GROQ_BASE_URL", fake_server)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake_server.root)
    return fake_server


def ask(llm: LLM, prompts: list[str], **params) -> list:
    async def go() -> list:
        try:
            return await asyncio.gather(*(llm.achat(p, **params) for p in prompts))
        finally:
            await llm.aclose()

    return asyncio.run(go())


def sent_keys(requests: list[dict]) -> set[str]:
    """Every key value that reached the server in any header."""
    return {value for r in requests for value in r["headers"].values() if any(k in value for k in KEYS.values())}


# ----- which path, and why -----------------------------------------------------------------------


def test_each_named_provider_takes_the_fast_path_unless_litellm_is_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    for provider in PROVIDERS.values():
        for name in provider.base_env:
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", "https://res.openai.azure.com")
    expected = {"openai/gpt-4o-mini": "https://api.openai.com/v1", "together_ai/x/y": "https://api.together.xyz/v1",
                "groq/llama-3.1-8b-instant": "https://api.groq.com/openai/v1",
                "fireworks_ai/accounts/fireworks/models/m": "https://api.fireworks.ai/inference/v1",
                "deepseek/deepseek-chat": "https://api.deepseek.com/v1", "openrouter/openai/gpt-4o": "https://openrouter.ai/api/v1",
                "mistral/mistral-small-latest": "https://api.mistral.ai/v1", "azure/my-deployment": "https://res.openai.azure.com",
                "anthropic/claude-sonnet-4-5": "https://api.anthropic.com"}  # fmt: skip
    for spec, base in expected.items():
        fast = parse_spec(spec)
        assert (fast.path, fast.api_base, fast.route.wire_model) == (FAST, base, spec.partition("/")[2]), spec
        assert "documented base URL" in fast.why or spec.startswith("azure/")
        forced = parse_spec(spec, via="litellm")
        assert (forced.path, forced.why, forced.api_base) == (LITELLM, "--via litellm", base)
    other = parse_spec("gemini/gemini-2.0-flash")
    assert other.path == LITELLM and other.route is None and "gemini" in other.why
    monkeypatch.delenv("AZURE_OPENAI_ENDPOINT")
    assert parse_spec("azure/my-deployment").path == LITELLM  # no endpoint known: litellm decides
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1/")
    ref = parse_spec("openai/gpt-4o-mini")
    assert ref.api_base == "http://127.0.0.1:9/v1" and "OPENAI_BASE_URL" in ref.why
    served = parse_spec("openai/my-model", api_base="http://127.0.0.1:9/v1")  # --api-base: as before
    assert (served.family, served.model, served.path) == ("openai-compatible", "my-model", FAST)


# ----- OpenAI-compatible providers: the matrix over both paths ---------------------------------


@pytest.mark.parametrize("via", PATHS)
def test_reply_usage_cost_and_logprobs_are_the_same_on_both_paths(env, via: str) -> None:
    llm = LLM("openai/gpt-4o-mini", via=via, cache=False)
    assert llm.ref.path == (FAST if via == "http" else LITELLM)
    (comp,) = ask(llm, ["name a colour"], max_tokens=16, logprobs=True, top_logprobs=3)
    assert comp.text == reply_text(prompt_text([{"role": "user", "content": "name a colour"}]))
    assert (comp.usage.prompt_tokens, comp.usage.completion_tokens) == (len("name a colour") // 4, 3)
    assert comp.cost == cost_of("gpt-4o-mini", 3, 3) > 0 and llm.stats.cost == comp.cost
    assert [t.token for t in comp.logprobs] == comp.text.split(" ")
    assert comp.logprobs[1].logprob == pytest.approx(-0.1) and [a for a, _ in comp.logprobs[1].top] == [
        comp.text.split(" ")[1], "alt0", "alt1"]
    (request,) = env.requests()
    assert request["body"]["model"] == "gpt-4o-mini" and request["body"]["top_logprobs"] == 3
    assert request["headers"]["authorization"] == f"Bearer {KEYS['OPENAI_API_KEY']}"
    assert sent_keys(env.requests()) == {f"Bearer {KEYS['OPENAI_API_KEY']}"}  # no other provider's key


@pytest.mark.parametrize("via", PATHS)
def test_json_schema_is_sent_as_response_format_on_both_paths(env, via: str) -> None:
    schema = {"type": "object", "properties": {"score": {"enum": [1, 2, 3]}}, "required": ["score"]}
    llm = LLM("openai/gpt-4o-mini", via=via, cache=False)
    assert llm.supports_json_schema
    value, _ = llm.json("rate it", schema, max_tokens=16)
    llm.close()
    assert value == {"score": 1}
    fmt = env.requests()[0]["body"]["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["schema"] == schema
    deepseek = LLM("deepseek/deepseek-chat", via=via, cache=False)
    assert not deepseek.supports_json_schema  # json_object only: parse, validate and repair on both paths


@pytest.mark.parametrize("via", PATHS)
def test_a_429_waits_its_retry_after_and_a_final_error_hides_the_key(env, via: str) -> None:
    env.configure(faults=[Fault("429", match="busy", times=1, retry_after=0.3),
                          Fault("status", match="denied", status=401, body='{"error": "bad key {authorization}"}'),
                          Fault("status", match="malformed", status=400, body='{"error": "bad request"}')])  # fmt: skip
    llm = LLM("openai/gpt-4o-mini", via=via, cache=False, max_retries=2)
    (comp,) = ask(llm, ["busy now"], max_tokens=8)
    assert comp.text == reply_text("busy now") and llm.stats.retries == 1 and llm.stats.throttled == 1
    first, second = env.requests()
    assert first["fault"] == "429" and second["t"] - first["t"] >= 0.3
    for prompt, retryable in (("denied", False), ("malformed", False)):
        llm = LLM("openai/gpt-4o-mini", via=via, cache=False, max_retries=2)
        with pytest.raises(ModelCallError) as err:
            ask(llm, [prompt], max_tokens=8)
        assert err.value.status in (400, 401) and KEYS["OPENAI_API_KEY"] not in str(err.value)
        assert env.count(prompt) == 1 and err.value.retryable is retryable


@pytest.mark.parametrize("via", PATHS)
def test_rate_limit_headers_are_obeyed_on_both_paths(env, via: str) -> None:
    limit, window, n = 3, 0.5, 8
    env.configure(rate_limit={"requests": limit, "window": window, "style": "openai"}, latency=0.02)
    llm = LLM("openai/gpt-4o-mini", via=via, cache=False, concurrency=16, max_retries=0)
    prompts = [f"paced {i}" for i in range(n)]
    assert [c.text for c in ask(llm, prompts, max_tokens=8)] == [reply_text(p) for p in prompts]
    # The headers were read: paced at the rate they imply, at most one request a fixed window leaves too
    # early (headers cannot tell a fixed window from a bucket; tests/test_rate_limits.py), never a burst.
    refused = [r for r in env.requests() if r["fault"] is not None]
    assert len(env.requests()) == n + len(refused) and len(refused) <= -(-n // limit)
    assert llm.stats.throttled == len(refused) and llm.stats.limit_wait_s > 0


def test_cache_keys_are_the_same_on_both_paths(env, tmp_path: Path) -> None:
    from instructkit.models.types import GenParams

    cache = ResponseCache(tmp_path / "cache")
    fast, lite = (LLM("openai/gpt-4o-mini", via=via, cache=cache) for via in PATHS)
    msgs = [{"role": "user", "content": "once"}]
    assert fast.chat_key(msgs, GenParams()) == lite.chat_key(msgs, GenParams())
    # the identity a provider/model spec always had: the default URL is not in it
    assert fast.identity == {"family": "litellm", "model": "openai/gpt-4o-mini", "endpoint": env.url}
    first = ask(fast, ["once"], max_tokens=8)[0]
    again = ask(lite, ["once"], max_tokens=8)[0]
    assert again.cached and again.text == first.text and env.count() == 1 and lite.stats.calls == 0


@pytest.mark.parametrize("via", PATHS)
def test_a_second_provider_gets_its_own_key_only(env, via: str) -> None:
    llm = LLM("groq/llama-3.1-8b-instant", via=via, cache=False)
    (comp,) = ask(llm, ["hello groq"], max_tokens=8, presence_penalty=0.5)
    assert comp.text == reply_text("hello groq")
    (request,) = env.requests()
    assert request["body"]["model"] == "llama-3.1-8b-instant" and request["body"]["presence_penalty"] == 0.5
    assert sent_keys([request]) == {f"Bearer {KEYS['GROQ_API_KEY']}"}
    assert comp.cost == cost_of("groq/llama-3.1-8b-instant", comp.usage.prompt_tokens, comp.usage.completion_tokens)


def test_what_each_provider_takes_is_the_same_on_both_paths(env, monkeypatch: pytest.MonkeyPatch) -> None:
    """JSON schema and penalties: litellm's own table says what each provider takes; the fast path
    says the same (the table in providers.py), so a request is trimmed alike on both."""
    from instructkit.models.litellm_backend import import_litellm

    litellm = import_litellm()
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", env.root)
    for prefix, provider in PROVIDERS.items():
        spec = f"{prefix}/{'claude-sonnet-4-5' if prefix == 'anthropic' else 'gpt-4o'}"
        fast, lite = LLM(spec, cache=False).backend, LLM(spec, via="litellm", cache=False).backend
        assert (fast.supports_json_schema, fast.supports_penalties) == (lite.supports_json_schema,
                                                                        lite.supports_penalties), spec
        supported = litellm.get_supported_openai_params(model=spec.partition("/")[2], custom_llm_provider=prefix)
        assert provider.penalties == ("presence_penalty" in supported and "frequency_penalty" in supported), spec


@pytest.mark.parametrize("via", PATHS)
def test_azure_gets_its_deployment_url_version_and_api_key_header(env, via: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", env.root)
    llm = LLM("azure/my-deployment", via=via, cache=False)
    (comp,) = ask(llm, ["hello azure"], max_tokens=8)
    assert comp.text == reply_text("hello azure")
    (request,) = env.requests(path="/openai/deployments/my-deployment/chat/completions")
    assert request["query"] == "api-version=2024-10-21"
    assert request["headers"]["api-key"] == KEYS["AZURE_OPENAI_API_KEY"] and "authorization" not in request["headers"]
    assert sent_keys([request]) == {KEYS["AZURE_OPENAI_API_KEY"]}


@pytest.mark.parametrize("via", PATHS)
def test_batch_mode_goes_to_the_same_place_on_both_paths(env, via: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from fake_batch import BATCH_LINE_PATH, serve_fake_batch

    with serve_fake_batch(batch_seconds=0.1) as url:
        monkeypatch.setenv("OPENAI_BASE_URL", url)
        llm = LLM("openai/gpt-4o-mini", via=via, cache=ResponseCache(tmp_path / "cache"))
        assert batch_target(llm) == ("gpt-4o-mini", url, KEYS["OPENAI_API_KEY"])
        ctx = RunContext(llm=llm, method="ask", work_dir=tmp_path / "work", progress=False)

        def method(records: list[dict], ctx: RunContext) -> list[dict]:
            async def one(rec: dict) -> dict:
                return {"a": (await ctx.llm.achat(rec["q"], max_tokens=8)).text}

            return merge_results(records, ctx.map(records, one, stage="ask"), "ask")

        rows = run_batched(method, [{"q": "b1"}, {"q": "b2"}], ctx, poll_s=0.05)
        assert [r["a"] for r in rows] == [reply_text("b1"), reply_text("b2")]
        assert url.count(path=BATCH_LINE_PATH) == 2 and url.count(path=CHAT) == 0
        assert llm.stats.cost == pytest.approx(sum(
            cost_of("gpt-4o-mini", len(q) // 4 or 1, 3, batch=True) for q in ("b1", "b2")))


# ----- Anthropic's Messages API: native fast path and litellm -----------------------------------


@pytest.mark.parametrize("via", PATHS)
def test_anthropic_replies_usage_and_cost_are_the_same_on_both_paths(env, via: str) -> None:
    llm = LLM("anthropic/claude-sonnet-4-5", via=via, cache=False)
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello claude"}]
    comp = llm.chat(msgs, max_tokens=16, logprobs=True, top_logprobs=5)  # none exist: a reply without them
    cut = llm.chat("cut me", max_tokens=2)
    llm.close()
    assert comp.text == reply_text(prompt_text(msgs)) and comp.logprobs is None and comp.finish_reason == "stop"
    assert cut.finish_reason == "length" and cut.text == " ".join(reply_text("cut me").split(" ")[:2])
    assert comp.cost == cost_of("claude-sonnet-4-5", comp.usage.prompt_tokens, comp.usage.completion_tokens) > 0
    request = env.requests(MESSAGES)[0]
    # `system` as a string (ours) or as text blocks (litellm's): both are the documented shape
    assert prompt_text([{"content": request["body"]["system"]}]) == "Be brief."
    assert [m["role"] for m in request["body"]["messages"]] == ["user"]
    assert request["headers"]["x-api-key"] == KEYS["ANTHROPIC_API_KEY"] and request["headers"]["anthropic-version"]
    assert sent_keys(env.requests(MESSAGES)) == {KEYS["ANTHROPIC_API_KEY"]}


@pytest.mark.parametrize("via", PATHS)
def test_anthropic_rate_limits_429s_and_errors_on_both_paths(env, via: str, monkeypatch: pytest.MonkeyPatch) -> None:
    limit, window, n = 3, 0.5, 7
    env.configure(rate_limit={"requests": limit, "window": window}, latency=0.02,
                  faults=[Fault("429", match="busy", times=1, retry_after=0.3),
                          Fault("status", match="overloaded", times=1, status=529,
                                body='{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}')])  # fmt: skip
    llm = LLM("anthropic/claude-sonnet-4-5", via=via, cache=False, concurrency=16, max_retries=2)
    prompts = [f"paced {i}" for i in range(n)]
    assert [c.text for c in ask(llm, prompts, max_tokens=8)] == [reply_text(p) for p in prompts]
    refused = [r for r in env.requests(MESSAGES) if r["fault"] is not None]  # anthropic-ratelimit-* obeyed:
    assert len(env.requests(MESSAGES)) == n + len(refused) and len(refused) <= -(-n // limit)  # <= 1 a window
    # ... with their reset times: ceil(n / limit) windows of 0.5 s, not the minute a reset-less copy
    # (litellm's x-ratelimit-* of Anthropic's headers) would mean
    assert 0 < llm.stats.limit_wait_s < 30
    env.configure(rate_limit=None, reset=True)
    throttled = llm.stats.throttled  # (the paced windows above may have had one refusal each)
    (comp,) = ask(llm, ["busy now"], max_tokens=8)
    assert comp.text == reply_text("busy now") and llm.stats.throttled == throttled + 1
    (comp,) = ask(llm, ["overloaded now"], max_tokens=8)  # 529: tried again
    assert comp.text == reply_text("overloaded now") and env.count("overloaded", path=MESSAGES) == 2
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    keyless = LLM("anthropic/claude-sonnet-4-5", via=via, cache=False, max_retries=2)
    with pytest.raises(ModelCallError) as err:
        ask(keyless, ["no key"], max_tokens=8)
    assert err.value.status == 401 and not err.value.retryable and keyless.stats.retries == 0


# ----- the terminal says which path -----------------------------------------------------------


def test_models_check_and_the_run_summary_name_the_path(env, tmp_path: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess:
        run = subprocess.run([sys.executable, "-m", "instructkit.cli", *args], capture_output=True, text=True,
                             env=dict(os.environ), timeout=120)  # fmt: skip
        assert "Unclosed" not in run.stderr and "Traceback" not in run.stderr, run.stderr[-2000:]
        return run

    check = cli("models", "check", "openai/gpt-4o-mini")
    report = json.loads(check.stdout)
    assert report["path"] == FAST and "OPENAI_BASE_URL" in report["why"]
    forced = json.loads(cli("models", "check", "openai/gpt-4o-mini", "--via", "litellm").stdout)
    assert forced["path"] == LITELLM and forced["why"] == "--via litellm"
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"instruction": "Say hi.", "output": "hi"}) + "\n")
    run = cli("judge", "alpagasus", str(rows), "--out", str(tmp_path / "out.jsonl"), "-m", "groq/llama-3.1-8b-instant",
              "--cache-dir", str(tmp_path / "cache"))  # fmt: skip
    summary = next(line for line in run.stderr.splitlines() if line.startswith("judge alpagasus:"))
    assert summary.endswith("| fast HTTP (groq: OpenAI-compatible API, GROQ_BASE_URL base URL)"), summary


def test_the_fast_path_imports_no_litellm(env) -> None:
    """Named providers' requests, priced or not, are sent and priced without importing litellm."""
    code = (
        "import sys\n"
        "from instructkit.models import LLM\n"
        "for spec in ('openai/gpt-4o-mini', 'groq/some-new-model', 'anthropic/claude-sonnet-4-5'):\n"
        "    llm = LLM(spec, cache=False)\n"
        "    assert llm.chat('hi', max_tokens=4).text.startswith('ok'), spec\n"
        "    llm.close()\n"
        "print(sorted(m for m in sys.modules if 'litellm' in m))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ), timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr[-2000:]
    assert LLM("groq/some-new-model").cost_model == "" and LLM("gemini/gemini-2.0-flash").cost_model


def test_a_key_inside_a_providers_base_url_variable_goes_to_the_header_not_the_url(
        monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("OPENAI_BASE_URL", "http://user:SEKRET@127.0.0.1:9/v1")
    llm = LLM("openai/gpt-4o-mini", cache=False)
    assert llm.backend.api_base == "http://127.0.0.1:9/v1"  # aiohttp refuses a URL with credentials beside a header
    assert llm.backend._api_key == "SEKRET" and "SEKRET" not in json.dumps(llm.identity, default=str)


def test_the_messages_api_gets_temperature_never_top_p_too() -> None:
    from instructkit.models.http_anthropic import messages_payload
    from instructkit.models.types import GenParams

    body = messages_payload("claude-sonnet-4-5", [{"role": "user", "content": "hi"}],
                            GenParams(temperature=0.7, top_p=0.95))  # fmt: skip
    assert body["temperature"] == 0.7 and "top_p" not in body  # Claude 4.5+ refuse both (a 400 on every row)
