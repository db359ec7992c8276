"""Read and write records: JSONL, JSON arrays, CSV, Parquet and Hugging Face `datasets` folders.

Records are plain dicts. Alpaca (instruction/input/output), chat `messages` and ShareGPT
`conversations` are understood, with a column mapping for anything else. Bad input fails before
any model call with the file, the line and the field, and the columns that do exist.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from .. import fastjson
from ..credentials import redact, redact_value


class InputError(ValueError):
    """Bad input, located: file, line (1-based, where the format has lines) and field."""

    def __init__(self, path: str | os.PathLike, message: str, line: int | None = None, field: str | None = None):
        where = str(path) + (f":{line}" if line is not None else "")
        what = f" field {field!r}:" if field else ""
        super().__init__(f"{where}:{what} {message}")
        self.path, self.line, self.field = str(path), line, field


class Records(list):
    """A list of dict records that remembers where each came from (for located errors)."""

    def __init__(self, items: Iterable[dict] = (), source: str = "<memory>", lines: list[int] | None = None):
        super().__init__(items)
        self.source = source
        self.lines = lines if lines is not None else list(range(1, len(self) + 1))

    def line_of(self, index: int) -> int | None:
        return self.lines[index] if 0 <= index < len(self.lines) else None


def detect_format(path: Path) -> str:
    if path.is_dir():
        return "hf"
    suffix = "".join(path.suffixes[-2:]) if path.suffix == ".gz" else path.suffix
    return {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet"}.get(
        suffix.lower(), "jsonl"
    )


def read_records(path: str | os.PathLike, fmt: str | None = None, mapping: Mapping[str, str] | None = None) -> Records:
    """Read records from a file or dataset folder; `mapping` renames columns {ours: theirs}."""
    p = Path(path)
    if not p.exists():
        raise InputError(p, "no such file or folder")
    fmt = fmt or detect_format(p)
    if fmt == "jsonl":
        records = read_jsonl(p)
    elif fmt == "json":
        records = _read_json(p)
    elif fmt == "csv":
        try:
            rows = list(csv.DictReader(decoded_text(p).splitlines(keepends=True)))
        except csv.Error as exc:
            raise InputError(p, f"malformed CSV ({exc})") from None
        records = Records(rows, str(p), list(range(2, len(rows) + 2)))
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            records = Records(pq.read_table(p).to_pylist(), str(p))
        except (pa.ArrowException, OSError) as exc:
            raise InputError(p, f"not a readable Parquet file ({str(exc).splitlines()[0] if str(exc) else exc})") from None
    elif fmt == "hf":
        records = _read_dataset_folder(p)
    else:
        raise InputError(p, f"unknown format {fmt!r}")
    if not records:
        raise InputError(p, "is empty: no records")
    if mapping:
        records = apply_mapping(records, mapping)
    return records


def _read_dataset_folder(p: Path) -> Records:
    """A `datasets` folder saved with `save_to_disk` (one split)."""
    from datasets import DatasetDict, load_from_disk

    if not any(p.iterdir()):
        raise InputError(p, "is an empty folder: no records")
    try:
        ds = load_from_disk(str(p))
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise InputError(p, f"is not a dataset folder saved by `datasets` ({str(exc).splitlines()[0][:200]})") from None
    if isinstance(ds, DatasetDict):
        raise InputError(p, f"is a DatasetDict with splits {list(ds.keys())}; point at one split's folder "
                            f"(e.g. {p / next(iter(ds.keys()), 'train')})")
    return Records(ds.to_list(), str(p))


def decoded_text(p: Path) -> str:
    """The file's text as UTF-8; a byte that is not UTF-8 is an InputError naming its line and column."""
    data = p.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _decode_error(p, data, exc) from None


def _decode_error(p: Path, data: bytes, exc: UnicodeDecodeError, first_line: int = 1) -> InputError:
    line_start = data.rfind(b"\n", 0, exc.start) + 1
    line = first_line + data.count(b"\n", 0, exc.start)
    return InputError(p, f"not UTF-8 text: byte 0x{data[exc.start]:02x} at column {exc.start - line_start + 1} "
                         "(save the file as UTF-8)", line=line)


def from_dataset(ds: Any) -> Records:
    """Records from an in-memory Hugging Face `Dataset`."""
    return Records(ds.to_list(), "<datasets.Dataset>")


def to_dataset(records: list[dict]) -> Any:
    from datasets import Dataset

    return Dataset.from_list(list(records))


