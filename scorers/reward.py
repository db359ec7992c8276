"""Reward-model score with any transformers sequence-classification reward model (MoDS, 2311.15653).

MoDS's quality stage: OpenAssistant `reward-model-deberta-v3-large-v2` scores `tokenizer(question,
answer)` as a text pair, question = instruction, or instruction + "\\n" + input when there is an input;
the score is the single logit. Deviations: length-sorted padded batches instead of batch 1 (equal up
to float rounding), optional truncation (`max_length`, 0 = none as the official code), and rows longer
than the model's positions are flagged in `<c>_truncated` rather than silently dropped. The model is
loaded, and its logits cached per pair, by the model layer (`instructkit.models.classifier`).
"""

from __future__ import annotations

from dataclasses import dataclass

from instructkit.data.io import INSTRUCTION_FIELD, RESPONSE_FIELD
from instructkit.models.classifier import classifier
from instructkit.registry import method
from instructkit.run.runner import RunContext

from .common import Batcher, auto_device, finish, map_sorted, triplet


def question_of(instruction: str, input: str, always_sep: bool = False) -> str:
    """MoDS's question: the instruction, plus "\\n" + input (stage 3 adds the "\\n" even without input)."""
    return instruction + "\n" + input if (input or always_sep) else instruction


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
    rm = classifier(opts.reward_model, dtype=opts.dtype, device=auto_device(opts.device), label_index=opts.label_index,
                    batch_size=opts.batch_size, max_length=opts.max_length,
                    cache=ctx.llm.cache if ctx.llm is not None else None)  # fmt: skip
    limit = opts.max_length or rm.max_input_tokens
    model_id = rm.identity["model"]
    batcher = Batcher(rm.aclassify)
    c = opts.column

    async def one(item: dict) -> dict:
        (value,) = await batcher.run([(item["q"], item["a"])])
        return {c: value, f"{c}_truncated": bool(limit) and rm.count_tokens(item["q"], item["a"]) > limit}

    items = []
    for rec in records:
        ins, inp, outp = triplet(rec)
        items.append({"q": question_of(ins, inp, opts.always_sep), "a": outp, "model": model_id})
    lengths = [len(it["q"]) + len(it["a"]) for it in items]
    return finish(records, map_sorted(ctx, items, one, "reward", lengths), "reward", c, [c, f"{c}_truncated"])


@method("score", "reward", options=RewardOptions, needs_model=False, reads=(INSTRUCTION_FIELD, RESPONSE_FIELD))
def reward(records: list[dict], ctx: RunContext) -> list[dict]:
    """Reward-model score of (instruction [+ input], output) with any sequence-classification RM."""
    return score_reward(records, ctx, ctx.options or RewardOptions())
