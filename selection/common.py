"""Shared pieces of the selectors: stable orders, blocked products, score/embedding inputs, outputs.

Every selector has a plain function on arrays (embeddings float32 [N, d], scores [N]) that returns
np.int64 indices, and a registered `(records, ctx) -> records` wrapper built from the helpers here.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from instructkit.data.io import SHAREGPT_ROLES, to_turns

DEFAULT_FIELDS = ["instruction", "input", "output"]


# ----- orders and small array helpers ---------------------------------------------------------


def stable_order(scores: np.ndarray, descending: bool = True) -> np.ndarray:
    """Indices sorted by score (descending by default); ties by original index; NaN always last."""
    s = np.asarray(scores, dtype=np.float64)
    nan = np.isnan(s)
    key = np.where(nan, 0.0, -s if descending else s)
    return np.lexsort((np.arange(len(s)), key, nan)).astype(np.int64)


def as_indices(idx: Sequence[int] | np.ndarray) -> np.ndarray:
    return np.asarray(idx, dtype=np.int64).reshape(-1)


def compute_dtype(x: np.ndarray) -> np.dtype:
    """float64 stays float64 (exact reference tests); anything else computes in float32."""
    return np.dtype(np.float64) if np.asarray(x).dtype == np.float64 else np.dtype(np.float32)


def l2_normalize(x: np.ndarray, dtype: np.dtype | None = None, block: int = 65536) -> np.ndarray:
    """Row-normalised copy (zero rows stay zero), built block by block to bound temporaries."""
    dtype = dtype or compute_dtype(x)
    out = np.empty(x.shape, dtype=dtype)
    for lo, hi, rows in read_blocks(x, block):
        b = np.asarray(rows, dtype=dtype)
        n = np.sqrt(np.einsum("ij,ij->i", b, b))
        n[n == 0] = 1
        out[lo:hi] = b / n[:, None]
    return out


def row_norms_sq(x: np.ndarray, dtype: np.dtype, block: int = 65536) -> np.ndarray:
    out = np.empty(len(x), dtype=dtype)
    for lo, hi, rows in read_blocks(x, block):
        b = np.asarray(rows, dtype=dtype)
        out[lo:hi] = np.einsum("ij,ij->i", b, b)
    return out


def row_blocks(n: int, block: int) -> Iterator[tuple[int, int]]:
    for lo in range(0, n, max(1, block)):
        yield lo, min(n, lo + block)


def read_blocks(x: np.ndarray, block: int) -> Iterator[tuple[int, int, np.ndarray]]:
    """(lo, hi, x[lo:hi]) block by block; a memory-mapped x's pages of a block are released
    (`release_pages`) once the caller asks for the next, so one pass over the file holds one block."""
    for lo, hi in row_blocks(len(x), block):
        yield lo, hi, x[lo:hi]
        release_pages(x, lo, hi)


@dataclass
class PageBudget:
    """Keeps the pages a memory-mapped array maps into this process near `budget` bytes.

    A scattered row read from a mapped file maps the pages around it (the kernel's fault-around: 64 KiB,
    or a whole large folio, up to 2 MiB, on newer kernels), so many scattered reads leave most of a
    large file resident. After every `every` rows read (`took`), once the process's file-backed
    resident set passes the budget, the array's pages are released (`release_pages`). A released page read again costs a minor fault, which the budget keeps
    rare: k-center on a 1M x 384 file (k = 10,000) peaks at 1.0 GB instead of 2.0 GB, at the same
    multiple of its GEMM bound (bench/selection_scale.py)."""

    x: np.ndarray
    budget: int = 512 << 20
    every: int = 2048
    since: int = 0

    def took(self, rows: int) -> None:
        if getattr(self.x, "_mmap", None) is None:
            return
        self.since += rows
        if self.since >= self.every:
            self.since = 0
            if file_resident_bytes() > self.budget:
                release_pages(self.x)


def file_resident_bytes() -> float:
    """This process's resident file-backed pages in bytes (Linux's RssFile); infinity where unknown."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("RssFile:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return math.inf