def read_jsonl(p: Path) -> Records:
    """The JSON objects of a JSONL file, each with its line (blank lines skipped); bad lines are InputErrors."""
    items, lines = [], []
    for n, obj in iter_jsonl(p):
        items.append(obj)
        lines.append(n)
    return Records(items, str(p), lines)


def iter_jsonl(p: Path) -> Iterator[tuple[int, dict]]:
    """(line, object) for each record of a JSONL file, read as it goes (blank lines skipped)."""
    with p.open("rb") as fh:
        for n, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise _decode_error(p, raw, exc, first_line=n) from None
            if not line.strip():
                continue
            try:
                obj = fastjson.loads(line)
            except (json.JSONDecodeError, RecursionError) as exc:
                if isinstance(exc, RecursionError):
                    raise InputError(p, "malformed JSON (nested too deeply)", line=n) from None
                raise InputError(p, f"malformed JSON ({exc.msg} at column {exc.colno})", line=n) from None
            if not isinstance(obj, dict):
                raise InputError(p, f"expected a JSON object per line, got {type(obj).__name__}", line=n)
            yield n, obj


def read_windows(path: str | os.PathLike, size: int, mapping: Mapping[str, str] | None = None) -> Iterator[Records]:
    """A JSONL file's records `size` at a time, each window a `Records` that knows its lines (so located
    errors name the file's line), with `mapping` applied as `read_records` does."""
    p = Path(path)
    items: list[dict] = []
    lines: list[int] = []
    for n, obj in iter_jsonl(p):
        items.append(obj)
        lines.append(n)
        if len(items) == size:
            yield _mapped(Records(items, str(p), lines), mapping)
            items, lines = [], []
    if items:
        yield _mapped(Records(items, str(p), lines), mapping)


def _mapped(records: Records, mapping: Mapping[str, str] | None) -> Records:
    return apply_mapping(records, mapping) if mapping else records


def _read_json(p: Path) -> Records:
    text = decoded_text(p)
    if not text.strip():
        raise InputError(p, "is empty: no records")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(p, f"malformed JSON ({exc.msg} at column {exc.colno})", line=exc.lineno) from None
    except RecursionError:
        raise InputError(p, "malformed JSON (nested too deeply)") from None
    if isinstance(data, dict):
        for key in ("data", "records", "rows", "train"):
            if isinstance(data.get(key), list):
                data = data[key]
                break
    if not isinstance(data, list):
        raise InputError(p, "expected a JSON array of objects")
    for i, obj in enumerate(data):
        if not isinstance(obj, dict):
            raise InputError(p, f"item {i} is {type(obj).__name__}, expected an object")
    return Records(data, str(p), [None] * len(data))  # JSON arrays have no per-record line


def apply_mapping(records: Records, mapping: Mapping[str, str]) -> Records:
    out = []
    for i, rec in enumerate(records):
        new = dict(rec)
        for ours, theirs in mapping.items():
            if theirs not in rec:
                raise InputError(
                    records.source, f"mapped column {theirs!r} is missing; columns: {sorted(rec)}", records.line_of(i), theirs
                )
            new[ours] = rec[theirs]
        out.append(new)
    return Records(out, records.source, records.lines)


def require_fields(records: list[dict], fields: Mapping[str, type | tuple[type, ...]], optional: Iterable[str] = ()) -> None:
    """Check every record has `fields` of the given types (and optional ones typed if present)."""
    source = getattr(records, "source", "<memory>")
    optional = set(optional)
    for i, rec in enumerate(records):
        line = records.line_of(i) if isinstance(records, Records) else i + 1
        for name, typ in fields.items():
            if name not in rec or rec[name] is None:
                if name in optional:
                    continue
                raise InputError(source, f"missing; columns present: {sorted(rec)}", line, name)
            if not isinstance(rec[name], typ):
                names = typ.__name__ if isinstance(typ, type) else "/".join(t.__name__ for t in typ)
                raise InputError(source, f"expected {names}, got {type(rec[name]).__name__}", line, name)


# What a method reading "the instruction" or "the response" accepts (registry `reads`): the Alpaca
# field, or a conversation (chat `messages`, ShareGPT `conversations`) holding it.
INSTRUCTION_FIELD = "instruction|messages|conversations"
RESPONSE_FIELD = "output|response|messages|conversations"

# What users' columns are usually called, for the `--map OURS=THEIRS` a missing field suggests.
COLUMN_SYNONYMS = {
    "instruction": ("question", "prompt", "query", "task", "problem", "instructions", "user", "human"),
    "output": ("response", "answer", "completion", "target", "solution", "reply", "assistant", "gpt"),
    "response": ("output", "answer", "completion", "reply"),
    "input": ("context", "input_text"),
    "text": ("content", "document", "body", "passage", "page"),
}


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip()) or (
        isinstance(value, (list, dict)) and not value
    )


