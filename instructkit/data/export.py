"""`instructkit export`: a selected set as the files an SFT trainer reads, split by ratio, with a dataset card.

Formats (one row per record; chats keep every turn):
- `alpaca`: instruction / input / output, plus `system` and `history` ([[user, assistant], ...] of the
  earlier turns) where a row has them (LLaMA-Factory's Alpaca layout; axolotl reads the first three), and
  `prompt`/`completion`: the same conversation as TRL's conversational prompt-completion rows.
- `messages`: OpenAI / TRL conversational rows, `messages: [{role, content}]` (system first when present).
- `sharegpt`: `conversations: [{from, value}]`, the system prompt in `system`; `from` is human/gpt
  (`roles=sharegpt`, the format's own names) or user/assistant with the system prompt as the first turn
  (`roles=openai`: what TRL needs, since it renames the keys but not the roles and reads no `system`).
- `hf`: the Hugging Face Hub layout, `data/SPLIT-00000-of-00001.parquet` with `messages` rows.
The first three write `SPLIT.jsonl`. Every folder loads with `datasets.load_dataset(FOLDER)`: the card's
`configs` names the files of each split. Beside the files: LLaMA-Factory's `dataset_info.json` (one
dataset per split), and in the card an axolotl `datasets:` snippet and a TRL note (`trainer_configs.py`).

Every instructkit column (scores, parse statuses, provenance, ...) is kept apart from the trainer's: in a
`meta` column holding a JSON object as a string (`meta=field`; a string because rows of different steps
have different shapes, which Arrow readers refuse in one column), in `SPLIT.meta.jsonl` keyed by the
row's `id` (`meta=side`; trainer rows then carry `id`), or dropped (`meta=none`). Rows without a response
are left out and counted. Splits are drawn by ratio with an explicit seed; each split keeps input order.
"""

from __future__ import annotations

import json
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..trainer_configs import LLAMAFACTORY_FILE, ROLE_NAMES, llamafactory_info
from .io import SHAREGPT_ROLES, read_records, to_turns, write_records

FORMATS = ("alpaca", "messages", "sharegpt", "hf")
META_MODES = ("field", "side", "none")
TRAINER_COLUMNS = frozenset({"instruction", "input", "output", "response", "messages", "conversations", "system"})
SHAREGPT_FROM = {"user": "human", "assistant": "gpt", "system": "system"}
WRITTEN = ".instructkit-export.json"  # the files the last export into a folder wrote (removed by the next)
OPTIONAL_COLUMNS = {"system": "", "history": []}  # present in every row once one row has them (one schema per export)


@dataclass
class ExportOptions:
    format: str = "messages"  # alpaca | messages | sharegpt | hf
    split: dict[str, float] = field(default_factory=lambda: {"train": 1.0})  # name -> ratio
    meta: str = "field"  # field | side | none
    seed: int = 0  # the split's random_state
    language: list[str] = field(default_factory=list)  # card: ISO codes (default: the inputs' `language`, else en)
    license: str | None = None  # card: overrides the license the inputs declare
    pretty_name: str | None = None  # card title (default: the pipeline's name or the folder's)
    roles: str = "sharegpt"  # sharegpt: `from` is human/gpt; openai: user/assistant (TRL)


def parse_split(value: str | dict[str, Any]) -> dict[str, float]:
    """{"train": 0.9, "test": 0.1} from "train=0.9,test=0.1" (or a dict); ratios > 0, normalised to sum 1."""
    if isinstance(value, str):
        items: dict[str, Any] = {}
        for part in value.split(","):
            name, sep, ratio = part.partition("=")
            if not sep or not name.strip():
                raise ValueError(f"split: expected NAME=RATIO[,NAME=RATIO...], got {value!r}")
            items[name.strip()] = ratio
        value = items
    try:
        ratios = {str(k): float(v) for k, v in dict(value).items()}
    except (TypeError, ValueError):
        raise ValueError(f"split: ratios must be numbers, got {value!r}") from None
    if not ratios or any(r <= 0 for r in ratios.values()):
        raise ValueError(f"split: give at least one split, every ratio > 0 (got {ratios})")
    total = sum(ratios.values())
    return {k: r / total for k, r in ratios.items()}


def make_options(values: dict[str, Any] | None = None) -> ExportOptions:
    """ExportOptions from YAML/CLI values, checked before anything is written."""
    values = dict(values or {})
    known = set(ExportOptions.__dataclass_fields__)
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"export: unknown option(s) {unknown}; known: {sorted(known)}")
    if "split" in values:
        values["split"] = parse_split(values["split"])
    if isinstance(values.get("language"), str):
        values["language"] = [c.strip() for c in values["language"].split(",") if c.strip()]
    opts = ExportOptions(**values)
    if opts.format not in FORMATS:
        raise ValueError(f"export: format must be one of {', '.join(FORMATS)}, not {opts.format!r}")
    if opts.roles not in ROLE_NAMES:
        raise ValueError(f"export: roles must be one of {', '.join(ROLE_NAMES)}, not {opts.roles!r}")
    if opts.meta not in META_MODES:
        raise ValueError(f"export: meta must be one of {', '.join(META_MODES)}, not {opts.meta!r}")
    opts.seed = int(opts.seed)
    return opts


