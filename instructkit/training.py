"""Fine-tune a causal LM on instruction rows with TRL's SFTTrainer, and measure held-out answer loss.

No training loop of our own: TRL's `SFTTrainer` trains (PEFT LoRA as an option), so a result here is
what a user gets from TRL with the same settings. What we add is the part around it:
- rows in any of our shapes (Alpaca, `messages`, ShareGPT with either role naming, an export folder read
  with `datasets` as a user would, or prompt/completion rows) become TRL conversational prompt/completion
  rows: the conversation up to the last answer is the prompt, the last answer the completion, so the
  loss is on answers only for every chat template (TRL's `assistant_only_loss` needs `{% generation %}`
  markers that most templates, SmolLM2's included, lack). `loss="all"` trains on whole `messages` rows;
- the base is a spec (`local`, `local:PATH`, `hf:PATH`) or a path: a transformers folder or a GGUF file
  transformers reads (converted once, `models.local_files`), the embedded SmolLM2-135M included;
- every setting, the seed and the library versions go into `TrainResult.settings` (the manifest's);
  LoRA adapters are merged into the saved model (`merge=True`), so every reader loads a plain folder.

`heldout_loss` is the token-weighted mean NLL of answers (sum over every answer token of every row,
divided by their count) with the prompt tokenized exactly as TRL tokenizes it for training, computed by
the one span scorer (`models/span_scoring.py`).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

LOSSES = ("answer", "all")
SCHEDULERS = ("linear", "constant", "cosine")
DEFAULT_LR = {False: 2e-5, True: 2e-4}  # full fine-tuning, LoRA (TRL's and PEFT's usual starting points)
SETTINGS_FILE = "instructkit_train.json"  # beside the saved model: what trained it


@dataclass
class TrainOptions:
    """Every setting of a run (recorded whole in `TrainResult.settings` and the manifest)."""

    epochs: float = 1.0
    lr: float | None = None  # None: 2e-5 (full) or 2e-4 (LoRA)
    batch_size: int = 8
    grad_accum: int = 1
    max_steps: int | None = None  # stops earlier than `epochs` when set
    max_length: int = 1024  # tokens per row; longer rows are cut at the end (TRL's keep_start)
    seed: int = 0  # model init (LoRA), data order and dropout
    loss: str = "answer"  # answer: the last answer of each row (prompt/completion); all: whole conversations
    scheduler: str = "linear"
    warmup: float = 0.0  # warmup steps: an integer count, or a fraction of all steps when < 1
    weight_decay: float = 0.0
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_targets: str = "all-linear"  # PEFT's target_modules: all-linear or comma-separated module names
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory, ~40% slower
    merge: bool = True  # LoRA: save the base with the adapter merged in (a plain transformers folder)
    dtype: str = "float32"  # float32 | bfloat16 (weights and training)
    device: str | None = None  # None: cuda when available, else cpu
    logging_steps: int = 1

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"train: loss must be one of {', '.join(LOSSES)}, not {self.loss!r}")
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"train: scheduler must be one of {', '.join(SCHEDULERS)}, not {self.scheduler!r}")
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"train: dtype must be float32 or bfloat16, not {self.dtype!r}")
        if self.epochs <= 0 or self.batch_size < 1 or self.grad_accum < 1 or self.max_length < 8:
            raise ValueError("train: epochs > 0, batch_size >= 1, grad_accum >= 1 and max_length >= 8, please")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"train: max_steps must be >= 1, not {self.max_steps}")

    @property
    def learning_rate(self) -> float:
        return float(self.lr) if self.lr is not None else DEFAULT_LR[bool(self.lora)]


def make_train_options(values: dict[str, Any] | None = None) -> TrainOptions:
    """TrainOptions from YAML/CLI values (strings converted to each field's type), checked before any work."""
    values = dict(values or {})
    fields_ = TrainOptions.__dataclass_fields__
    unknown = sorted(set(values) - set(fields_))
    if unknown:
        raise ValueError(f"train: unknown option(s) {unknown}; known: {sorted(fields_)}")
    out: dict[str, Any] = {}
    for name, value in values.items():
        default = fields_[name].default
        if isinstance(value, str) and name not in ("loss", "scheduler", "lora_targets", "dtype", "device"):
            if value.lower() in ("none", "null", ""):
                value = None
            elif isinstance(default, bool):
                value = value.lower() in ("1", "true", "yes", "on")
            elif isinstance(default, int) or name == "max_steps":
                value = int(value)
            else:
                value = float(value)
        out[name] = value
    return TrainOptions(**out)


@dataclass
class TrainResult:
    """What a run made: the saved model folder, its settings, and TRL's logged training losses."""

    model_path: Path
    settings: dict[str, Any]
    losses: list[float] = field(default_factory=list)  # the logged training loss at each logging step
    steps: int = 0
    rows: int = 0
    wall_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"model_path": str(self.model_path), "settings": self.settings, "losses": self.losses,
                "steps": self.steps, "rows": self.rows, "wall_s": round(self.wall_s, 3)}  # fmt: skip


