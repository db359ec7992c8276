"""Sequence-classification models (reward models, trained quality scorers) as a `ClassifierBackend`.

`classifier(path, ...)` returns an `LLM` whose `aclassify`/`classify` give one logit per text or
(text, text_pair), cached per input by content (the weights' id, the label and the truncation are in
the identity) and limited like every other call. The model is loaded once per process per settings.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from .llm import LLM
from .local_files import model_id, set_offline
from .types import ClassifierBackend, TokenCountingBackend

_CLASSIFIERS: dict[tuple[Any, ...], SequenceClassifierBackend] = {}
_LOCK = threading.Lock()


class SequenceClassifierBackend(ClassifierBackend, TokenCountingBackend):
    """A transformers `AutoModelForSequenceClassification` folder: logit `label_index` of each input,
    in length-sorted padded batches of `batch_size` (speed only: equal to one at a time up to float
    rounding); `max_length` > 0 truncates the input (the pair longest first) to that many tokens."""

    kind = "local"

    def __init__(
        self,
        path: str | Path,
        dtype: str = "float32",
        device: str = "cpu",
        label_index: int = 0,
        batch_size: int = 8,
        max_length: int = 0,
    ):
        set_offline()
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.path = Path(path)
        self.device = device
        self.label_index = label_index
        self.batch_size = batch_size
        self.max_length = max_length
        # the defaults keep the id reward rows were journaled under; other settings get their own
        self.model_id = f"{model_id(self.path)}:{dtype}" + "".join(
            tag for tag, on in ((f":label{label_index}", label_index), (f":max{max_length}", max_length > 0)) if on
        )
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.path))
        self.model = AutoModelForSequenceClassification.from_pretrained(str(self.path), dtype=getattr(torch, dtype))
        self.model.to(device).eval()
        self._compute = threading.Lock()

    @property
    def max_positions(self) -> int:
        """Tokens the model can read (0 when its config does not say)."""
        return int(getattr(self.model.config, "max_position_embeddings", 0) or 0)

    def classify(self, inputs: list[tuple[str, str | None]]) -> list[float]:
        """Logit `label_index` of each (text, pair or None), in input order."""
        import torch

        order = sorted(range(len(inputs)), key=lambda i: (inputs[i][1] is None, len(inputs[i][0] + (inputs[i][1] or ""))))
        out = [0.0] * len(inputs)
        trunc = {"truncation": "longest_first", "max_length": self.max_length} if self.max_length > 0 else {}
        start = 0
        while start < len(order):
            paired = inputs[order[start]][1] is not None
            chunk = [i for i in order[start : start + self.batch_size] if (inputs[i][1] is not None) == paired]
            start += len(chunk)
            pairs = [inputs[i][1] for i in chunk] if paired else None
            enc = self.tokenizer([inputs[i][0] for i in chunk], pairs, padding=True, return_tensors="pt", **trunc)
            with self._compute, torch.inference_mode():
                logits = self.model(**{k: v.to(self.device) for k, v in enc.items()}).logits.float()
            for j, i in enumerate(chunk):
                out[i] = float(logits[j, self.label_index])
        return out

    def count_tokens(self, text: str, pair: str | None = None) -> int:
        """Tokens of the input (text, pair) before any truncation."""
        return len(self.tokenizer(text, pair).input_ids)

    async def aclose(self) -> None:
        """Shared by the process; nothing per caller to release."""


def load_classifier(
    path: str | Path,
    dtype: str = "float32",
    device: str = "cpu",
    label_index: int = 0,
    batch_size: int = 8,
    max_length: int = 0,
) -> SequenceClassifierBackend:
    """The shared classifier for these settings and weights (loaded once per process; a folder whose
    weights changed, a scorer trained again, is loaded again)."""
    key = (str(Path(path).resolve()), model_id(Path(path)), dtype, device, label_index, batch_size, max_length)
    with _LOCK:
        if key not in _CLASSIFIERS:
            _CLASSIFIERS[key] = SequenceClassifierBackend(path, dtype, device, label_index, batch_size, max_length)
        return _CLASSIFIERS[key]


def classifier(path: str | Path, *, cache: Any = None, cache_dir: str | None = None, **settings: Any) -> LLM:
    """An `LLM` over the classifier folder `path` (`aclassify`: cached logits); `settings` are
    `load_classifier`'s (dtype, device, label_index, batch_size, max_length)."""
    backend = load_classifier(path, **settings)
    return LLM(f"local:classifier:{backend.path}", backend=backend, cache=cache, cache_dir=cache_dir)
