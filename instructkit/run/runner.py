"""The fault-tolerant row runner: bounded concurrency, per-row isolation, streaming journal, resume.

Every finished row is appended (and flushed) to a JSONL journal as soon as it completes (the rows
one event-loop turn finishes in one write, right after that turn), so a run killed with SIGKILL
loses nothing already answered. On the next run, rows whose journal entry is a
success are reused; rows that failed are retried; a failure never counts as an answer.
"""

from __future__ import annotations

import asyncio
import glob
import hashlib
import json
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..aio import EndOfTurn, background_loop
from ..models.cache import canonical_json, request_key
from ..models.llm import CALL_LABEL, DRY_RUN_ROW, LLM, BudgetExceeded, DryRunSkip
from ..models.types import Completion, GenParams, ModelCallError


@dataclass
class RowResult:
    key: str
    ok: bool
    value: Any = None
    error: str | None = None
    reused: bool = False
    pending: bool = False  # not run: budget reached, or skipped (batch collect mode)
    estimated: bool = False  # dry run: walked with placeholder answers (`value` is no result); never journaled


@dataclass
class RunStats:
    rows: int = 0
    ok: int = 0
    failed: int = 0
    reused: int = 0
    pending: int = 0
    stopped_reason: str | None = None
    wall_s: float = 0.0
    failures: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["failures"] = self.failures[:50]
        return data


class Journal:
    """Append-only JSONL of finished rows; the last entry for a key wins; a torn last line is ignored.

    A stage journal `X.journal.jsonl` also reads its siblings `X.journal.TAG.jsonl` (written by
    parallel workers, e.g. Ray actors); a success in any of them is never undone by a failure."""

    def __init__(self, path: Path | None, read_only: bool = False):
        self.path = path
        self.read_only = read_only  # a dry run reads what is done and writes nothing
        self.entries: dict[str, dict] = {}
        self.error: OSError | None = None  # a write failed (full or read-only disk): the stage stops
        self._fh = None
        self._lines: list[str] = []  # appended in this event-loop turn, written at its end
        self._end_of_turn = EndOfTurn(self.flush)
        for source in _journal_files(path):
            with source.open(encoding="utf-8") as fh:
                for line in fh:
                    try:
                        entry = json.loads(line)
                    except ValueError:
                        continue  # a line cut by a crash
                    if entry.get("ok") or not self.entries.get(entry["key"], {}).get("ok"):
                        self.entries[entry["key"]] = entry

    def done(self, key: str) -> dict | None:
        """The success recorded for `key` when the journal was opened (a run reads it once, first)."""
        entry = self.entries.get(key)
        return entry if entry is not None and entry.get("ok") else None

    def append(self, entry: dict) -> None:
        """Write one finished row (not kept in memory: the run holds its result, the file the rest)."""
        if self.path is None or self.read_only:
            return
        self._lines.append(json.dumps(entry, ensure_ascii=False, default=str) + "\n")
        if not self._end_of_turn.schedule():
            self.flush()

    def flush(self) -> None:
        """Write the buffered lines and hand them to the OS (what SIGKILL cannot take back)."""
        if not self._lines or self.error is not None:
            return
        try:
            if self._fh is None:
                assert self.path is not None
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fh = self.path.open("a", encoding="utf-8")
            self._fh.write("".join(self._lines))
            self._fh.flush()
        except OSError as exc:  # the stage stops; amap_rows raises it once its rows in flight are done
            self.error = exc
            return
        self._lines = []

    def close(self) -> None:
        self.flush()
        self._end_of_turn.cancel()
        if self._fh is not None:
            try:
                self._fh.close()
            except OSError as exc:
                self.error = self.error or exc
            self._fh = None


def _journal_files(path: Path | None) -> list[Path]:
    """The journal at `path` and, for a stage journal, every tagged sibling of its stage."""
    if path is None:
        return []
    name = path.name
    if ".journal." not in name:
        return [path] if path.exists() else []
    stage = name.rsplit(".journal.", 1)[0]
    return sorted(path.parent.glob(glob.escape(stage) + ".journal.*jsonl"))  # the untagged one included


class Progress:
    """A rich progress bar (rows, rate, ETA, tokens, cost) on a terminal; sparse log lines otherwise."""

    def __init__(self, label: str, total: int, llm: LLM | None, enabled: bool = True):
        self.label, self.total, self.llm = label, total, llm
        self.done = 0
        self.start = time.monotonic()
        self._last_line = 0.0
        self._bar = None
        self.enabled = enabled
        if enabled and sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]} rows/s"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[extra]}"),
                transient=False,
                refresh_per_second=4,
            )
            self._task = self._bar.add_task(label, total=total, rate="-", extra="")
            self._bar.start()

    def _extra(self) -> str:
        if self.llm is None:
            return ""
        s = self.llm.stats
        extra = f"tok {s.prompt_tokens + s.completion_tokens:,} ${s.cost:.4f} hits {s.cache_hits}"
        gate = self.llm.limiter
        return f"{extra} | {gate.describe()}" if gate is not None and gate.informed else extra

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        rate = self.done / max(now - self.start, 1e-9)
        if self._bar is not None:
            self._bar.update(self._task, advance=n, rate=f"{rate:.1f}", extra=self._extra())
        elif self.enabled and (now - self._last_line > 10 or self.done == self.total):
            self._last_line = now
            print(f"[{self.label}] {self.done}/{self.total} rows {rate:.1f}/s {self._extra()}", file=sys.stderr)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def row_key(stage: str, payload: Any) -> str:
    return request_key({"stage": stage, "payload": payload})