def split_indices(n: int, ratios: dict[str, float], seed: int) -> dict[str, list[int]]:
    """Row indices per split: one seeded shuffle cut at the rounded cumulative ratios, each split sorted."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    out: dict[str, list[int]] = {}
    start, cum = 0, 0.0
    for name, ratio in ratios.items():
        cum += ratio
        end = n if name == list(ratios)[-1] else round(cum * n)
        out[name] = sorted(order[start:end])
        start = end
    return out


# ----- one record in each format -------------------------------------------------------------


def conversation(rec: dict[str, Any]) -> tuple[str | None, list[tuple[str, str]]]:
    """(system prompt or None, [(user, assistant), ...]) of an Alpaca, `messages` or ShareGPT record."""
    system = rec.get("system") if isinstance(rec.get("system"), str) and rec.get("system") else None
    for m in rec.get("messages") or rec.get("conversations") or []:
        if SHAREGPT_ROLES.get(m.get("role") or m.get("from")) == "system":
            system = m.get("content", m.get("value"))
    return system, [(str(q), str(a)) for q, a in to_turns(rec)]


def to_format(rec: dict[str, Any], fmt: str, roles: str = "sharegpt") -> dict[str, Any] | None:
    """The trainer columns of one record in `fmt`; None when its last turn has no response."""
    system, turns = conversation(rec)
    if not turns or not turns[-1][1].strip():
        return None
    msgs = [{"role": "system", "content": system}] if system else []
    msgs += [{"role": role, "content": text} for q, a in turns for role, text in (("user", q), ("assistant", a))]
    if fmt == "alpaca":
        chat = "messages" in rec or "conversations" in rec
        row: dict[str, Any] = {"instruction": turns[-1][0] if chat else str(rec.get("instruction", "")),
                               "input": "" if chat else str(rec.get("input") or ""), "output": turns[-1][1]}  # fmt: skip
        if system:
            row["system"] = system
        if len(turns) > 1:
            row["history"] = [[q, a] for q, a in turns[:-1]]
        return {**row, "prompt": msgs[:-1], "completion": msgs[-1:]}  # TRL's conversational prompt-completion
    if fmt == "sharegpt":  # openai roles: the system prompt is the first turn (TRL reads no `system` column)
        if roles == "openai":
            return {"conversations": [{"from": m["role"], "value": m["content"]} for m in msgs]}
        conv = [{"from": SHAREGPT_FROM[m["role"]], "value": m["content"]} for m in msgs if m["role"] != "system"]
        return {"conversations": conv, **({"system": system} if system else {})}
    return {"messages": msgs}


def meta_of(rec: dict[str, Any]) -> dict[str, Any]:
    """Every column that is not the trainer's."""
    return {k: v for k, v in rec.items() if k not in TRAINER_COLUMNS}


# ----- the folder ------------------------------------------------------------------------------


def data_files(fmt: str, splits: list[str]) -> dict[str, str]:
    """Split -> the file (relative to the folder) that holds its trainer rows."""
    if fmt == "hf":
        return {s: f"data/{s}-00000-of-00001.parquet" for s in splits}
    return {s: f"{s}.jsonl" for s in splits}