def release_pages(x: np.ndarray, lo: int = 0, hi: int | None = None) -> None:
    """Unmap rows lo:hi of a read-only memory-mapped array from this process (madvise DONTNEED).

    The page cache keeps the pages and the next read maps them again (a minor fault, no disk read), but
    the process no longer counts them: without this, a pass over a 1M x 384 float32 file leaves all
    1.5 GB in the resident set (and scattered reads map the pages around each row: `PageBudget`).
    Only mode "r" mappings: their pages hold nothing that is not in the file. A no-op for anything
    else (arrays in memory, other modes, platforms without madvise)."""
    mm = getattr(x, "_mmap", None)
    if mm is None or getattr(x, "mode", None) != "r" or not hasattr(mm, "madvise") or mm.closed:
        return
    import mmap

    start = np.frombuffer(mm, dtype=np.uint8).ctypes.data
    row = x.strides[0] if x.ndim else x.itemsize
    first = x.ctypes.data - start + lo * row
    last = x.ctypes.data - start + (len(x) if hi is None else hi) * row
    page = mmap.PAGESIZE
    first, last = first - first % page, min(len(mm), -(-last // page) * page)
    if last > first:
        mm.madvise(mmap.MADV_DONTNEED, first, last - first)


def check_random_state(seed: Any) -> np.random.RandomState:
    from sklearn.utils import check_random_state as _crs

    return _crs(seed)


# ----- torch matmul with numpy fallback -------------------------------------------------------


class Matmul:
    """`a @ b.T` on numpy arrays through torch (CPU threads or a GPU) when available, else numpy.

    Results come back as numpy in the input dtype. `device="auto"` uses CUDA when torch sees it.
    """

    def __init__(self, device: str | None = "auto"):
        self.torch = None
        self.device = "cpu"
        if device in (None, "numpy"):
            return
        try:
            import torch
        except ImportError:  # numpy is enough, only slower
            return
        self.torch = torch
        if device == "auto":
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        else:
            self.device = device

    def to_dev(self, a: np.ndarray) -> Any:
        if self.torch is None:
            return a
        a = np.ascontiguousarray(a)
        if a.flags.writeable:
            t = self.torch.from_numpy(a)
        else:
            with warnings.catch_warnings():  # read-only (memory-mapped) inputs: tensors are only read
                warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
                t = self.torch.from_numpy(a)
        return t.to(self.device) if self.device != "cpu" else t

    def abt(self, a: np.ndarray | Any, b: np.ndarray | Any) -> np.ndarray:
        small = not self.torch or (
            self.device == "cpu"
            and isinstance(a, np.ndarray)
            and isinstance(b, np.ndarray)
            and a.size * len(b) < 1 << 21
        )
        if small:  # numpy for tiny products: torch's per-call overhead dominates there
            return np.asarray(a) @ np.asarray(b).T
        ta = a if self.torch.is_tensor(a) else self.to_dev(a)
        tb = b if self.torch.is_tensor(b) else self.to_dev(b)
        out = ta @ tb.T
        return out.cpu().numpy() if out.device.type != "cpu" else out.numpy()


# ----- inputs from records --------------------------------------------------------------------


def record_text(rec: dict, fields: Sequence[str] | None = None) -> str:
    """The text embedded for a row: the named fields joined by newlines, or every turn
    (instruction then response) for chat-format rows and when `fields` is empty."""
    if fields and not ("messages" in rec or "conversations" in rec):
        return "\n".join(str(rec[f]) for f in fields if rec.get(f) not in (None, ""))
    return "\n".join(part for turn in to_turns(rec) for part in turn if part)


# Named embedding text templates (Jinja, rendered byte for byte): the strings official code embedded.
EMBED_TEMPLATES = {
    # CaR `Clustering/cluster.py` (the IQS input string; an empty input leaves two spaces)
    "car_iqs": "Instruction: {{ instruction }} Input: {{ input }} Response: {{ output }}",
    # DEITA `embed_datasets.py`: FastChat's vicuna_v1.1 conversation (system, USER/ASSISTANT, sep " ", sep2 "</s>")
    # over the row's messages as DEITA's `preprocess` appends them: a leading assistant turn dropped, an
    # empty message as "ROLE:", nothing after a final user turn (tests/golden/deita/embed_text.jsonl)
    "vicuna_v1.1": (
        "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
        "detailed, and polite answers to the user's questions. "
        "{% for m in dialogue %}"
        "{{ 'USER' if m.role == 'user' else 'ASSISTANT' }}"
        "{% if m.content %}: {{ m.content }}{{ ' ' if loop.index0 % 2 == 0 else '</s>' }}{% else %}:{% endif %}"
        "{% endfor %}"
    ),
}


def text_template(template: str) -> Any:
    """The Jinja template for an embedding `text_template` option: a name from EMBED_TEMPLATES, a
    template string (anything with "{{" or "{%"), or a file holding one."""
    from instructkit.templates import exact_template

    if template in EMBED_TEMPLATES:
        return exact_template(EMBED_TEMPLATES[template])
    if "{{" in template or "{%" in template:
        return exact_template(template)
    if Path(template).is_file():
        return exact_template(Path(template).read_text(encoding="utf-8"))
    known = ", ".join(sorted(EMBED_TEMPLATES))
    raise ValueError(f"text_template {template!r} is not a known name ({known}), a Jinja string or a file")


def row_texts(
    records: Sequence[dict], fields: Sequence[str] | None = None, template: str | None = None
) -> list[str]:
    """The embedded text of every row: `template` rendered over the row (its fields, with instruction,
    input and output "" when absent; `turns`, the (instruction, response) pairs; `dialogue`, the messages; `row`, the record),
    else `record_text(row, fields)`. A missing field is an error naming the row, before any model call."""
    if not template:
        return [record_text(r, fields) for r in records]
    import jinja2

    tpl = text_template(template)
    out = []
    for i, rec in enumerate(records):
        try:
            context = {**_ROW_DEFAULTS, **rec, "turns": to_turns(rec), "dialogue": dialogue(rec), "row": rec}
            out.append(tpl.render(context))
        except (jinja2.UndefinedError, jinja2.exceptions.SecurityError) as exc:
            raise ValueError(f"row {i}: text_template {template!r}: {exc}") from None
    return out


_ROW_DEFAULTS = {"instruction": "", "input": "", "output": ""}


def dialogue(rec: dict) -> list[dict[str, str]]:
    """The row's messages in order as {"role": "user"|"assistant", "content"} (system messages and a leading
    assistant message dropped, as DEITA's embedder does); an Alpaca row is its instruction (+ input) and output."""
    if "messages" in rec or "conversations" in rec:
        msgs = [(SHAREGPT_ROLES.get(m.get("role") or m.get("from"), "user"), m.get("content", m.get("value", "")))
                for m in rec.get("messages") or rec.get("conversations") or []]  # fmt: skip
        msgs = [(role, str(content or "")) for role, content in msgs if role != "system"]
        if msgs and msgs[0][0] != "user":
            msgs = msgs[1:]
        return [{"role": role, "content": content} for role, content in msgs]
    (question, answer), = to_turns(rec)
    return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


def score_column(records: list[dict], column: str) -> np.ndarray:
    """float64 scores from a column (dotted paths allowed: `judge.score`); missing or non-numeric is NaN."""
    out = np.full(len(records), np.nan)
    for i, rec in enumerate(records):
        v: Any = rec
        for part in column.split("."):
            v = v.get(part) if isinstance(v, dict) else None
        if isinstance(v, bool):
            v = float(v)
        if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v)):
            out[i] = float(v)
        elif isinstance(v, list) and v and all(isinstance(x, (int, float)) for x in v):
            out[i] = float(sum(v))
    if np.isnan(out).all():
        raise ValueError(f"no numeric values in column {column!r}")
    return out


