"""One step runner for the CLI (`instructkit judge ...`) and pipelines (`instructkit run`).

`run_step` takes a method, its rows, its options and a `ModelConfig`, builds the model (through the
run's `Models`, so steps with the same config share one) and the `RunContext`, executes it as its
`Execution` says (in process, Batch API, Ray), writes the rows and returns what the manifest
records. The CLI's model flags and a pipeline's `model`/`model_options` both become a `ModelConfig`
first, so a step gets the same model, limits, budget and concurrency whichever way it was asked for.
The two manifests differ only in shape: the CLI writes `OUT.manifest.json` for its one step, a
pipeline one entry per step in `OUT/manifest.json` (`StepResult.entry` holds what they share).
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.io import JsonlWriter, Records, detect_format, read_records, read_windows, write_records
from ..data.turns import split_turn_options, views_of
from ..models.config import ModelConfig
from ..registry import MethodInfo
from .execution import Execution, check_step
from .runner import RunContext

DEFAULT_WINDOW = 10_000  # rows a streaming step holds at once (`--window`)


class RecordWindows:
    """A JSONL input a streaming step reads `size` rows at a time (each pass reads the file again).
    Its length, the row count, is known once a pass has counted it (`run_step` checks every row first)."""

    def __init__(self, path: str | Path, size: int, mapping: dict[str, str] | None = None):
        self.path, self.size, self.mapping = Path(path), size, mapping
        self.rows: int | None = None

    def __iter__(self) -> Iterator[Records]:
        return read_windows(self.path, self.size, self.mapping)

    def __len__(self) -> int:
        if self.rows is None:
            self.rows = sum(len(w) for w in self)
        return self.rows


def streams(info: MethodInfo, options: Any, how: Execution | None, config: ModelConfig, out: Path | None) -> bool:
    """Whether a step may run its input in windows: a method whose rows stand alone with these options
    (`MethodInfo.cross_row_reason`: selectors and generators need every row unless they declare not),
    in this process (not Batch API, not Ray), no dry run, its output written as JSONL."""
    how = how or Execution()
    return (not info.cross_row_reason(options) and not how.batch and how.engine == "local" and not config.dry_run
            and out is not None and detect_format(Path(out)) == "jsonl")


def step_input(path: str, mapping: dict[str, str] | None, window: int) -> Records | RecordWindows:
    """A step's records file: in memory, or as windows of `window` rows when it is JSONL with more rows."""
    p = Path(path)
    if window > 0 and p.is_file() and detect_format(p) == "jsonl":
        windows = read_windows(p, window, mapping)
        try:
            if next(windows, None) is not None and next(windows, None) is not None:
                return RecordWindows(p, window, mapping)
        finally:
            windows.close()
    return read_records(path, mapping=mapping)


def method_options(info: MethodInfo, values: dict[str, Any]) -> tuple[Any, Any]:
    """(the method's options object, the turn options) from `-o NAME VALUE` pairs or a step's `options`."""
    turns, values = split_turn_options(dict(values)) if info.takes_turn_options else (None, dict(values))
    return info.make_options(values), turns


class Models:
    """The models of one run, one per distinct `ModelConfig`, all closed together (HTTP sessions of
    the models and of every model derived from them) on every exit path."""

    def __init__(self) -> None:
        self._llms: dict[ModelConfig, Any] = {}

    def get(self, config: ModelConfig) -> Any:
        if config not in self._llms:
            from ..models import LLM

            self._llms[config] = LLM(config)
        return self._llms[config]

    def close(self) -> None:
        for llm in self._llms.values():
            llm.close()
        self._llms.clear()

    def __enter__(self) -> Models:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


@dataclass
class MethodStep:
    """One method step, as the CLI's flags or a pipeline's YAML describe it."""

    info: MethodInfo
    records: list[dict] | RecordWindows  # windows: run, journaled and written a window at a time
    options: Any  # the method's options object (`method_options`)
    model: ModelConfig
    work_dir: Path
    seed: int = 0
    turns: Any = None
    how: Execution | None = None  # None: in this process
    input_path: str | None = None
    progress: bool = True
    extras: dict[str, Any] = field(default_factory=dict)  # RunContext.extras beside input_path
    name: str = ""  # a pipeline step's name (for its messages)
    lock: bool = False  # hold the work folder's RunLock once the input passed its check (not in a dry run)


