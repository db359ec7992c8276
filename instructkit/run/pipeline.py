"""Pipelines: a YAML (or Python) list of steps, each saved, fingerprinted and resumable.

A step is `{name, <kind>: METHOD, input?, model?, options?}` with kind one of generate, judge,
score, select; or `concat: [step, ...]`; or `export: FORMAT` (alpaca, messages, sharegpt, hf; options
as `instructkit export`), which writes the trainer files to OUT/NAME and, once the manifest is written,
their dataset card from it; or `train: BASE` (options as `instructkit train`'s flags), which fine-tunes BASE
with TRL on the previous step's rows, or on an export step's folder when `input` names one (read with
`datasets`, as a user's trainer reads it), into OUT/NAME/model. A step's input is the previous step's output unless it
names a file or another step. A re-run skips steps whose fingerprint (method, options, model,
seed and input content) is unchanged; a changed step re-runs, and inside it every row already
answered is reused from the journals and the response cache, so only changed rows cost anything.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import registry
from ..credentials import redact
from ..data.io import InputError, read_records, write_records
from ..models.config import ModelConfig
from .execution import Execution
from .manifest import json_hash, write_manifest
from .steps import MethodStep, Models, method_options, run_step

STEP_KINDS = registry.KINDS
OTHER_KINDS = ("concat", "export", "train")
RECORD_SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv", ".parquet")


@dataclass
class Step:
    name: str
    kind: str  # generate | judge | score | select | concat
    method: str = ""
    input: Any = None  # None (previous step), a step name, a path, or a list (concat)
    model: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    model_options: dict[str, Any] = field(default_factory=dict)
    # How the step executes (not part of its fingerprint: results are the same either way):
    # `batch: true` (provider Batch API; `batch_poll` seconds), `engine: ray` with `ray: {actors, num_gpus, batch_size}`.
    batch: bool = False
    batch_poll: float = 30.0
    engine: str = "local"
    ray: dict[str, Any] = field(default_factory=dict)
    allow_empty: bool = False  # 0 input rows is an error unless the step allows it


@dataclass
class Pipeline:
    steps: list[Step]
    out: Path = Path("out")
    model: str = "local"
    model_options: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    name: str = "pipeline"
    base_dir: Path = Path(".")

    @classmethod
    def from_yaml(cls, path: str | Path) -> Pipeline:
        """The pipeline a YAML file describes, checked whole before anything runs (pipeline_schema:
        unknown keys, types, step names and inputs; then each method, its options and its model options)."""
        from .pipeline_schema import load_pipeline_yaml, option_line

        p = Path(path)
        if not p.is_file():
            raise InputError(p, "no such pipeline file")
        data = load_pipeline_yaml(p)
        steps = []
        for i, raw in enumerate(data.get("steps") or [], 1):
            kind = next(k for k in (*STEP_KINDS, *OTHER_KINDS) if k in raw)
            try:
                if kind == "export":
                    from ..data.export import make_options

                    make_options({**(raw.get("options") or {}), "format": raw[kind]})
                elif kind == "train":
                    from ..training import make_train_options

                    make_train_options(raw.get("options") or {})
                elif kind != "concat":
                    from ..templates import check_user_templates

                    options, _ = method_options(registry.get(kind, str(raw[kind])), dict(raw.get("options") or {}))
                    check_user_templates(options)  # a template in a shared file that reaches for internals
            except (TypeError, ValueError, KeyError) as exc:
                message = str(exc).strip("'\"") if isinstance(exc, KeyError) else str(exc)
                line = option_line(p, i - 1, "options" if not isinstance(exc, KeyError) else kind)
                raise InputError(p, f"step {i}: {message}", line=line,
                                 field="options" if not isinstance(exc, KeyError) else kind) from None
            steps.append(Step(
                name=str(raw.get("name") or (raw[kind] if kind != "concat" else f"concat{i}")),
                kind=kind, method="" if kind == "concat" else str(raw[kind]),
                input=raw[kind] if kind == "concat" else raw.get("input"),
                model=raw.get("model"), options=dict(raw.get("options") or {}),
                model_options=dict(raw.get("model_options") or {}),
                batch=bool(raw.get("batch", False)), batch_poll=float(raw.get("batch_poll") or 30.0),
                engine=str(raw.get("engine") or "local"),
                ray=dict(raw.get("ray") or {}), allow_empty=bool(raw.get("allow_empty", False)),
            ))
        pipeline = cls(steps=steps, out=Path(str(data.get("out") or "out")), model=str(data.get("model") or "local"),
                       model_options=dict(data.get("model_options") or {}), seed=int(data.get("seed") or 0),
                       name=str(data.get("name") or p.stem), base_dir=p.parent)
        for i, step in enumerate(steps):  # a misspelt model option is refused before the first step runs
            if step.kind in STEP_KINDS:
                try:
                    pipeline.model_config(step)
                    Execution(batch=step.batch, engine=step.engine).check(registry.get(step.kind, step.method))
                except ValueError as exc:
                    raise InputError(p, str(exc), line=option_line(p, i, "model_options")) from None
        return pipeline

    def run(self, out: str | Path | None = None, dry_run: bool = False, progress: bool = True) -> dict[str, Any]:
        """Run every step in order; returns the manifest. Every model's HTTP sessions are closed on every
        exit path (a finished run, a stopped one, an error)."""
        import contextlib

        from ..guard import RunLock

        out_dir = Path(out) if out else self.out
        with contextlib.ExitStack() as stack:
            if not dry_run:  # one writer per output folder; nothing it writes is one of its inputs
                self._refuse_overwrite(out_dir)
                stack.enter_context(RunLock(out_dir))
            models = stack.enter_context(Models())
            return self._run(out_dir, dry_run, progress, models)

    def _refuse_overwrite(self, out_dir: Path) -> None:
        """InputError when a step's input file is one the run writes (a step's rows, selected.jsonl, the
        manifest): the run would replace the rows it reads."""
        from ..guard import refuse_overwrite

        written = [out_dir / f"{i:02d}_{s.name}.jsonl" for i, s in enumerate(self.steps, 1)]
        written += [out_dir / "selected.jsonl", out_dir / "manifest.json"]
        for step in self.steps:
            source = self._resolve_path(step.input) if isinstance(step.input, str) else None
            if source is not None and Path(source).is_file():
                for path in written:
                    refuse_overwrite(path, [source], flag="")

    def model_config(self, step: Step, dry_run: bool = False) -> ModelConfig:
        """The step's model: its `model` (else the pipeline's) with the pipeline's `model_options`
        and then the step's (the CLI's model flags by name); a dry run of the pipeline is one of every step."""
        where = f"step {step.name}: model_options"
        config = ModelConfig.from_options(step.model or self.model, {**self.model_options, **step.model_options}, where)
        return config.replace(dry_run=True) if dry_run else config

    def _run(self, out_dir: Path, dry_run: bool, progress: bool, models: Models) -> dict[str, Any]:
        out_dir.mkdir(parents=True, exist_ok=True)
        outputs: dict[str, list[dict]] = {}
        hashes: dict[str, str] = {}
        manifest: dict[str, Any] = {"name": self.name, "seed": self.seed, "steps": []}
        previous: str | None = None
        exports: list[tuple[dict, list[dict], Any]] = []
        for idx, step in enumerate(self.steps, 1):
            folder = next((Path(f["out"]) for f, _, _ in exports if f["step"] == step.input), None)
            if step.kind == "train" and folder is not None:  # an export step's folder, as a trainer reads it
                manifest["steps"].append(self._train(step, folder, _hash_tree(folder), out_dir, dry_run))
                continue
            records, in_hash = self._step_input(step, previous, outputs, hashes)
            if not records and not dry_run and not step.allow_empty and not self._reads_documents(step, outputs):
                source = step.input or previous
                raise ValueError(f"step {step.name}: 0 input rows (from {source}); steps so far are saved in {out_dir}. "
                                 "Add `allow_empty: true` to the step to run it on none")
            if step.kind == "export":
                manifest["steps"].append(self._export(step, records, out_dir, previous, dry_run, exports))
                continue
            if step.kind == "train":
                manifest["steps"].append(self._train(step, records, in_hash, out_dir, dry_run))
                continue
            model = step.model or self.model
            info = None if step.kind == "concat" else registry.get(step.kind, step.method)
            fingerprint = json_hash({"kind": step.kind, "method": step.method, "options": step.options, "model": model,
                                 "model_options": {**self.model_options, **step.model_options},
                                 "seed": self.seed, "input": in_hash})
            path = out_dir / f"{idx:02d}_{step.name}.jsonl"
            meta_path = path.with_suffix(".step.json")
            entry: dict[str, Any] = {"step": step.name, "kind": step.kind, "method": step.method, "model": model,
                                     "options": step.options, "fingerprint": fingerprint, "output": str(path)}
            if path.exists() and meta_path.exists() and json.loads(meta_path.read_text()).get("fingerprint") == fingerprint:
                result = read_records(path) if path.stat().st_size else []
                entry.update(json.loads(meta_path.read_text()), skipped=True)
                print(f"[{step.name}] unchanged, reusing {path}", file=sys.stderr)
            elif step.kind == "concat":
                result = records
                entry.update(rows_in=len(records), rows_out=len(result), wall_s=0.0)
            else:
                options, turns = method_options(info, step.options)
                ran = run_step(MethodStep(
                    info, records, options, self.model_config(step, dry_run), out_dir / "work" / step.name,
                    seed=self.seed, turns=turns, input_path=self._resolve_path(step.input), progress=progress,
                    how=Execution(batch=step.batch, poll_s=step.batch_poll, engine=step.engine, ray=step.ray),
                    extras={"report": True, "step": step.name, "out_dir": str(out_dir)}, name=step.name,
                ), models, None if dry_run else path)  # fmt: skip
                result = ran.rows
                entry.update(ran.entry(len(records)))
                if dry_run:
                    manifest["steps"].append(entry)
                    outputs[step.name], hashes[step.name], previous = result, fingerprint, step.name
                    continue
                if ran.stopped:
                    entry["stopped"] = ran.stopped
                    manifest["steps"].append(entry)
                    manifest["stopped"] = f"step {step.name}: {ran.stopped}"
                    break
                # A step with failed or unrun rows is saved but not marked finished, so a re-run retries them.
                if ran.complete:
                    meta_path.write_text(redact(json.dumps(entry, indent=1, default=str)))
            if step.kind == "concat" and not dry_run:
                write_records(path, result)
                meta_path.write_text(redact(json.dumps(entry, indent=1, default=str)))
            cut = (entry.get("calls") or {}).get("truncated", 0)
            print(f"[{step.name}] {entry.get('rows_in', 0)} -> {entry.get('rows_out', len(result))} rows  {path}"
                  + (f"  ({cut} replies cut at max_tokens)" if cut else ""), file=sys.stderr)
            manifest["steps"].append(entry)
            outputs[step.name], hashes[step.name], previous = result, fingerprint, step.name
        if not dry_run:
            if previous is not None:
                write_records(out_dir / "selected.jsonl", outputs[previous])
            path = write_manifest(out_dir / "manifest.json", **manifest)
            if exports:
                from ..data.card import write_card

                written = json.loads(path.read_text(encoding="utf-8"))  # the card equals the file, byte for figure
                for figures, rows, opts in exports:
                    card = write_card(Path(figures["out"]), figures, rows, opts, written)
                    print(f"[{figures['step']}] card: {card}", file=sys.stderr)
        return manifest

    def _export(self, step: Step, records: list[dict], out_dir: Path, previous: str | None, dry_run: bool,
                exports: list) -> dict[str, Any]:
        """An export step: the trainer files now, the card once the manifest is written."""
        from ..data.export import make_options, write_export

        opts = make_options({"seed": self.seed, "pretty_name": self.name, **step.options, "format": step.method})
        entry: dict[str, Any] = {"step": step.name, "kind": "export", "method": step.method,
                                 "options": step.options, "rows_in": len(records)}  # fmt: skip
        if dry_run:
            return entry
        folder = out_dir / step.name
        figures = write_export(records, folder, opts, source=previous)
        from ..data.card import write_card

        write_card(folder, figures, records, opts, None)  # loadable now (a train step reads it); redone with the manifest
        entry.update(rows_out=figures["rows_out"], folder=str(folder), export=figures)
        exports.append(({**figures, "step": step.name}, records, opts))
        splits = ", ".join(f"{k} {v}" for k, v in figures["splits"].items())
        print(f"[{step.name}] {len(records)} -> {figures['rows_out']} rows ({splits})  {folder}", file=sys.stderr)
        return entry

    def _reads_documents(self, step: Step, outputs: dict) -> bool:
        """Whether the step's input is a documents folder or file (the generator reads it itself), not rows."""
        if step.kind == "concat" or not isinstance(step.input, str) or step.input in outputs:
            return False
        return Path(self._resolve_path(step.input) or "").suffix.lower() not in RECORD_SUFFIXES

    def _train(self, step: Step, data: list[dict] | Path, in_hash: str, out_dir: Path, dry_run: bool) -> dict[str, Any]:
        """A train step: TRL fine-tunes the step's base on `data` into OUT/NAME; skipped when its
        fingerprint (base, every setting, the seed, the input's content) is unchanged."""
        from dataclasses import asdict

        from ..training import make_train_options, train_sft

        opts = make_train_options({"seed": self.seed, **step.options})
        folder = out_dir / step.name
        fingerprint = json_hash({"kind": "train", "base": step.method, "settings": asdict(opts), "input": in_hash})
        entry: dict[str, Any] = {"step": step.name, "kind": "train", "method": step.method, "options": step.options,
                                 "fingerprint": fingerprint, "folder": str(folder)}  # fmt: skip
        if dry_run:
            return entry
        done = folder / "train.step.json"
        if done.is_file() and json.loads(done.read_text()).get("fingerprint") == fingerprint:
            print(f"[{step.name}] unchanged, reusing {folder / 'model'}", file=sys.stderr)
            return {**json.loads(done.read_text()), "skipped": True}
        result = train_sft(data, step.method, folder, opts, quiet=True)
        entry.update(result.as_dict(), rows_in=result.rows, rows_out=result.rows)
        done.write_text(json.dumps(entry, indent=1, default=str), encoding="utf-8")
        loss = f"loss {result.losses[0]:.4f} -> {result.losses[-1]:.4f}" if result.losses else "no loss logged"
        print(f"[{step.name}] trained {step.method} on {result.rows} rows, {result.steps} steps, {loss}  "
              f"{result.model_path}", file=sys.stderr)  # fmt: skip
        return entry

    def _resolve_path(self, value: Any) -> str | None:
        if not isinstance(value, str):
            return None
        p = Path(value)
        return str(p if p.is_absolute() or p.exists() else self.base_dir / p)

    def _step_input(self, step: Step, previous: str | None, outputs: dict, hashes: dict) -> tuple[list[dict], str]:
        if step.kind == "concat":
            names = step.input or []
            missing = [n for n in names if n not in outputs]
            if missing:
                raise ValueError(f"step {step.name}: concat names unknown step(s) {missing}")
            return [r for n in names for r in outputs[n]], json_hash([hashes[n] for n in names])
        if isinstance(step.input, str) and step.input in outputs:
            return outputs[step.input], hashes[step.input]
        if step.input is not None:
            path = Path(self._resolve_path(step.input))
            if path.is_file() and path.suffix.lower() in RECORD_SUFFIXES:
                return read_records(path), _hash_file(path)
            return [], _hash_tree(path)  # documents: the generator reads them from input_path
        if previous is None:
            raise ValueError(f"step {step.name}: no input and no previous step")
        return outputs[previous], hashes[previous]