def guess_column(field: str, columns: Iterable[str]) -> str | None:
    """The column among `columns` that most likely holds `field` (by the usual names), if any."""
    lowered = {c.lower(): c for c in columns}
    return next((lowered[n] for n in COLUMN_SYNONYMS.get(field, ()) if n in lowered), None)


def suggest_map(field: str, columns: Iterable[str]) -> str:
    """The `--map` that would give a record `field` from one of its `columns` (a guess by name)."""
    columns = list(columns)
    column = guess_column(field, columns)
    if column is not None:
        return f"--map {field}={column}"
    return f"--map {field}=COLUMN (one of: {', '.join(sorted(columns)) or 'none'})"


def check_fields(records: list[dict], needs: list[list[str]], what: str = "this method") -> None:
    """Raise InputError for the first record without a non-empty value for each need (a list of
    alternative field names), naming the file, the line, the field and the `--map` that would fix it;
    also says how many other records have the same problem. Nothing is called before this passes."""
    if not needs or not records:
        return
    source = getattr(records, "source", "<memory>")
    first: tuple[int, list[str], dict, bool] | None = None
    bad = 0
    for i, rec in enumerate(records):
        for alts in needs:
            if any(not _is_empty(rec.get(a)) for a in alts):
                _check_type(records, i, rec, alts)
                continue
            bad += 1
            if first is None:
                first = (i, alts, rec, any(a in rec for a in alts))
            break
    if first is None:
        return
    i, alts, rec, present = first
    line = records.line_of(i) if isinstance(records, Records) else i + 1
    field = alts[0]
    either = f" (or {' or '.join(alts[1:])})" if len(alts) > 1 else ""
    others = f"; {bad - 1} more record(s) like it" if bad > 1 else ""
    which = "" if line is not None else f"record {i + 1}: "  # JSON arrays have no line per record
    if present:
        message = f"{which}empty, but {what} reads it{either}{others}"
    else:
        message = (f"{which}missing: {what} reads it{either}; the record has {sorted(rec)}{others}. "
                   f"To use another column: {suggest_map(field, rec)}")
    raise InputError(source, message, line, field)


# Fields a method reads as text: a number, a list or an object there is refused, never sent.
TEXT_FIELDS = frozenset({"instruction", "input", "output", "response", "text", "new", "response_a", "response_b"})
CONVERSATION_FIELDS = ("messages", "conversations")


def _check_type(records: list[dict], i: int, rec: dict, alts: list[str]) -> None:
    """The first non-empty alternative must be text (a string), or for a conversation a list of
    role/content objects with string contents: an InputError with the file, line and field otherwise."""
    name = next(a for a in alts if not _is_empty(rec.get(a)))
    problem = conversation_problem(rec[name]) if name in CONVERSATION_FIELDS else (
        None if isinstance(rec[name], str) or (name not in TEXT_FIELDS and not isinstance(rec[name], (list, dict)))
        else f"expected text (a string), got {type(rec[name]).__name__}")
    if problem:
        line = records.line_of(i) if isinstance(records, Records) else i + 1
        which = "" if line is not None else f"record {i + 1}: "
        raise InputError(getattr(records, "source", "<memory>"), which + problem, line, name)


def conversation_problem(value: Any) -> str | None:
    """Why `value` is not a conversation (a list of {role, content} or ShareGPT {from, value} objects
    with string contents), or None."""
    if not isinstance(value, list):
        return f"expected a list of role/content objects, got {type(value).__name__}"
    for j, m in enumerate(value):
        if not isinstance(m, dict):
            return f"turn {j}: expected an object with role and content, got {type(m).__name__}"
        role, content = m.get("role", m.get("from")), m.get("content", m.get("value"))
        if not isinstance(role, str):
            return f"turn {j}: role (or from) must be a string, got {type(role).__name__}"
        if not isinstance(content, str):
            return f"turn {j}: content (or value) must be text, got {type(content).__name__}"
    return None