@dataclass
class StepResult:
    rows: list[dict]
    ctx: RunContext
    llm: Any
    wall_s: float
    calls: dict[str, Any]  # this step's model calls (what the run's models counted while it ran)
    figures: dict[str, Any]  # the dataset card's figures (none in a dry run)
    model_identity: Any
    note: str | None = None  # why the step passed its rows through unchanged (a dry run's selector)
    calls_total: dict[str, Any] | None = None  # the calls of every session of this step (a resumed run's too)
    rows_written: int | None = None  # a streaming step's output rows (its `rows` are not kept)

    @property
    def rows_out(self) -> int:
        return self.rows_written if self.rows_written is not None else len(self.rows)

    @property
    def stopped(self) -> str | None:
        return self.ctx.stats.stopped_reason

    @property
    def complete(self) -> bool:
        """No failed and no unrun rows: a pipeline marks the step done, a re-run skips it."""
        return self.ctx.stats.failed == 0 and self.ctx.stats.pending == 0

    def entry(self, rows_in: int) -> dict[str, Any]:
        """What both manifests record of the step."""
        entry = {"rows_in": rows_in, "rows_out": self.rows_out, "wall_s": round(self.wall_s, 2),
                 "run": self.ctx.stats.as_dict(), "calls": self.calls, "model_identity": self.model_identity,
                 "calls_total": self.calls_total if self.calls_total is not None else self.calls,
                 "model_config": self.ctx.llm.config.public() if self.ctx.llm is not None else None,
                 **self.figures}  # fmt: skip
        if self.note:
            entry["dry_run_note"] = self.note
        return entry


def run_step(step: MethodStep, models: Models, out: Path | None = None) -> StepResult:
    """Run one method step: its model from `models` (when the method needs one), its RunContext, the
    method as `step.how` says; its rows written to `out` unless this is a dry run."""
    info, config = step.info, step.model
    llm = models.get(config) if info.needs_model else None
    windows = step.records if isinstance(step.records, RecordWindows) else None
    rows_in = 0
    for part in windows or [step.records]:  # the input's one check, every row, before any call
        check_step(info, part, step.options, llm, step.how)
        rows_in += len(part)
    if windows is not None:
        windows.rows = rows_in
    if config.dry_run:
        return _run_checked(step, llm, windows, out)
    from ..guard import RunLock, check_writable

    if out is not None:  # every place the step writes, checked before its first call
        check_writable(Path(out).parent)
    check_writable(step.work_dir, "work folder")
    if llm is not None and llm.cache.enabled:
        check_writable(llm.cache.directory, "response cache folder (--cache-dir)")
    if not step.lock:
        return _run_checked(step, llm, windows, out)
    with RunLock(step.work_dir):
        return _run_checked(step, llm, windows, out)


def _run_checked(step: MethodStep, llm: Any, windows: RecordWindows | None, out: Path | None) -> StepResult:
    """`run_step` once the input passed its check and the folders it writes are writable (and locked)."""
    info, config = step.info, step.model
    ctx = RunContext(llm=llm, options=step.options, method=info.name, work_dir=step.work_dir,
                     concurrency=config.concurrency, random_state=step.seed, progress=step.progress,
                     turns=step.turns, extras={"input_path": step.input_path, **step.extras})  # fmt: skip
    before = llm.stats.as_dict() if llm else {}
    note = None
    written = None
    start = time.monotonic()
    try:
        if windows is not None:
            assert out is not None  # `streams`: a CLI step with a JSONL output
            records_in, rows, written = run_windows(step, windows, ctx, out)
        else:
            records_in, rows = step.records, execute(info, step.records, ctx, step.how)
    except BaseException as exc:
        if llm is not None and not config.dry_run:  # an interrupted session paid too: the card counts it
            add_session(step.work_dir, calls_since(before, llm))
        if not (isinstance(exc, ValueError) and config.dry_run and not info.needs_model):
            raise
        # A selector over a dry run's rows finds no scores (no model answered): the later steps are
        # estimated on every row, an upper bound, and the run says so.
        records_in = rows = step.records
        note = f"not run on dry-run rows ({exc}); later steps estimated on all rows"
        print(f"[{step.name or info.name}] dry run: {note}", file=sys.stderr)
    ctx.stats.wall_s = time.monotonic() - start
    calls = calls_since(before, llm)
    if llm is not None and llm.limiter is not None and llm.limiter.informed:
        calls["limiter"] = llm.limiter.state()  # what the adaptive gate learned (cli's summary line)
    figures: dict[str, Any] = {}
    total = None
    if not config.dry_run:
        total = add_session(step.work_dir, calls)
        from ..data.card import step_figures  # what a dataset card made from this output reports

        figures = step_figures(info.kind, info.func, records_in, rows, step.options, ctx, step.input_path)
        if out is not None and windows is None:
            write_records(out, rows)
    identity = llm.identity if llm is not None and not config.dry_run else config.model
    kept = [] if windows is not None else rows
    return StepResult(kept, ctx, llm, ctx.stats.wall_s, calls, figures, identity, note, total, written)