def _hash_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _hash_tree(path: Path) -> str:
    if path.is_file():
        return _hash_file(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def run_pipeline_command(args: Any) -> int:
    pipeline = Pipeline.from_yaml(args.pipeline)
    manifest = pipeline.run(out=args.out, dry_run=args.dry_run)
    out_dir = Path(args.out) if args.out else pipeline.out
    if args.dry_run:
        from .manifest import done_rows, dry_run_line

        for s in manifest["steps"]:
            if (s.get("run") or {}).get("reused"):
                print(f"{s['step']:20} {done_rows(s['run'])}; the rest:", file=sys.stderr)
            print(f"{s['step']:20} {dry_run_line(s.get('calls', {}))}", file=sys.stderr)
        return 0
    print(f"done: {out_dir / 'selected.jsonl'}  manifest: {out_dir / 'manifest.json'}", file=sys.stderr)
    for s in manifest["steps"]:
        if s.get("kind") == "export" and s.get("folder"):
            print(f"ready to train: {s['folder']}/  card: {Path(s['folder']) / 'README.md'}", file=sys.stderr)
    from .manifest import little_output_line

    if flags := little_output_line(manifest["steps"]):
        print(flags, file=sys.stderr)  # the last line: a step that produced little is never a quiet success
    return 3 if manifest.get("stopped") else 0