# ----- rows --------------------------------------------------------------------------------------


def chat_of(row: dict[str, Any]) -> list[dict[str, str]] | None:
    """The conversation of one row as `messages` (system first where there is one); None when the
    row has no final answer. Reads prompt/completion rows (TRL's shape, our Alpaca export's), `messages`,
    ShareGPT `conversations` (human/gpt or user/assistant) and Alpaca, through the export's conversion."""
    from .data.export import to_format

    prompt, completion = row.get("prompt"), row.get("completion")
    if isinstance(prompt, list) and isinstance(completion, list) and completion:
        msgs = [{"role": str(m["role"]), "content": str(m["content"])} for m in [*prompt, *completion]]
        return msgs if msgs[-1]["role"] == "assistant" and msgs[-1]["content"].strip() else None
    converted = to_format(row, "messages")
    return converted["messages"] if converted else None


def trl_rows(records: Sequence[dict[str, Any]], loss: str = "answer") -> tuple[list[dict[str, Any]], int]:
    """(TRL rows, rows left out for having no answer): prompt/completion for `loss="answer"`,
    `messages` for `loss="all"`."""
    rows, skipped = [], 0
    for rec in records:
        msgs = chat_of(rec)
        if msgs is None:
            skipped += 1
            continue
        rows.append({"prompt": msgs[:-1], "completion": msgs[-1:]} if loss == "answer" else {"messages": msgs})
    return rows, skipped


def load_rows(source: str | os.PathLike | Sequence[dict[str, Any]], split: str = "train") -> list[dict[str, Any]]:
    """Rows from a list, a records file (`io.read_records`), or an export folder read the way a user
    reads it: `datasets.load_dataset(FOLDER, split=...)` (the card names each split's files)."""
    if not isinstance(source, (str, os.PathLike)):
        return list(source)
    path = Path(source)
    if path.is_dir() and (path / "README.md").is_file():
        import datasets

        ds = datasets.load_dataset(str(path), split=split)
        return ds.to_list()
    from .data.io import read_records

    return list(read_records(path))


# ----- the model ---------------------------------------------------------------------------------


def resolve_base(base: str | os.PathLike) -> Path:
    """A transformers folder for a model spec (`local`, `local:PATH`, `hf:PATH`) or a folder/.gguf path
    (a GGUF is converted once and the folder reused)."""
    from .models.local import parse_local_spec
    from .models.local_files import resolve_model_path

    text = str(base)
    if text == "local" or text.startswith(("local:", "hf:")):
        return parse_local_spec(text)[0]
    return resolve_model_path(text)