def write_export(records: list[dict], out_dir: str | Path, opts: ExportOptions, source: str | None = None
                 ) -> dict[str, Any]:
    """Write the trainer files (and meta side files) of `records` to `out_dir`; returns the export's
    figures (rows in and out, rows per split, files, rows left out)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[int, dict, dict]] = []
    skipped = 0
    for i, rec in enumerate(records):
        row = to_format(rec, "messages" if opts.format == "hf" else opts.format, opts.roles)
        if row is None:
            skipped += 1
            continue
        rows.append((i, row, meta_of(rec)))
    if not rows:
        raise ValueError(f"export: none of the {len(records)} rows has a response to train on")
    optional = {k: v for k, v in OPTIONAL_COLUMNS.items() if any(k in row for _, row, _ in rows)}
    rows = [(i, {**row, **{k: row.get(k, empty) for k, empty in optional.items()}}, meta) for i, row, meta in rows]
    parts = split_indices(len(rows), opts.split, opts.seed)
    empty = [name for name, idx in parts.items() if not idx]
    if empty:  # a split with no rows is no file a reader can load: left out, said
        print(f"export: split(s) {', '.join(empty)} got no rows of {len(rows)}; left out", file=sys.stderr)
        parts = {name: idx for name, idx in parts.items() if idx}
    files = data_files(opts.format, list(parts))
    columns = (["id"] if opts.meta == "side" else []) + list(rows[0][1]) + (["meta"] if opts.meta == "field" else [])
    if (out / WRITTEN).is_file():  # a re-export with other splits or format leaves no stale file behind
        for name in json.loads((out / WRITTEN).read_text(encoding="utf-8")):
            (out / name).unlink(missing_ok=True)
    counts: dict[str, int] = {}
    for name, idx in parts.items():
        part = [rows[k] for k in idx]
        counts[name] = len(part)
        trainer = []
        for i, row, meta in part:
            if opts.meta == "field":
                row = {**row, "meta": json.dumps(meta, ensure_ascii=False, default=str, sort_keys=True)}
            elif opts.meta == "side":
                row = {"id": i, **row}
            trainer.append(row)
        write_records(out / files[name], trainer, fmt="parquet" if opts.format == "hf" else "jsonl")
        if opts.meta == "side":
            write_records(out / f"{name}.meta.jsonl", [{"id": i, **meta} for i, _, meta in part], fmt="jsonl")
    figures = {"format": opts.format, "meta": opts.meta, "seed": opts.seed, "rows_in": len(records),
               "rows_out": len(rows), "skipped_no_response": skipped, "splits": counts, "files": files,
               "split_ratios": opts.split, "columns": columns, "out": str(out), "source": source,
               **({"roles": opts.roles} if opts.format == "sharegpt" else {})}  # fmt: skip
    (out / LLAMAFACTORY_FILE).write_text(json.dumps(llamafactory_info(figures), indent=1), encoding="utf-8")
    written = [*files.values(), *([f"{s}.meta.jsonl" for s in files] if opts.meta == "side" else []), "README.md",
               LLAMAFACTORY_FILE]  # fmt: skip
    (out / WRITTEN).write_text(json.dumps(written), encoding="utf-8")
    return figures


def export_records(records: list[dict], out_dir: str | Path, opts: ExportOptions | None = None,
                   manifest: dict[str, Any] | None = None, source: str | None = None) -> dict[str, Any]:
    """The trainer files of `records` in `out_dir` and their README.md card from `manifest`."""
    from .card import write_card

    opts = opts or ExportOptions()
    figures = write_export(records, out_dir, opts, source)
    write_card(Path(out_dir), figures, records, opts, manifest)
    return figures


def find_manifest(input_path: Path) -> Path | None:
    """The manifest that describes an output: `X.manifest.json` beside it, or the folder's manifest.json."""
    for candidate in (input_path.with_name(input_path.name + ".manifest.json"), input_path.parent / "manifest.json"):
        if candidate.is_file():
            return candidate
    return None


def push_to_hub(folder: str | Path, repo_id: str, private: bool = False, token: str | None = None) -> str:
    """Upload the export folder to a Hub dataset repo (created if missing) in one commit; returns its URL.

    Files go through `create_commit`, not `upload_folder`'s Xet pipeline, so any server speaking the Hub's
    commit API works (HF_ENDPOINT points at it)."""
    import os

    from huggingface_hub import CommitOperationAdd, HfApi

    folder = Path(folder)
    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, token=token)
    ops = [CommitOperationAdd(path_in_repo=p.relative_to(folder).as_posix(), path_or_fileobj=str(p))
           for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.startswith(".")]  # fmt: skip
    try:
        url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        api.create_commit(repo_id, ops, repo_type="dataset", commit_message="instructkit export")
    except Exception as exc:  # the Hub's errors (offline, auth, network) as one located line
        raise ValueError(f"push to {repo_id}: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}") from None
    return str(url)


def export_command(args: Any) -> int:
    opts = make_options({"format": args.format, "split": args.split, "meta": args.meta, "seed": args.seed,
                         "roles": args.roles,
                         **({"language": args.language} if args.language else {}),
                         **({"license": args.license} if args.license else {}),
                         **({"pretty_name": args.name} if args.name else {})})  # fmt: skip
    source = Path(args.input)
    records = read_records(source)
    from ..guard import refuse_overwrite

    splits = [s.split("=", 1)[0].strip() for s in str(args.split).split(",") if s.strip()]
    written = [*data_files(opts.format, splits).values(), *(f"{s}.meta.jsonl" for s in splits), "README.md"]
    for name in written:  # the export never writes over the rows it reads
        refuse_overwrite(Path(args.out) / name, [source], flag="")
    manifest_path = Path(args.manifest) if args.manifest else find_manifest(source)
    manifest = json.loads(manifest_path.read_text(encoding="utf-8")) if manifest_path else None
    figures = export_records(records, args.out, opts, manifest, source=str(source))
    splits = ", ".join(f"{k} {v}" for k, v in figures["splits"].items())
    print(f"export {opts.format}: {figures['rows_out']} rows ({splits}) -> {args.out}  card: "
          f"{Path(args.out) / 'README.md'}" + (f"  ({figures['skipped_no_response']} rows without a response left out)"
                                               if figures["skipped_no_response"] else ""), file=sys.stderr)  # fmt: skip
    if manifest is None:
        print("note: no manifest found beside the input; the card describes the data only (--manifest PATH)",
              file=sys.stderr)
    if args.push_to_hub:
        print(f"pushed: {push_to_hub(args.out, args.push_to_hub, private=args.private)}", file=sys.stderr)
    return 0