def run_windows(step: MethodStep, windows: RecordWindows, ctx: RunContext, out: Path) -> tuple[Any, Any, int]:
    """Run a step one window of rows at a time: each window read, run (its journals in a folder of its
    own under the work folder, `window-SIZE/NNNNNN`, so it resumes on its own), appended to the output
    and forgotten but for what the figures read. The output is put in place once every window ran;
    the method's summaries of the windows add up to the step's. Returns (input figure rows, output
    figure rows, rows written)."""
    from ..data.card import FigureRows
    from .manifest import write_method_summary

    figures_in, figures_out = FigureRows(), FigureRows()
    base_extras = dict(ctx.extras)
    key = f"{step.info.kind}_summary"
    summaries: dict[str, dict[str, Any]] = {}
    count = math.ceil(len(windows) / windows.size)
    writer = JsonlWriter(out)
    try:
        for k, window in enumerate(windows):
            ctx.work_dir = Path(step.work_dir) / f"window-{windows.size}" / f"{k:06d}"
            ctx.window = f"window {k + 1}/{count}"
            ctx.extras = dict(base_extras)
            rows = execute(step.info, window, ctx, step.how)
            for name, counts in (ctx.extras.get(key) or {}).items():
                summaries[name] = add_counts(summaries.get(name), counts, step.options)
            writer.write(rows)
            figures_in.add(window)
            figures_out.add(rows)
    except BaseException:
        writer.discard()
        raise
    finally:
        ctx.work_dir, ctx.window = step.work_dir, ""
        ctx.extras = {**ctx.extras, **({key: summaries} if summaries else {})}
    writer.close()
    for name, counts in summaries.items():
        write_method_summary(ctx, step.info.kind, counts, name=name)
    return figures_in, figures_out, writer.rows


def add_counts(total: dict[str, Any] | None, new: dict[str, Any], options: Any = None) -> dict[str, Any]:
    """Two windows' method summaries as one: counts (numbers, and dicts of them) add up; the options a
    summary repeats, and any value the windows agree on that is no number, stay; a fraction that
    differs is the mean of the windows' weighted by their `rows`."""
    if total is None:
        return dict(new)
    given = dataclasses.asdict(options) if dataclasses.is_dataclass(options) else {}
    weights = (total.get("rows") or 0, new.get("rows") or 0)
    out = dict(total)
    for k, v in new.items():
        old = total.get(k)
        if k in given and given[k] == v or isinstance(v, bool) or old is None:
            out[k] = v
        elif isinstance(v, dict) and isinstance(old, dict):
            out[k] = add_counts(old, v)
        elif isinstance(v, int) and isinstance(old, int):
            out[k] = old + v
        elif isinstance(v, float) and isinstance(old, (int, float)) and v != old:
            out[k] = (old * weights[0] + v * weights[1]) / max(sum(weights), 1)
        else:
            out[k] = v
    return out


def execute(info: MethodInfo, records: list[dict], ctx: RunContext, how: Execution | None = None) -> list[dict]:
    """Run a registered method on `records` (checked: `execution.check_step`) as `how` says (default:
    in this process). Judges and scorers run on chat rows' turn views (`ctx.turns`), their output
    folded back: data transforms before and after the method, which is called from here."""
    how = how or Execution()
    views = views_of(records, ctx.turns) if info.takes_turn_options else None
    rows = views.rows if views is not None else records
    if how.batch:
        from .batch import run_batched

        out = run_batched(info.func, rows, ctx, poll_s=how.poll_s)
    elif how.engine == "ray":
        from .ray_engine import run_on_ray

        out = run_on_ray(info.func, rows, ctx, **how.ray)
    else:
        out = info.func(rows, ctx)
    return views.fold(out) if views is not None else out


SESSIONS = "calls.sessions.jsonl"


def calls_since(before: dict[str, Any], llm: Any) -> dict[str, Any]:
    """The calls the run's models counted since `before` (this step's)."""
    after = llm.stats.as_dict() if llm else {}
    return {k: after[k] - before.get(k, 0) for k in after if isinstance(after[k], (int, float))}


def add_session(work_dir: Path, calls: dict[str, Any]) -> dict[str, Any]:
    """Record this session's calls in the step's work folder and return the sum over every session
    (an interrupted run resumed twice paid three times: the card reports all of it)."""
    import json

    path = Path(work_dir) / SESSIONS
    total: dict[str, Any] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                earlier = json.loads(line)
            except ValueError:
                continue  # a line cut by a crash
            for k, v in earlier.items() if isinstance(earlier, dict) else ():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    total[k] = total.get(k, 0) + v
    if any(calls.values()):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(calls) + "\n")
        except OSError:  # a full disk: the figure is lost, never the run's answers
            pass
    for k, v in calls.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):  # figures add up; the limiter's state does not
            total[k] = total.get(k, 0) + v
    return {k: round(v, 10) if isinstance(v, float) else v for k, v in total.items()}