def _device(requested: str | None) -> str:
    import torch

    return requested or ("cuda" if torch.cuda.is_available() else "cpu")


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for name in ("trl", "transformers", "torch", "peft", "datasets"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[name] = md.version(name)
    return out


def train_sft(
    data: str | os.PathLike | Sequence[dict[str, Any]],
    base: str | os.PathLike,
    out_dir: str | os.PathLike,
    options: TrainOptions | None = None,
    *,
    split: str = "train",
    quiet: bool = True,
    **overrides: Any,
) -> TrainResult:
    """Fine-tune `base` on `data` with TRL's SFTTrainer and save the model to `out_dir/model`.

    `data`: rows, a records file or an export folder (its `split`). `options` (or keyword `overrides`
    of its fields: `epochs`, `lr`, `seed`, `lora`, `max_steps`, ...) are recorded whole in the result's
    settings and in `out_dir/model/instructkit_train.json`. Raises ValueError when no row has an answer."""
    from .models.local_files import set_offline

    opts = options or TrainOptions()
    if overrides:
        opts = make_train_options({**asdict(opts), **overrides})
    records = load_rows(data, split)
    rows, skipped = trl_rows(records, opts.loss)
    if not rows:
        raise ValueError(f"train: none of the {len(records)} rows has an answer to train on")
    base_path = resolve_base(base)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    set_offline()
    import datasets
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    device = _device(opts.device)
    transformers.set_seed(opts.seed)
    dtype = getattr(torch, opts.dtype)
    tokenizer = AutoTokenizer.from_pretrained(str(base_path))
    model = AutoModelForCausalLM.from_pretrained(str(base_path), dtype=dtype)
    peft_config = None
    if opts.lora:
        from peft import LoraConfig

        targets: Any = opts.lora_targets if opts.lora_targets == "all-linear" else [
            t.strip() for t in opts.lora_targets.split(",") if t.strip()]  # fmt: skip
        peft_config = LoraConfig(r=opts.lora_r, lora_alpha=opts.lora_alpha, lora_dropout=opts.lora_dropout,
                                 target_modules=targets, task_type="CAUSAL_LM")  # fmt: skip
    with warnings.catch_warnings():  # TRL's config sets transformers' renamed `gradient_checkpointing`: noise
        warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*deprecated", category=FutureWarning)
        config = _sft_config(SFTConfig, opts, out, device, quiet)
    start = time.monotonic()
    with _quiet_libraries(quiet), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(gradient|activation)_checkpointing.*deprecated", category=FutureWarning)
        trainer = SFTTrainer(model=model, args=config, train_dataset=datasets.Dataset.from_list(rows),
                             processing_class=tokenizer, peft_config=peft_config)  # fmt: skip
        trainer.train()
    wall = time.monotonic() - start
    return _save(trainer, tokenizer, opts, out, base, base_path, device, len(rows), skipped, wall)


def _sft_config(SFTConfig: Any, opts: TrainOptions, out: Path, device: str, quiet: bool) -> Any:  # noqa: N803
    return SFTConfig(
        output_dir=str(out / "checkpoints"),
        num_train_epochs=opts.epochs,
        max_steps=opts.max_steps or -1,
        learning_rate=opts.learning_rate,
        per_device_train_batch_size=opts.batch_size,
        gradient_accumulation_steps=opts.grad_accum,
        lr_scheduler_type=opts.scheduler,
        warmup_steps=int(opts.warmup) if opts.warmup >= 1 else opts.warmup,
        weight_decay=opts.weight_decay,
        max_length=opts.max_length,
        seed=opts.seed,
        data_seed=opts.seed,
        logging_steps=opts.logging_steps,
        gradient_checkpointing=opts.gradient_checkpointing,  # TRL turns it on by default
        save_strategy="no",
        report_to=[],
        bf16=opts.dtype == "bfloat16",
        use_cpu=device == "cpu",
        disable_tqdm=quiet,
        dataloader_num_workers=0,
        dataset_num_proc=None,
    )


def _save(trainer: Any, tokenizer: Any, opts: TrainOptions, out: Path, base: Any, base_path: Path, device: str,
          rows: int, skipped: int, wall: float) -> TrainResult:
    """The trained model (LoRA merged unless `merge=False`) and its settings under `out/model`."""
    losses = [float(e["loss"]) for e in trainer.state.log_history if "loss" in e]
    trained = trainer.model
    if opts.lora and opts.merge:
        trained = trained.merge_and_unload()
    model_path = out / "model"
    trained.save_pretrained(str(model_path))
    tokenizer.save_pretrained(str(model_path))
    settings = {
        **asdict(opts), "lr": opts.learning_rate, "device": device, "base": str(base), "base_path": str(base_path),
        "rows": rows, "rows_without_answer": skipped, "steps": trainer.state.global_step,
        "versions": _versions(), "trainer": "trl.SFTTrainer",
    }  # fmt: skip
    (model_path / SETTINGS_FILE).write_text(json.dumps(settings, indent=1, default=str), encoding="utf-8")
    return TrainResult(model_path, settings, losses, trainer.state.global_step, rows, wall)


@contextlib.contextmanager
def _quiet_libraries(quiet: bool) -> Any:
    """Transformers' and datasets' own bars and notices off while TRL prepares and trains (our summary
    line is the one shown); errors still raise."""
    if not quiet:
        yield
        return
    import datasets
    import transformers

    datasets.disable_progress_bars()
    level = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        transformers.logging.set_verbosity(level)
        datasets.enable_progress_bars()


# ----- held-out loss -----------------------------------------------------------------------------


@dataclass
class HeldoutLoss:
    """Token-weighted mean NLL of answers: `loss` = `nll_sum` / `tokens` (nats per answer token)."""

    loss: float
    nll_sum: float
    tokens: int
    rows: int
    rows_without_answer: int = 0

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss) if self.tokens else float("nan")


