"""Local models in this process: the specs (`specs`), one module per engine (`transformers`,
`llamacpp`), the split engine for a GGUF model (`split`: llama.cpp generates, transformers scores) and
the decoding rules both engines share (`decoding`). `LLM` builds its local backend with
`load_local_model`; nothing outside models/ imports this package (methods use `LLM`'s capabilities)."""

from __future__ import annotations

from typing import Any

from .specs import (
    DTYPES,
    ENGINES,
    generation_engine,
    local_identity,
    local_model_id,
    parse_local_spec,
    resolve_local,
)
from .split import SplitLocalBackend
from .transformers import LocalBackend, load_local_backend

__all__ = [
    "DTYPES",
    "ENGINES",
    "LocalBackend",
    "SplitLocalBackend",
    "generation_engine",
    "load_local_backend",
    "load_local_model",
    "local_identity",
    "local_model_id",
    "parse_local_spec",
    "resolve_local",
]


def load_local_model(
    spec: str = "local",
    dtype: str = "float32",
    device: str | None = None,
    batch_size: int = 16,
    threads: int | None = None,
    engine: str = "auto",
    parallel: int = 8,
    n_ctx: int = 2048,
) -> Any:
    """What `LLM` uses for a local spec: transformers alone, or llama.cpp generating with transformers
    scoring (`SplitLocalBackend`). Nothing is loaded here when llama.cpp generates."""
    if generation_engine(spec, engine) == "transformers":
        return load_local_backend(spec, dtype, device, batch_size, threads)
    return SplitLocalBackend(spec, dict(dtype=dtype, device=device, batch_size=batch_size, threads=threads),
                             dict(parallel=parallel, n_ctx=n_ctx, threads=threads))  # fmt: skip