@dataclass
class EmbeddingOptions:
    """Where the vectors come from: a .npy aligned with the rows, or an encoder run on the text."""

    embeddings: str | None = None  # path to a float32 .npy with one row per record
    encoder: str | None = None  # embedder spec when no .npy is given (default "local": all-MiniLM-L6-v2)
    fields: list[str] = field(default_factory=lambda: list(DEFAULT_FIELDS))
    text_template: str | None = None  # Jinja over the row's fields (or a name: car_iqs, vicuna_v1.1); None: fields
    encoder_pooling: str | None = None  # hf: mean (L2-normalised) | cls (raw); causal: mean | last; None: the spec's
    encoder_max_length: int | None = None  # tokens the encoder reads; None: its own limit
    encoder_dtype: str | None = None  # causal: float32 (default) | bfloat16 (DEITA's embedder); other specs ignore it
    encoder_slow_tokenizer: bool = False  # causal: the tokenizer loaded with use_fast=False (DEITA's embedder)


def seed_of(ctx: Any, opts: Any) -> int:
    """The option's random_state when set, else the run's."""
    rs = getattr(opts, "random_state", None)
    return int(rs) if rs is not None else int(getattr(ctx, "random_state", 0) or 0)


def take(records: list[dict], idx: np.ndarray, extra: dict[str, Sequence[Any]] | None = None) -> list[dict]:
    """The selected rows in selection order, each with `_select_rank`, `_select_index` (its position
    in the input, for reports) and any extra per-pick fields."""
    out = []
    for rank, i in enumerate(as_indices(idx)):
        rec = dict(records[int(i)])
        rec["_select_rank"] = rank
        rec["_select_index"] = int(i)
        for name, values in (extra or {}).items():
            v = values[rank]
            rec[name] = v.item() if hasattr(v, "item") else v
        out.append(rec)
    return out


