"""IFD, Instruction-Following Difficulty (Cherry LLM, Li et al. 2023, 2308.12032) and Superfiltering (2402.00530).

IFD = s(A|Q) / s(A): the mean cross-entropy of the answer tokens given the templated prompt, over the
same under a short direct prefix. As Cherry's code: Alpaca / WizardLM / Vicuna templates, answer span
= tokens after `len(encode(text[:text.rfind(output)]))`, whole text truncated at `max_length`, direct
text at `max_length - instruct_len + k` where k is the token length of the direct prefix for the
tokenizer in use (Cherry's "+4" for LLaMA and "### Response:"; computed here, at least 1), its filters
in order, IFD > 1 flagged and dropped, top-k / ratio of the survivors kept in dataset order.
Superfiltering: template "plain", raw output as the direct text (first token unscored, as the official
labels=input_ids loss), perplexity ratio, `ifd < 1` kept, any small causal LM via `hf:PATH`; the
selection by descending IFD with equal IFDs at the cut going to the lower index (`select_data.py`).
Deviations: two forward passes per row in length-sorted padded batches with the LM head at answer
positions only (IFD equals the per-row HF-loss reference within 1e-5 in fp32, tested); a row whose
scoring failed gets null and a status by default (it is retried on the next run), where Superfiltering's
official code scores it 0 and keeps it last (`-o preset official` does: `error_score=0`); the WizardLM
analysis text keeps the input (the official selection script drops it, which breaks its own span
boundaries); `ratio` applies to the surviving candidates as in Cherry (Superfiltering's script multiplies
a hard-coded 52002: `-o preset official` sets its `top_k` of 5200).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from instructkit.data.io import INSTRUCTION_FIELD, RESPONSE_FIELD
from instructkit.registry import method
from instructkit.run.runner import RunContext
from instructkit.templates import exact_template, template_source

from .common import (
    LocalModelOptions,
    SpanBatcher,
    finish,
    local_backend,
    map_sorted,
    mean_loss,
    row_items,
    scoring_model,
    triplet,
)

# name -> (template file, direct prefix, what `instruct_len` counts: "prompt" or raw "instruction")
TEMPLATES: dict[str, tuple[str, str, str]] = {
    "alpaca": ("ifd_alpaca.jinja", "### Response:", "prompt"),
    "wiz": ("ifd_wiz.jinja", "### Response:", "instruction"),
    "vicuna": ("ifd_vicuna.jinja", "ASSISTANT:", "prompt"),
    "plain": ("ifd_plain.jinja", "", "prompt"),
}
STATUSES = ("ok", "gt1", "prompt_too_long", "empty_answer", "too_long")


@dataclass(frozen=True)
class PromptTemplate:
    """A prompt template as the IFD code uses it: exact text, direct prefix, instruct_len basis."""

    source: str
    direct_prefix: str
    length_of: str = "prompt"
    name: str = "custom"

    def prompt(self, instruction: str, input: str = "") -> str:
        return exact_template(self.source).render(instruction=instruction, input=input)

    def length_text(self, instruction: str, input: str = "") -> str:
        return instruction if self.length_of == "instruction" else self.prompt(instruction, input)


def get_template(
    name: str = "alpaca", path: str | None = None, direct_prefix: str | None = None
) -> PromptTemplate:
    """A named template (alpaca, wiz, vicuna, plain) or a user's jinja file (variables instruction, input)."""
    if path:
        return PromptTemplate(
            Path(path).read_text(encoding="utf-8"), direct_prefix or "", "prompt", str(path)
        )
    if name not in TEMPLATES:
        raise ValueError(f"unknown IFD template {name!r}; known: {sorted(TEMPLATES)}")
    file, prefix, length_of = TEMPLATES[name]
    return PromptTemplate(
        template_source(file), prefix if direct_prefix is None else direct_prefix, length_of, name
    )


def prefix_token_count(tokenizer: Any, direct_prefix: str) -> int:
    """Cherry's "+k": tokens of the direct prefix with special tokens (LLaMA "### Response:" -> 4,
    "ASSISTANT:" -> 6); at least 1, Superfiltering's constant for the raw-output direct text."""
    return max(1, len(tokenizer.encode(direct_prefix)))