def answer_spans(tokenizer: Any, chats: Sequence[list[dict[str, str]]]) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, answer ids) per chat, tokenized as TRL's SFTTrainer tokenizes conversational
    prompt/completion rows: the prompt with the generation prompt, the whole chat, and the answer from
    where the two first differ (so it ends with the template's end-of-turn tokens, as trained)."""
    spans = []
    for msgs in chats:
        prompt = tokenizer.apply_chat_template(msgs[:-1], add_generation_prompt=True, tokenize=True, return_dict=True)
        full = tokenizer.apply_chat_template(msgs, tokenize=True, return_dict=True)
        p_ids, f_ids = list(prompt["input_ids"]), list(full["input_ids"])
        n = 0
        while n < min(len(p_ids), len(f_ids)) and p_ids[n] == f_ids[n]:
            n += 1
        spans.append((f_ids[:n], f_ids[n:]))
    return spans


def heldout_loss(
    model: str | os.PathLike,
    data: str | os.PathLike | Sequence[dict[str, Any]],
    *,
    split: str = "test",
    device: str | None = None,
    dtype: str = "float32",
    batch_size: int = 16,
) -> HeldoutLoss:
    """Token-weighted NLL of the answers of `data` (rows, a records file or an export folder's `split`)
    under `model` (a trained folder, a spec such as `local`, or a .gguf). Rows without an answer are
    counted and left out."""
    from .models.local import LocalBackend

    records = load_rows(data, split)
    chats = [c for c in (chat_of(r) for r in records) if c is not None]
    if not chats:
        raise ValueError(f"evaluate: none of the {len(records)} rows has an answer to score")
    backend = LocalBackend(resolve_base(model), dtype, _device(device), batch_size)
    try:
        spans = answer_spans(backend.tokenizer, chats)
        scores = backend.span_scores(spans, batch_size=batch_size)
    finally:
        del backend
    nll = -sum(float(lp) for s in scores for lp in s.token_logprobs)
    tokens = sum(len(s.token_logprobs) for s in scores)
    return HeldoutLoss(nll / tokens if tokens else float("nan"), nll, tokens, len(chats), len(records) - len(chats))
