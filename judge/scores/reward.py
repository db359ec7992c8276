"""Reward-model score with any transformers sequence-classification reward model (MoDS, 2311.15653).

MoDS's quality stage: OpenAssistant `reward-model-deberta-v3-large-v2` scores `tokenizer(question,
answer)` as a text pair, question = instruction, or instruction + "\\n" + input when there is an input;
the score is the single logit. Deviations: length-sorted padded batches instead of batch 1 (equal up
to float rounding), optional truncation (`max_length`, 0 = none as the official code), and rows longer
than the model's positions are flagged in `<c>_truncated` rather than silently dropped.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from instructkit.io import INSTRUCTION_FIELD, RESPONSE_FIELD
from instructkit.registry import method
from instructkit.runner import RunContext

from .common import Batcher, auto_device, finish, map_sorted, triplet

_MODELS: dict[tuple[str, str, str], RewardModel] = {}
_LOCK = threading.Lock()


def question_of(instruction: str, input: str, always_sep: bool = False) -> str:
    """MoDS's question: the instruction, plus "\\n" + input (stage 3 adds the "\\n" even without input)."""
    return instruction + "\n" + input if (input or always_sep) else instruction


class RewardModel:
    """A sequence-classification model scoring (question, answer) pairs, one logit each."""

    def __init__(self, path: str, dtype: str = "float32", device: str = "cpu", label_index: int = 0):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from instructkit.models.local_files import model_id, set_offline

        set_offline()
        self.path = Path(path)
        self.device = device
        self.label_index = label_index
        self.model_id = f"{model_id(self.path)}:{dtype}"
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.path))
        self.model = AutoModelForSequenceClassification.from_pretrained(
            str(self.path), dtype=getattr(torch, dtype)
        )
        self.model.to(device).eval()
        self._compute = threading.Lock()

    def score(self, pairs: list[tuple[str, str]], batch_size: int = 8, max_length: int = 0) -> list[float]:
        """Logit `label_index` for each (question, answer), in input order (length-sorted batches)."""
        import torch

        order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
        out = [0.0] * len(pairs)
        trunc = {"truncation": "longest_first", "max_length": max_length} if max_length > 0 else {}
        for s in range(0, len(order), batch_size):
            chunk = order[s : s + batch_size]
            enc = self.tokenizer(
                [pairs[i][0] for i in chunk],
                [pairs[i][1] for i in chunk],
                padding=True,
                return_tensors="pt",
                **trunc,
            )
            with self._compute, torch.inference_mode():
                logits = self.model(**{k: v.to(self.device) for k, v in enc.items()}).logits.float()
            for j, i in enumerate(chunk):
                out[i] = float(logits[j, self.label_index])
        return out

    def n_tokens(self, question: str, answer: str) -> int:
        return len(self.tokenizer(question, answer).input_ids)


def load_reward_model(
    path: str, dtype: str = "float32", device: str | None = None, label_index: int = 0
) -> RewardModel:
    """The shared reward model for (path, dtype, device), loaded once per process."""
    key = (str(Path(path).resolve()), dtype, auto_device(device))
    with _LOCK:
        if key not in _MODELS:
            _MODELS[key] = RewardModel(path, dtype, key[2], label_index)
        return _MODELS[key]


@dataclass
class RewardOptions:
    reward_model: str = ""  # folder of a transformers sequence-classification reward model (required)
    dtype: str = "float32"
    device: str | None = None
    batch_size: int = 8
    max_length: int = 0  # 0: no truncation (as MoDS); else truncate the pair to this many tokens
    label_index: int = 0
    always_sep: bool = False  # MoDS stage 3: "\n" after the instruction even without an input
    column: str = "reward"


def score_reward(records: list[dict], ctx: RunContext, opts: RewardOptions) -> list[dict]:
    """Columns `<c>` (the logit) and `<c>_truncated` (the pair is longer than the model's positions)."""
    if not opts.reward_model:
        raise ValueError("reward needs -o reward_model=PATH (a sequence-classification model folder)")
    rm = load_reward_model(opts.reward_model, opts.dtype, opts.device, opts.label_index)
    limit = opts.max_length or getattr(rm.model.config, "max_position_embeddings", 0) or 0
    batcher = Batcher(lambda flat: rm.score(flat, opts.batch_size, opts.max_length))
    c = opts.column

    async def one(item: dict) -> dict:
        (value,) = await batcher.run([(item["q"], item["a"])])
        return {c: value, f"{c}_truncated": bool(limit) and rm.n_tokens(item["q"], item["a"]) > limit}

    items = []
    for rec in records:
        ins, inp, outp = triplet(rec)
        items.append({"q": question_of(ins, inp, opts.always_sep), "a": outp, "model": rm.model_id})
    lengths = [len(it["q"]) + len(it["a"]) for it in items]
    return finish(records, map_sorted(ctx, items, one, "reward", lengths), "reward", c, [c, f"{c}_truncated"])


@method("score", "reward", options=RewardOptions, needs_model=False, reads=(INSTRUCTION_FIELD, RESPONSE_FIELD))
def reward(records: list[dict], ctx: RunContext) -> list[dict]:
    """Reward-model score of (instruction [+ input], output) with any sequence-classification RM."""
    return score_reward(records, ctx, ctx.options or RewardOptions())