def official_span(tokenizer: Any, text: str, target: str, max_length: int) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids) as Cherry finds them: `text` encoded and truncated at `max_length`,
    the answer starting at `len(encode(text[:text.rfind(target)]))` (an empty target: no answer)."""
    ids = tokenizer.encode(text, truncation=True, max_length=max_length)
    start = len(tokenizer.encode(text[: text.rfind(target)]))
    return ids[:start], ids[start:]


@dataclass
class IFDRow:
    """Token spans of one row; `status` is set when an official filter skips it before scoring."""

    cond: tuple[list[int], list[int]] | None
    direct: tuple[list[int], list[int]] | None
    instruct_len: int
    status: str = "ok"


def ifd_spans(
    tokenizer: Any,
    instruction: str,
    input: str,
    output: str,
    template: PromptTemplate,
    max_length: int,
    prefix_tokens: int,
    filters: str = "cherry",
) -> IFDRow:
    """Tokenize one row exactly as the official code does and apply its pre-scoring filters in order."""
    prompt = template.prompt(instruction, input)
    instruct_len = len(
        tokenizer.encode(template.length_text(instruction, input), truncation=True, max_length=max_length)
    )
    budget = max_length - instruct_len + prefix_tokens
    if max_length - instruct_len <= 0 or budget <= 0:
        return IFDRow(None, None, instruct_len, "prompt_too_long")
    if filters == "superfiltering" and output == "":
        return IFDRow(None, None, instruct_len, "empty_answer")
    cond = official_span(tokenizer, prompt + output, output, max_length)
    direct = official_span(tokenizer, template.direct_prefix + output, output, budget)
    if not cond[1] or not direct[1]:
        return IFDRow(cond, direct, instruct_len, "empty_answer")
    if filters == "cherry" and instruct_len + len(direct[1]) > max_length:
        return IFDRow(cond, direct, instruct_len, "too_long")
    return IFDRow(cond, direct, instruct_len)


def ifd_value(loss_cond: float | None, loss_direct: float | None, mode: str = "loss_ratio") -> float | None:
    """loss_ratio = s(A|Q)/s(A) (Cherry); ppl_ratio = exp(s(A|Q) - s(A)) (Superfiltering)."""
    if loss_cond is None or loss_direct is None:
        return None
    if mode == "ppl_ratio":
        return math.exp(loss_cond - loss_direct)
    if mode != "loss_ratio":
        raise ValueError("ifd_mode must be loss_ratio or ppl_ratio")
    return loss_cond / loss_direct if loss_direct != 0 else None


def select_by_ifd(
    values: Sequence[float | None],
    statuses: Sequence[str],
    top_k: int = 0,
    ratio: float = 0.0,
    order: str = "index",
    tie_break: str = "high_index",
) -> list[int]:
    """Indices of the top IFD among rows whose status is "ok": `top_k` or `int(len(candidates) * ratio)`,
    in dataset order ("index") or by descending IFD ("score", equal IFD by index).

    tie_break decides which of equal IFDs at the cut stay: "high_index" (Cherry: ascending sort by
    (IFD, index), the last n) or "low_index" (Superfiltering: Python's stable descending sort, the first n).
    """
    cands = [(float(v), i) for i, (v, s) in enumerate(zip(values, statuses)) if s == "ok" and v is not None]
    n = top_k if top_k > 0 else int(len(cands) * ratio)
    if tie_break == "high_index":
        cands.sort()
        picked = cands[len(cands) - n :] if n > 0 else []
    elif tie_break == "low_index":
        cands.sort(key=lambda t: (-t[0], t[1]))
        picked = cands[:n] if n > 0 else []
    else:
        raise ValueError(f"tie_break must be high_index or low_index, not {tie_break!r}")
    if order == "score":
        return [i for _, i in sorted(picked, key=lambda t: (-t[0], t[1]))]
    if order != "index":
        raise ValueError(f"order must be index or score, not {order!r}")
    return sorted(i for _, i in picked)


@dataclass
class IFDOptions(LocalModelOptions):
    template: str = "alpaca"  # alpaca | wiz | vicuna | plain
    template_path: str | None = None  # a user's jinja prompt (variables: instruction, input)
    direct_prefix: str | None = None  # context of the direct answer; None = the template's
    prefix_tokens: int | None = None  # the official "+4"; None = computed for the tokenizer in use
    max_length: int = 512
    ifd_mode: str = "loss_ratio"  # loss_ratio (Cherry) | ppl_ratio (Superfiltering)
    filters: str = "cherry"  # cherry | superfiltering (which official skip rules apply)
    drop_gt1: bool = True  # drop rows flagged gt1 from the output
    top_k: int = 0  # keep the top k by IFD (0: no selection)
    ratio: float = 0.0  # or keep int(candidates * ratio)
    order: str = "index"  # index (Cherry) | score (descending IFD)
    tie_break: str = "high_index"  # equal IFD at the cut: high_index (Cherry) | low_index (Superfiltering)
    column: str = "ifd"
    pre_experience: bool = False  # Cherry's pre-experience stage before scoring
    pre_clusters: int = 100
    pre_per_cluster: int = 10
    pre_low: float = 25
    pre_high: float = 75
    pre_n_init: str = "10"  # K-means as the official script ran it (sklearn < 1.4 default); "auto": one run
    pre_random_state: int = 0  # `data_by_cluster.py`: KMeans(random_state=0)
    warmup: bool = False  # fine-tune 1 short run on the pre-experience sample, score with it
    warmup_epochs: int = 1
    warmup_lr: float = 2e-5
    warmup_batch_size: int = 4

    # `cherry_seletion/data_analysis.py` + `data_by_IFD.py` as the scripts run them (the rate, 5/10/15%,
    # is the user's: `-o ratio 0.06` gave the released "5%" set) and the `--mod pre` clustering
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "official": {
            "template": "alpaca",
            "max_length": 512,
            "ifd_mode": "loss_ratio",
            "filters": "cherry",
            "order": "index",
            "tie_break": "high_index",
            "pre_clusters": 100,
            "pre_per_cluster": 10,
            "pre_low": 25,
            "pre_high": 75,
            "pre_n_init": "10",
            "pre_random_state": 0,
        }
    }


@dataclass
class SuperfilteringOptions(IFDOptions):
    template: str = "plain"
    max_length: int = 1024
    ifd_mode: str = "ppl_ratio"
    filters: str = "superfiltering"
    column: str = "sf"
    order: str = "score"  # `select_data.py` writes the selection by descending IFD
    tie_break: str = "low_index"  # its stable descending sort keeps the lower index among equal IFDs
    error_score: float | None = None  # a row whose scoring failed: None (null, dropped) or this score, kept

    # `step3_select_data.sh`: `--sample_rate 0.1` of a hard-coded 52002 rows (the Alpaca size), the
    # model `gpt2` (give it with --model / -o model; nothing is downloaded); `data_analysis.py` scores a
    # row whose scoring raised 0, and `select_data.py` keeps it (last)
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"official": {"top_k": int(52002 * 0.1), "error_score": 0.0}}


def score_ifd(
    records: list[dict], ctx: RunContext, opts: IFDOptions, backend: Any | None = None
) -> list[dict]:
    """Score every row (journaled per model, record and template); columns `<column>`, `_loss_cond`,
    `_loss_direct`, `_ppl_cond`, `_ppl_direct`, `_tokens`, `_status`. No row dropping here."""
    backend = backend or local_backend(ctx, opts)
    tok = backend.tokenizer
    tpl = get_template(opts.template, opts.template_path, opts.direct_prefix)
    k = opts.prefix_tokens if opts.prefix_tokens is not None else prefix_token_count(tok, tpl.direct_prefix)
    batcher = SpanBatcher(backend, opts)
    c = opts.column
    columns = [
        c,
        f"{c}_loss_cond",
        f"{c}_loss_direct",
        f"{c}_ppl_cond",
        f"{c}_ppl_direct",
        f"{c}_tokens",
        f"{c}_status",
    ]
    tpl_id = hashlib.sha256(f"{tpl.source}\0{tpl.direct_prefix}\0{k}".encode()).hexdigest()[:16]

    async def one(item: dict) -> dict:
        row = ifd_spans(
            tok, item["instruction"], item["input"], item["output"], tpl, opts.max_length, k, opts.filters
        )
        out: dict[str, Any] = dict.fromkeys(columns)
        out[f"{c}_status"] = row.status
        if row.status != "ok":
            return out
        cond, direct = await batcher.score([row.cond, row.direct])
        lc, ld = mean_loss(cond.token_logprobs), mean_loss(direct.token_logprobs)
        if lc is None or ld is None:  # e.g. a one-token raw output whose only token has no context
            out[f"{c}_status"] = "empty_answer"
            return out
        value = ifd_value(lc, ld, opts.ifd_mode)
        gt1 = value is not None and (value >= 1 if opts.filters == "superfiltering" else value > 1)
        out.update(
            {
                c: value,
                f"{c}_loss_cond": lc,
                f"{c}_loss_direct": ld,
                f"{c}_ppl_cond": math.exp(lc),
                f"{c}_ppl_direct": math.exp(ld),
                f"{c}_tokens": len(cond.token_logprobs),
                f"{c}_status": "gt1" if gt1 else "ok",
            }
        )
        return out

    items, lengths = row_items(records, model=backend.model_id, tpl=tpl_id)
    selection_only = ("drop_gt1", "top_k", "ratio", "order", "tie_break")
    key = {k: v for k, v in dataclasses.asdict(opts).items() if k not in selection_only}
    results = map_sorted(ctx, items, one, "ifd", lengths, key_options=key)
    return finish(records, results, "ifd", c, columns)


def selects_across(opts: IFDOptions) -> str:
    """The cross-row need IFD and Superfiltering declare: `top_k` / `ratio` select among all rows."""
    if opts.top_k > 0 or opts.ratio > 0:
        return "its top_k / ratio select across all rows (score without them, then select topk/ratio in a later step)"
    return ""


def finish_selection(scored: list[dict], opts: IFDOptions) -> list[dict]:
    """Apply the IFD > 1 drop and the optional top-k / ratio selection to scored rows.

    With `error_score` set (Superfiltering's preset: 0), a row whose scoring failed takes that score and
    competes as a scored row, as the official try/except's 0 does (it sorts last among kept rows)."""
    c = opts.column
    statuses = [r.get(f"{c}_status") or "error" for r in scored]
    error_score = getattr(opts, "error_score", None)
    if error_score is not None:
        scored = [{**r, c: float(error_score)} if s == "error" else r for r, s in zip(scored, statuses)]
        statuses = ["ok" if s == "error" else s for s in statuses]
    if opts.top_k > 0 or opts.ratio > 0:
        idx = select_by_ifd(
            [r.get(c) for r in scored], statuses, opts.top_k, opts.ratio, opts.order, opts.tie_break
        )
        return [scored[i] for i in idx]
    if opts.drop_gt1:
        return [r for r, s in zip(scored, statuses) if s != "gt1"]
    return scored


@method("score", "ifd", options=IFDOptions, reads=(INSTRUCTION_FIELD, RESPONSE_FIELD), cross_row=selects_across)
def ifd(records: list[dict], ctx: RunContext) -> list[dict]:
    """IFD (Cherry LLM): conditioned over direct answer loss; IFD > 1 dropped; optional top-k/ratio."""
    opts = ctx.options or IFDOptions()
    backend = None
    if opts.pre_experience:
        backend = pre_experience(records, ctx, opts)
    return finish_selection(score_ifd(records, ctx, opts, backend), opts)


@method("score", "superfiltering", options=SuperfilteringOptions, reads=(INSTRUCTION_FIELD, RESPONSE_FIELD),
        cross_row=selects_across)
def superfiltering(records: list[dict], ctx: RunContext) -> list[dict]:
    """Superfiltering: IFD (perplexity ratio) from a small weak LM (--model hf:PATH or -o model=...)."""
    opts = ctx.options or SuperfilteringOptions()
    return finish_selection(score_ifd(records, ctx, opts), opts)


# ----- Cherry pre-experience ---------------------------------------------------------------------------


def instruction_features(
    backend: Any, texts: list[str], max_length: int = 512, batch_size: int = 16
) -> tuple[np.ndarray, np.ndarray]:
    """(mean last hidden state over all tokens, perplexity) of each text, as Cherry's `--mod pre`
    (encoded with special tokens, truncated at max_length; loss over tokens 2..n). One forward each:
    the scoring engine's `mean_states_and_perplexity`."""
    return backend.mean_states_and_perplexity(texts, max_length, batch_size)


def pre_experience(records: list[dict], ctx: RunContext, opts: IFDOptions) -> Any:
    """Cherry's pre-experience stage: features of the templated instructions, K-means middle-confidence
    sample (selection/cherry.py), and with `warmup` a short fine-tune on it; returns the backend that
    scores IFD (the warmed-up model, or the base model when `warmup` is off)."""
    from instructkit.shared.clustering import cherry_pre_select, parse_n_init

    backend = local_backend(ctx, opts)
    tpl = get_template(opts.template, opts.template_path, opts.direct_prefix)
    rows = [triplet(r) for r in records]
    texts = [tpl.prompt(ins, inp) for ins, inp, _ in rows]
    emb, ppl = instruction_features(backend, texts, opts.max_length, opts.batch_size)
    ok = np.flatnonzero(np.isfinite(ppl))
    picked, _ = cherry_pre_select(
        emb[ok],
        ppl[ok],
        opts.pre_clusters,
        opts.pre_per_cluster,
        opts.pre_low,
        opts.pre_high,
        opts.pre_random_state,
        parse_n_init(opts.pre_n_init),
    )
    sample = [rows[i] for i in ok[picked]]
    ctx.extras["cherry_pre_sample"] = [int(i) for i in ok[picked]]
    if not opts.warmup:
        return backend
    digest = hashlib.sha256(
        json.dumps([backend.model_id, sample, opts.warmup_epochs, opts.warmup_lr]).encode()
    )
    root = Path(ctx.work_dir) if ctx.work_dir is not None else Path.home() / ".cache" / "instructkit"
    out_dir = root / "cherry_pre_models" / digest.hexdigest()[:16]
    if not (out_dir / "config.json").is_file():
        warmup_finetune(
            backend,
            sample,
            tpl,
            out_dir,
            opts.warmup_epochs,
            opts.warmup_lr,
            opts.warmup_batch_size,
            opts.max_length,
            ctx.random_state,
        )
    return scoring_model(ctx, f"hf:{out_dir}", opts.dtype, backend.device)


def warmup_finetune(
    backend: Any,
    rows: Sequence[tuple[str, str, str]],
    template: PromptTemplate,
    out_dir: Path,
    epochs: int = 1,
    lr: float = 2e-5,
    batch_size: int = 4,
    max_length: int = 512,
    seed: int = 0,
) -> Path:
    """Fine-tune a fresh fp32 copy of the backend's model on (instruction, input, output) rows, Alpaca
    style (loss on answer tokens + EOS only), AdamW with a cosine schedule; save it to `out_dir`."""
    import torch
    from transformers import AutoModelForCausalLM, get_cosine_schedule_with_warmup

    torch.manual_seed(seed)
    tok = backend.tokenizer
    model = AutoModelForCausalLM.from_pretrained(str(backend.path), dtype=torch.float32).to(backend.device)
    model.train()
    eos = tok.eos_token_id
    examples = []
    for ins, inp, outp in rows:
        prompt = template.prompt(ins, inp)
        p_ids, a_ids = official_span(tok, prompt + outp, outp, max_length)
        ids = (p_ids + a_ids + [eos])[:max_length]
        labels = ([-100] * len(p_ids) + a_ids + [eos])[:max_length]
        examples.append((ids, labels))
    rng = np.random.default_rng(seed)
    steps = epochs * math.ceil(len(examples) / batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = get_cosine_schedule_with_warmup(opt, max(1, int(0.03 * steps)), max(1, steps))
    for _ in range(epochs):
        perm = rng.permutation(len(examples))
        for s in range(0, len(perm), batch_size):
            batch = [examples[i] for i in perm[s : s + batch_size]]
            width = max(len(b[0]) for b in batch)
            ids = torch.full((len(batch), width), backend.pad_id, dtype=torch.long)
            lab = torch.full((len(batch), width), -100, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for j, (x, y) in enumerate(batch):
                ids[j, : len(x)], lab[j, : len(y)], mask[j, : len(x)] = torch.tensor(x), torch.tensor(y), 1
            dev = backend.device
            loss = model(input_ids=ids.to(dev), attention_mask=mask.to(dev), labels=lab.to(dev)).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad()
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    model.eval()
    model.save_pretrained(str(tmp))
    tok.save_pretrained(str(tmp))
    tmp.rename(out_dir)
    return out_dir