def trained_model(rows: list[dict], base: str, out_dir: Path, train_options: Any) -> tuple[Path, Any]:
    """(model folder, TrainResult or None): `training.train_sft` on `rows` into `out_dir`, unless a model
    trained there already (its settings file is written last), which is reused: selectors that train
    (DiverseEvol's rounds, InstructionGPT-4's label subsets) resume after the last finished model."""
    from instructkit.training import SETTINGS_FILE, train_sft

    model = Path(out_dir) / "model"
    if (model / SETTINGS_FILE).is_file():
        return model, None
    result = train_sft(rows, base, out_dir, train_options)
    return result.model_path, result


@contextlib.contextmanager
def state_dir(ctx: Any, name: str, records: Sequence[dict], options: Any, seed: int) -> Iterator[Path]:
    """Where a training selector keeps its per-round or per-subset models: `work_dir/<name>/<key>`, the key
    a hash of the rows, the options and the seed (so a rerun of the same run resumes, any change starts
    afresh); without a work dir, a temporary folder removed afterwards."""
    import dataclasses
    import hashlib
    import json
    import shutil
    import tempfile

    if getattr(ctx, "work_dir", None) is None:
        temp = Path(tempfile.mkdtemp(prefix=f"{name}-"))
        try:
            yield temp
        finally:
            shutil.rmtree(temp, ignore_errors=True)
        return
    h = hashlib.sha256(json.dumps([dataclasses.asdict(options), seed], sort_keys=True, default=str).encode())
    for rec in records:
        h.update(hashlib.sha256(json.dumps(rec, sort_keys=True, default=str).encode()).digest())
    yield Path(ctx.work_dir) / name / h.hexdigest()[:16]
