"""Sentence embeddings: a local encoder backend (all-MiniLM-L6-v2 by default) and `embedder(spec)`.

`EncoderBackend` reproduces sentence-transformers' mean pooling + L2 normalisation with plain
transformers (no sentence-transformers import at run time), in length-sorted batches.
`embedder` returns an `LLM`, so embeddings go through the same per-text cache as everything else.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from .config import COMMON_OPTIONS
from .llm import LLM
from .local_files import minilm_path, model_id, resolve_model_path, set_offline
from .types import EmbeddingBackend

LOCAL_ENCODER_SPECS = ("local", "minilm", "local:minilm")


class EncoderBackend(EmbeddingBackend):
    """A transformers encoder folder as an embedding backend: mean pooling then L2 norm (sentence-
    transformers), or `pooling="cls"`: the last layer's first ([CLS]) state, not normalised (MoDS)."""

    kind = "local"

    def __init__(
        self,
        path: str | Path | None = None,
        dtype: str = "float32",
        device: str = "cpu",
        batch_size: int = 64,
        max_length: int | None = None,
        pooling: str = "mean",
    ):
        if pooling not in ENCODER_POOLINGS:
            raise ValueError(f"encoder pooling must be one of {ENCODER_POOLINGS}, not {pooling!r}")
        set_offline()
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.path = Path(path) if path is not None else minilm_path()
        self.dtype = dtype
        self.device = device
        self.batch_size = batch_size
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.path))
        self.model = AutoModel.from_pretrained(str(self.path), dtype=getattr(torch, dtype)).to(device).eval()
        own_limit = _st_max_length(self.path) or self.tokenizer.model_max_length
        self.max_length = max_length or own_limit
        self.pooling = pooling
        # the defaults keep their old identity (cached vectors stay valid); other settings get their own
        self.model_id = f"{model_id(self.path)}:{dtype}" + "".join(
            f":{tag}" for tag, default in ((pooling, "mean"), (f"max{self.max_length}", f"max{own_limit}"))
            if tag != default
        )
        self._lock = threading.Lock()

    def encode(self, texts: list[str]) -> np.ndarray:
        """float32 [len(texts), dim] (unit vectors for mean pooling), in input order."""
        import torch

        out = np.zeros((len(texts), self.model.config.hidden_size), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            batch = self.tokenizer(
                [texts[i] for i in chunk], padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
            ).to(self.device)
            with self._lock, torch.inference_mode():
                h = self.model(**batch).last_hidden_state.float()
                if self.pooling == "cls":
                    pooled = h[:, 0]
                else:
                    m = batch["attention_mask"].unsqueeze(-1).float()
                    pooled = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
                    pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
            out[chunk] = pooled.cpu().numpy()
        return out

    async def embed(self, texts: list[str]) -> np.ndarray:
        import asyncio

        return await asyncio.to_thread(self.encode, list(texts))

    async def aclose(self) -> None:
        """Shared by the process (`load_encoder`); nothing per caller to release."""


class CausalEmbedBackend(EmbeddingBackend):
    """Hidden states of a local causal LM (`LocalBackend.hidden_states`) as embeddings, not normalised.
    Texts are tokenized with the tokenizer's special tokens (BOS for LLaMA/Mistral), as DEITA's
    embedder and Cherry's pre-experience features are, and cut at `max_length` tokens when given."""

    kind = "local"

    def __init__(self, spec: str = "local", pooling: str = "mean", max_length: int | None = None, **options: Any):
        from .local import load_local_backend

        if pooling not in CAUSAL_POOLINGS:
            raise ValueError(f"causal pooling must be one of {CAUSAL_POOLINGS}, not {pooling!r}")
        self.lm = load_local_backend(spec, **options)
        self.pooling = pooling
        self.max_length = max_length
        limit = f":max{max_length}" if max_length else ""
        self.model_id = f"{self.lm.model_id}:hidden-{pooling}:special{limit}"

    async def embed(self, texts: list[str]) -> np.ndarray:
        import asyncio

        return await asyncio.to_thread(
            self.lm.hidden_states, list(texts), self.pooling, special_tokens=True, max_length=self.max_length
        )

    async def aclose(self) -> None:
        """The causal LM is shared by the process; nothing per caller to release."""


_ENCODERS: dict[tuple[Any, ...], EncoderBackend] = {}
_ENCODERS_LOCK = threading.Lock()
ENCODER_POOLINGS = ("mean", "cls")
CAUSAL_POOLINGS = ("mean", "last")


def load_encoder(
    path: str | Path | None = None,
    dtype: str = "float32",
    device: str = "cpu",
    pooling: str = "mean",
    max_length: int | None = None,
    **kw: Any,
) -> EncoderBackend:
    """One shared `EncoderBackend` per (folder, dtype, device, pooling, max_length) per process."""
    folder = Path(path) if path is not None else minilm_path()
    key = (str(folder.resolve()), dtype, device, pooling, max_length)
    with _ENCODERS_LOCK:
        if key not in _ENCODERS:
            _ENCODERS[key] = EncoderBackend(folder, dtype, device, max_length=max_length, pooling=pooling, **kw)
        return _ENCODERS[key]


def split_pooling(target: str, allowed: tuple[str, ...], pooling: str | None) -> tuple[str, str]:
    """(target, pooling) from `TARGET[:POOLING]` and an explicit pooling option (they must agree)."""
    head, _, tail = target.rpartition(":")
    if tail in allowed and head:
        if pooling is not None and pooling != tail:
            raise ValueError(f"encoder spec asks for {tail} pooling and the pooling option for {pooling}")
        return head, tail
    return target, pooling or "mean"


def embedder(spec: str = "local", pooling: str | None = None, max_length: int | None = None, **kw: Any) -> LLM:
    """An `LLM` whose `embed`/`aembed` give embeddings for `spec`:
    `local` / `minilm` (all-MiniLM-L6-v2), `hf:PATH[:mean|cls]` (an encoder folder; cls: the raw [CLS]
    state, as MoDS), `causal:SPEC_OR_PATH[:mean|last]` (hidden states of a causal LM, e.g.
    `causal:local:last`), anything else a hosted embedding model. `pooling` (same names) and
    `max_length` (tokens read) set the local encoders' options. Local specs are passed to `LLM` under a
    `local:` name so their cache identity is the weights' id (with the pooling and limit). `dtype` and
    `slow_tokenizer` (a DEITA-style causal embedding: bf16, use_fast=False) apply to `causal:` specs only."""
    llm_kw = {k: kw.pop(k) for k in list(kw) if k in _LLM_OPTIONS}
    causal_kw = {k: kw.pop(k) for k in ("dtype", "slow_tokenizer") if k in kw}
    if spec in LOCAL_ENCODER_SPECS:
        backend = load_encoder(None, pooling=pooling or "mean", max_length=max_length, **kw)
        return LLM("local:minilm", backend=backend, **llm_kw)
    if spec.startswith("hf:"):
        target, pool = split_pooling(spec[3:], ENCODER_POOLINGS, pooling)
        backend = load_encoder(resolve_model_path(target), pooling=pool, max_length=max_length, **kw)
        return LLM(spec, backend=backend, **llm_kw)
    if spec.startswith("causal:"):
        target, pool = split_pooling(spec[len("causal:") :], CAUSAL_POOLINGS, pooling)
        if not target.startswith(("local", "hf:")):
            target = f"hf:{target}"
        backend = CausalEmbedBackend(target, pool, max_length, **kw, **causal_kw)
        return LLM(f"local:{spec}", backend=backend, **llm_kw)
    if pooling is not None or max_length is not None:
        raise ValueError(f"{spec}: pooling and max_length apply to local encoders (local, hf:, causal:) only")
    return LLM(spec, **llm_kw, **kw)


_LLM_OPTIONS = frozenset(COMMON_OPTIONS)  # the rest go to the local encoders


def _st_max_length(path: Path) -> int | None:
    """sentence-transformers' max_seq_length for the folder (256 for all-MiniLM-L6-v2), if recorded."""
    import json

    cfg = path / "sentence_bert_config.json"
    if cfg.is_file():
        return json.loads(cfg.read_text()).get("max_seq_length")
    return None
