"""Embeddings for selection: row text -> float32 .npy, cached by content (the `instructkit embed` body).

Encoders come from `instructkit.models.embeddings.embedder(spec)`: `local` (all-MiniLM-L6-v2, mean
pooling, L2 norm), `hf:PATH[:mean|cls]` (any encoder folder; `cls`: the raw [CLS] state, as MoDS),
`causal:SPEC[:mean|last]` (a causal LM's mean last hidden state, as Cherry, or its last-token state, as
DEITA), or a hosted embedding model. The text of a row is `common.row_texts`: its fields joined, or a
text template (the strings the official code embedded: `car_iqs`, `vicuna_v1.1`, or any Jinja).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from instructkit.registry import extension

from .common import row_texts


@extension("embed.texts")
def texts_of(
    records: list[dict], fields: Sequence[str] | None = None, template: str | None = None
) -> list[str]:
    """The embedded text per row (see `common.row_texts`)."""
    return row_texts(records, fields, template)


def content_key(texts: Sequence[str], spec: str, encoder_options: dict | None = None) -> str:
    h = hashlib.sha256(json.dumps([spec, encoder_options] if encoder_options else spec).encode())
    for t in texts:
        h.update(hashlib.sha256(t.encode("utf-8", "surrogatepass")).digest())
    return h.hexdigest()[:24]


def embed_texts(texts: list[str], spec: str = "local", batch_size: int = 256, **encoder_options) -> np.ndarray:
    """float32 [len(texts), d] from `embedder(spec, **encoder_options)` (per-text model cache included)."""
    from instructkit.models.embeddings import embedder

    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    llm = embedder(spec, **encoder_options)
    return np.asarray(llm.embed(list(texts), batch_size=batch_size), dtype=np.float32)


def embed_records(
    records: list[dict],
    spec: str = "local",
    out_path: str | os.PathLike | None = None,
    fields: Sequence[str] | None = ("instruction", "input", "output"),
    cache_dir: str | os.PathLike | None = None,
    batch_size: int = 256,
    template: str | None = None,
    pooling: str | None = None,
    max_length: int | None = None,
    dtype: str | None = None,
    slow_tokenizer: bool = False,
) -> np.ndarray:
    """Embed each row's text (`template` rendered over the row, else the named fields joined by
    newlines; chat rows: every turn) with `spec` (pooling / max_length / dtype: the encoder's, when given;
    `slow_tokenizer`: a causal LM's tokenizer loaded with use_fast=False).

    The array is cached as `<cache_dir>/<content-hash>.npy` (hash of spec, encoder options and texts)
    and, when `out_path` is given, also written there (atomically). Returns the float32 [N, d] array,
    memory-mapped read-only from the cache file when there is one (a million rows then cost page cache,
    not a second in-memory copy beside the selector's own arrays).
    """
    texts = texts_of(records, fields, template)
    options = (("pooling", pooling), ("max_length", max_length), ("dtype", dtype), ("slow_tokenizer", slow_tokenizer or None))
    encoder_options = {k: v for k, v in options if v is not None}
    key = content_key(texts, spec, encoder_options)
    cached = Path(cache_dir) / f"{key}.npy" if cache_dir else None
    if cached is not None and cached.is_file():
        emb = np.load(cached, mmap_mode="r")
    else:
        emb = embed_texts(texts, spec, batch_size, **encoder_options)
        if cached is not None:
            emb = np.load(save_npy(cached, emb), mmap_mode="r")
    if out_path is not None:
        save_npy(Path(out_path), emb)
    return emb


def save_npy(path: Path, arr: np.ndarray) -> Path:
    """Write float32 .npy atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npy.tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, np.asarray(arr, dtype=np.float32))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_embeddings(records: list[dict], ctx: Any, opts: Any) -> np.ndarray:
    """[len(records), d] vectors for a selector wrapper, memory-mapped when read from a .npy."""
    path = getattr(opts, "embeddings", None)
    if path:
        emb = np.load(Path(path), mmap_mode="r")
        if emb.ndim != 2 or len(emb) != len(records):
            raise ValueError(f"{path}: shape {emb.shape} does not match {len(records)} records")
        return emb
    cache_dir = Path(ctx.work_dir) / "embeddings" if getattr(ctx, "work_dir", None) else None
    return embed_records(
        records,
        getattr(opts, "encoder", None) or "local",
        fields=getattr(opts, "fields", None),
        cache_dir=cache_dir,
        template=getattr(opts, "text_template", None),
        pooling=getattr(opts, "encoder_pooling", None),
        max_length=getattr(opts, "encoder_max_length", None),
        dtype=getattr(opts, "encoder_dtype", None),
        slow_tokenizer=getattr(opts, "encoder_slow_tokenizer", False),
    )