class RowKeys(Sequence[str]):
    """`row_key(stage, {"base": base, "item": item})` of each item, the same strings, each computed when
    first asked for (a fresh stage sends its first requests without hashing every row first), with the
    part shared by every row (the stage's options and model) serialised and hashed once: canonical JSON
    is built key by key in sorted order, so the text is prefix + item + suffix."""

    def __init__(self, stage: str, base: Any, items: list[Any]):
        self._prefix = hashlib.sha256(('{"payload":{"base":' + canonical_json(base) + ',"item":').encode("utf-8"))
        self._suffix = '},"stage":' + canonical_json(stage) + "}"
        self._items = items
        self._keys: list[str | None] = [None] * len(items)

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        key = self._keys[i]
        if key is None:
            h = self._prefix.copy()
            h.update((canonical_json(self._items[i]) + self._suffix).encode("utf-8"))
            key = self._keys[i] = h.hexdigest()
        return key


def row_keys(stage: str, base: Any, items: list[Any]) -> list[str]:
    """Every item's row key at once (`RowKeys` computes them as asked)."""
    return list(RowKeys(stage, base, items))


async def amap_rows(
    items: list[Any],
    fn: Callable[[Any], Awaitable[Any]],
    *,
    keys: Sequence[str],
    journal_path: Path | None = None,
    read_only: bool = False,
    concurrency: int = 64,
    llm: LLM | None = None,
    label: str = "rows",
    progress: bool = True,
    stats: RunStats | None = None,
) -> list[RowResult]:
    """Apply `fn` to every item with at most `concurrency` in flight; isolate, journal and resume."""
    stats = stats if stats is not None else RunStats()
    journal = Journal(journal_path, read_only)
    results: list[RowResult | None] = [None] * len(items)
    todo = []
    for i in range(len(items)) if journal.entries else ():  # none done yet: keys come as rows start
        entry = journal.done(keys[i])
        if entry is not None:
            results[i] = RowResult(keys[i], True, entry.get("value"), reused=True)
        else:
            todo.append(i)
    if not journal.entries:
        todo = list(range(len(items)))
    stats.rows += len(items)
    stats.reused += len(items) - len(todo)
    bar = Progress(label, len(items), llm, enabled=progress)
    bar.advance(len(items) - len(todo)) if len(items) != len(todo) else None
    stop = asyncio.Event()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in todo:
        queue.put_nowait(i)

    async def worker() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            key = keys[i]
            if stop.is_set() or journal.error is not None:
                results[i] = RowResult(key, False, pending=True)
                continue
            walked = [False]  # set by a dry run's placeholder answer anywhere in this row
            token = DRY_RUN_ROW.set(walked)
            try:
                value = await fn(items[i])
            except BudgetExceeded as exc:
                stop.set()
                stats.stopped_reason = str(exc)
                results[i] = RowResult(key, False, error=str(exc), pending=True)
                continue
            except DryRunSkip:
                results[i] = RowResult(key, False, pending=True)
                continue
            except Exception as exc:  # one row never sinks the run
                message = f"{type(exc).__name__}: {exc}"
                results[i] = RowResult(key, False, error=message)
                journal.append({"key": key, "ok": False, "error": message, "t": time.time()})
                stats.failures.append({"stage": label, "row": i, "error": message[:500]})
                # A failed model call or bad row value is expected: its message is in the output and
                # the summary. Anything else is a bug worth a (short) traceback.
                expected = (ModelCallError, ValueError, RuntimeError, KeyError, TypeError)
                if not isinstance(exc, expected) or getattr(exc, "debug", False):
                    traceback.print_exc(limit=2, file=sys.stderr)
            else:
                if walked[0]:  # a dry run's placeholder went into it: walked, not answered
                    results[i] = RowResult(key, True, value, estimated=True)
                else:
                    results[i] = RowResult(key, True, value)
                    journal.append({"key": key, "ok": True, "value": value, "t": time.time()})
            finally:
                DRY_RUN_ROW.reset(token)
            bar.advance()

    try:
        await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, len(todo))))))
    finally:
        bar.close()
        journal.close()
    if journal.error is not None:  # answers not journaled cannot be resumed: stop the run, in one line
        raise journal.error
    final = [r if r is not None else RowResult(keys[i], False, pending=True) for i, r in enumerate(results)]
    stats.ok += sum(r.ok and not r.estimated for r in final)
    stats.failed += sum((not r.ok) and not r.pending for r in final)
    stats.pending += sum(r.pending or r.estimated for r in final)
    return final


StageHook = Callable[["RunContext", str, list[RowResult]], None]