def check_prompt_size(records: list[dict], needs: list[list[str]], max_tokens: int) -> None:
    """Refuse (InputError: file, line, field) the first record whose text the method reads is longer
    than `max_tokens` (estimated at 4 characters a token, as dry runs estimate prompts)."""
    names = list(dict.fromkeys([a for alts in needs for a in alts] + ["input"]))
    for i, rec in enumerate(records):
        sizes = {n: _text_size(rec.get(n)) for n in names}
        tokens = -(-sum(sizes.values()) // 4)  # rounded up
        if tokens <= max_tokens:
            continue
        field = max(sizes, key=sizes.__getitem__)
        line = records.line_of(i) if isinstance(records, Records) else i + 1
        raise InputError(getattr(records, "source", "<memory>"),
                         f"{'' if line is not None else f'record {i + 1}: '}about {tokens:,} tokens "
                         f"of text, over the {max_tokens:,} the model takes (--max-prompt-tokens); shorten or drop "
                         "the row, or raise the limit", line, field)


def _text_size(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(len(m.get("content") or m.get("value") or "") for m in value
                   if isinstance(m, dict) and isinstance(m.get("content", m.get("value")), str))
    return 0


# ----- conversation formats ------------------------------------------------------------------

SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


def to_turns(record: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(instruction, response) turns from an Alpaca, `messages` or ShareGPT `conversations` record."""
    if "messages" in record or "conversations" in record:
        msgs = record.get("messages") or record.get("conversations") or []
        if problem := conversation_problem(msgs):
            raise ValueError(f"{'messages' if record.get('messages') else 'conversations'}: {problem}")
        turns, pending = [], None
        for m in msgs:
            role = SHAREGPT_ROLES.get(m.get("role") or m.get("from"), "user")
            content = m.get("content", m.get("value", ""))
            if role == "user":
                pending = content
            elif role == "assistant" and pending is not None:
                turns.append((pending, content))
                pending = None
        if pending is not None:
            turns.append((pending, ""))
        return turns
    instruction = str(record.get("instruction", ""))
    extra = record.get("input")
    if extra:
        instruction = f"{instruction}\n\n{extra}"
    return [(instruction, str(record.get("output", record.get("response", ""))))]


def response_of(record: Mapping[str, Any]) -> str:
    turns = to_turns(record)
    return turns[0][1] if turns else ""


# ----- writing -------------------------------------------------------------------------------


def write_records(path: str | os.PathLike, records: Iterable[Mapping[str, Any]], fmt: str | None = None) -> Path:
    """Write atomically (temp file + rename), so a crash never leaves a half-written output; with the
    permissions of any file the user creates (umask), and no credential inside a URL (`credentials.redact`)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fmt = fmt or (detect_format(p) if p.suffix else "jsonl")
    records = list(records) if fmt == "jsonl" else [redact_value(dict(r)) for r in records]
    if fmt == "hf":
        to_dataset(records).save_to_disk(str(p))
        return p
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    os.close(fd)
    try:
        os.chmod(tmp, file_mode())  # mkstemp's 0600 would make the output private, unlike the manifest
        if fmt == "jsonl":
            with open(tmp, "w", encoding="utf-8") as fh:
                for rec in records:
                    fh.write(jsonl_line(rec))
        elif fmt == "json":
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump(records, fh, ensure_ascii=False, indent=1, default=_json_default)
        elif fmt == "csv":
            columns: list[str] = []
            for rec in records:
                columns.extend(k for k in rec if k not in columns)
            with open(tmp, "w", newline="", encoding="utf-8") as fh:
                writer = csv.DictWriter(fh, fieldnames=columns)
                writer.writeheader()
                for rec in records:
                    writer.writerow(
                        {k: json.dumps(v, default=_json_default) if isinstance(v, (dict, list)) else v for k, v in rec.items()}
                    )
        elif fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.Table.from_pylist(records), tmp)
        else:
            raise ValueError(f"unknown output format {fmt!r}")
        os.replace(tmp, p)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return p


def jsonl_line(rec: Mapping[str, Any]) -> str:
    """One record as the JSONL line every writer writes (credentials in URLs redacted)."""
    return redact(json.dumps(rec, ensure_ascii=False, default=_json_default)) + "\n"


class JsonlWriter:
    """A JSONL output written in parts (`write` per window) and put in place atomically on `close`
    (temp file + rename, as `write_records`): a crash leaves no half-written output; `discard` drops it."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self._tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        os.close(fd)
        os.chmod(self._tmp, file_mode())
        self._fh = open(self._tmp, "w", encoding="utf-8")  # noqa: SIM115 (closed in close/discard)
        self.rows = 0

    def write(self, records: Iterable[Mapping[str, Any]]) -> None:
        for rec in records:
            self._fh.write(jsonl_line(rec))
            self.rows += 1

    def close(self) -> Path:
        self._fh.close()
        os.replace(self._tmp, self.path)
        return self.path

    def discard(self) -> None:
        self._fh.close()
        if os.path.exists(self._tmp):
            os.unlink(self._tmp)


def file_mode() -> int:
    """The mode `open(path, "w")` gives a new file: 0o666 less the process's umask."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)