def save_calibration(ctx: RunContext, stage: str, results: list[RowResult]) -> None:
    """Stage-end hook: store what this stage's real calls taught the dry-run estimate."""
    if ctx.llm is not None and not ctx.llm.dry_run:
        ctx.llm.save_calibration()


@dataclass
class RunContext:
    """What a method receives besides its records: the model, options, where to journal, seeds.

    `stage_end` holds the hooks `map` fires after each stage, in order, as `hook(ctx, stage, results)`:
    the calibration store by default; batch mode adds its pass barrier (`on_stage_end`). A context
    made for a method run inside another (generators' `run_registered`) shares its parent's list."""

    llm: LLM | None = None
    options: Any = None
    method: str = ""
    work_dir: Path | None = None
    concurrency: int = 64
    random_state: int = 0
    progress: bool = True
    stats: RunStats = field(default_factory=RunStats)
    extras: dict[str, Any] = field(default_factory=dict)
    journal_tag: str = ""  # parallel workers (Ray actors) journal to X.journal.<tag>.jsonl
    turns: Any = None  # judges and scorers on chat rows: instructkit.data.turns.TurnOptions (None: the default)
    stage_end: list[StageHook] = field(default_factory=lambda: [save_calibration])
    window: str = ""  # a streaming step's "window k/n", shown in the progress label

    def on_stage_end(self, hook: StageHook) -> Callable[[], None]:
        """Fire `hook(ctx, stage, results)` after every later stage; returns the function that removes it."""
        self.stage_end.append(hook)
        return lambda: self.stage_end.remove(hook)

    def stage_key(self, stage: str) -> dict[str, Any]:
        return {
            "method": self.method,
            "stage": stage,
            "options": canonical_json(self.options.__dict__ if hasattr(self.options, "__dict__") else self.options),
            "model": self.llm.identity if self.llm is not None else None,  # known without loading a model
        }

    async def amap(self, items: list[Any], fn: Callable[[Any], Awaitable[Any]], stage: str) -> list[RowResult]:
        """Run `fn` over items as one resumable stage (journal under work_dir/<method>.<stage>.journal.jsonl)."""
        base = self.stage_key(stage)
        keys = RowKeys(stage, base, items)
        journal = None
        dry_run = self.llm is not None and self.llm.dry_run
        if self.work_dir is not None:  # a dry run reads it (rows done cost nothing) and never writes
            safe = f"{self.method}.{stage}".replace("/", "_").replace(" ", "_")
            tag = f".{self.journal_tag}" if self.journal_tag else ""
            journal = Path(self.work_dir) / f"{safe}.journal{tag}.jsonl"
        # Calls are labelled by method and stage (a jury member's "jury.0.rubric" as "rubric"), for
        # the dry-run estimate's calibration.
        token = CALL_LABEL.set(f"{self.method.rsplit('.', 1)[-1]}:{stage}")
        try:
            return await amap_rows(
                items,
                fn,
                keys=keys,
                journal_path=journal,
                read_only=dry_run,
                concurrency=self.concurrency,
                llm=self.llm,
                label=(f"{self.method}:{stage}" if self.method else stage) + (f" {self.window}" if self.window else ""),
                progress=self.progress,
                stats=self.stats,
            )
        finally:
            CALL_LABEL.reset(token)

    def map(self, items: list[Any], fn: Callable[[Any], Awaitable[Any]], stage: str) -> list[RowResult]:
        """Sync form of `amap`: it runs on the background loop (aio.py), handed over from here, so that a
        row's work goes down from the runner without a detour through another file."""
        results = asyncio.run_coroutine_threadsafe(self.amap(items, fn, stage), background_loop()).result()
        for hook in list(self.stage_end):
            hook(self, stage, results)
        return results


    def map_chats(self, items: list[Any], request: Callable[[Any], Chat], read: Callable[[Any, Chat, Completion], Any],
                  stage: str) -> list[RowResult]:  # fmt: skip
        """`map` for a stage whose row is one chat request: the runner sends `request(item)` to the run's
        model and keeps `read(item, chat, reply)` as the row's result. The method says what to ask and how
        to read the answer; the request goes from here to the model without coming back through it."""
        llm = self.llm
        if llm is None:
            raise ValueError(f"{self.method or 'this method'} needs a model (--model)")

        async def ask(item: Any) -> Any:
            chat = request(item)
            return read(item, chat, await llm.achat(chat.messages, params=chat.params))

        return self.map(items, ask, stage)


@dataclass
class Chat:
    """One row's chat request for `RunContext.map_chats`: the messages and options sent, and `note`, what
    the reader wants back beside the reply (the prompt a score is read against, say)."""

    messages: list[dict]
    params: GenParams
    note: Any = None

def merge_results(records: list[dict], results: list[RowResult], stage: str) -> list[dict]:
    """Records with each row's new fields merged in; failed rows keep their error in `_errors`."""
    out = []
    for rec, res in zip(records, results):
        new = dict(rec)
        if res.ok and isinstance(res.value, dict):
            new.update(res.value)
        elif not res.ok:
            errors = dict(new.get("_errors") or {})
            errors[stage] = res.error or ("not run (budget or dry run)" if res.pending else "failed")
            new["_errors"] = errors
        out.append(new)
    return out
