"""Batch API mode: run a method's uncached chat requests through an OpenAI-style Batch endpoint.

The method runs with its model in *collect* mode: every chat request that misses the response cache
is recorded (its body, one line per cache key, `custom_id` = the key) and the row is skipped like a
dry run. The recorded lines are written as JSONL, uploaded (`/files`, purpose=batch), submitted
(`/batches`) and polled; each answer is stored in the same response cache under its key (a line
that failed is recorded, never cached). Then the method runs again: what was answered is now a
cache hit. Methods whose later calls depend on earlier answers simply loop collect -> submit ->
collect until a pass records nothing, and that pass's output is the result. A pass ends after the
first stage (`RunContext.map`) that recorded requests, so no request is built from a row whose
earlier answer is still pending.

Resume: before submitting, the input file id and the request keys are saved in
`WORK_DIR/batch/state.json`, and the batch id as soon as it exists. A restarted run first polls
every batch that state names as unfinished and collects it, instead of submitting it again.

    from instructkit.run.batch import run_batched
    out = run_batched(alpagasus, records, ctx, poll_s=30)       # ctx.llm: an OpenAI-compatible model
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..models.cache import public_endpoint
from ..models.http_openai import chat_payload, parse_choices
from ..models.llm import LLM, DryRunSkip
from ..models.types import Completion, GenParams, ModelCallError
from .runner import RunContext, RunStats

CHAT_URL = "/v1/chat/completions"
FINAL_STATUSES = ("completed", "failed", "expired", "cancelled")
MAX_REQUESTS_PER_BATCH = 50_000  # OpenAI's limit per batch file


class BatchPending(DryRunSkip):
    """Raised in collect mode in place of an uncached call, after its request was recorded."""


class PassComplete(BaseException):
    """Ends a collect pass after the first stage that recorded requests (BaseException: a method's
    `except Exception` must not swallow it)."""


@dataclass
class Collector:
    """Uncached chat requests recorded during one pass, plus the keys whose batch line failed."""

    failed: dict[str, str] = field(default_factory=dict)
    answered: set[str] = field(default_factory=set)  # keys a batch answered in this run
    lines: dict[str, dict] = field(default_factory=dict)  # custom_id (cache key) -> JSONL line
    estimated_cost: float = 0.0
    served: set[str] = field(default_factory=set)  # fresh answers already handed out in this pass
    barrier: bool = True  # end the pass at the first stage that recorded requests
    api_base: str | None = None  # the endpoint the batch goes to: a derived model elsewhere cannot join it

    def stage_done(self, *_: Any) -> None:
        """A stage-end hook (`RunContext.on_stage_end`) for one pass. With the barrier, a stage that recorded requests
        ends the pass: later stages would otherwise ask about rows whose answers are not in yet
        (a method may carry on with a pending row's input), paying for requests no run would make."""
        if self.barrier and self.lines:
            raise PassComplete

    def fresh(self, keys: list[str], results: list[Completion | None]) -> int:
        """Mark the cached answers a batch of this run paid for as not cached, the first time each is
        read in a pass (as a direct call is paid once and then shared); returns how many."""
        count = 0
        for key, comp in zip(keys, results):
            if comp is not None and key in self.answered and key not in self.served:
                self.served.add(key)
                comp.cached = False
                count += 1
        return count

    def collect(self, llm: LLM, msgs: list[dict], gen: GenParams, missing: list[tuple[int, str]]) -> None:
        """Record the missing samples of one request (one line per cache key) and skip the row."""
        for _, key in missing:
            if key in self.failed:
                raise ModelCallError(f"batch request failed: {self.failed[key]}")
        model, base, _ = batch_target(llm)
        if self.api_base is not None and base.rstrip("/") != self.api_base.rstrip("/"):
            raise ModelCallError(f"batch mode: {llm.spec} is served elsewhere than the run's model; "
                                 "run it without --batch", retryable=False)  # fmt: skip
        for i, key in missing:
            if key in self.lines:
                continue
            params = gen.for_sample(i)  # the same per-index parameters as single calls
            body = chat_payload(model, msgs, params, 1)
            self.lines[key] = {"custom_id": key, "method": "POST", "url": CHAT_URL, "body": body}
            self.estimated_cost += llm.estimate(msgs, params, 1, batch=True)[1]
        raise BatchPending("request recorded for the batch")


def batch_target(llm: LLM) -> tuple[str, str, str | None]:
    """(model name in request bodies, API base URL, API key) of a model with a Batch endpoint."""
    ref, end = llm.ref, llm.endpoint
    # a server, or OpenAI itself (OPENAI_BASE_URL honoured, providers.py)
    if (ref.family == "openai-compatible" and ref.api_base) or (ref.route and ref.route.provider.prefix == "openai"):
        return end.model, end.api_base or "", end.api_key
    raise ValueError(
        f"--batch needs an OpenAI-compatible model with the Batch API (MODEL@URL, --api-base, or openai/...); "
        f"got {llm.spec!r}"
    )


class BatchClient:
    """The Batch endpoints of one OpenAI-compatible base URL (through the openai SDK)."""

    def __init__(self, api_base: str, api_key: str | None = None, timeout: float = 600.0):
        import openai

        self.api_base = api_base.rstrip("/")
        self._client = openai.OpenAI(base_url=self.api_base, api_key=api_key or "EMPTY", timeout=timeout)

    def upload(self, content: bytes, filename: str = "batch.jsonl") -> str:
        return self._client.files.create(file=(filename, content, "application/jsonl"), purpose="batch").id

    def create(self, input_file_id: str, window: str = "24h", metadata: dict[str, str] | None = None) -> dict:
        batch = self._client.batches.create(
            input_file_id=input_file_id, endpoint=CHAT_URL, completion_window=window, metadata=metadata
        )
        return batch.model_dump()

    def retrieve(self, batch_id: str) -> dict:
        return self._client.batches.retrieve(batch_id).model_dump()

    def content(self, file_id: str) -> str:
        return self._client.files.content(file_id).text


class BatchState:
    """`WORK_DIR/batch/state.json`: every batch submitted for this work dir, and which are unfinished."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.path = self.directory / "state.json"
        self.batches: list[dict] = []
        if self.path.exists():
            self.batches = json.loads(self.path.read_text(encoding="utf-8")).get("batches", [])

    def save(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"batches": self.batches}, indent=1), encoding="utf-8")
        os.replace(tmp, self.path)

    def unfinished(self, api_base: str) -> list[dict]:
        endpoint = public_endpoint(api_base)
        return [b for b in self.batches if not b.get("done") and b.get("endpoint") == endpoint]


@dataclass
class BatchReport:
    """What batch mode did in one run (kept in ctx.extras["batch"])."""

    rounds: int = 0
    submitted: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    requests: int = 0
    answered: int = 0
    failed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class BatchRunner:
    """Submits collected requests, polls, and stores answers in the model's response cache."""

    def __init__(self, llm: LLM, state_dir: Path, *, poll_s: float = 30.0, window: str = "24h",
                 client: BatchClient | None = None, max_wait_s: float | None = None, log: bool = True):
        self.llm = llm
        model, api_base, key = batch_target(llm)
        self.model, self.api_base = model, api_base
        self.client = client or BatchClient(api_base, key, timeout=llm.endpoint.timeout)
        self.state = BatchState(state_dir)
        self.poll_s, self.window, self.max_wait_s, self.log = poll_s, window, max_wait_s, log
        self.failed: dict[str, str] = {}
        self.answered: set[str] = set()
        self.report = BatchReport()

    def _say(self, text: str) -> None:
        if self.log:
            print(f"[batch] {text}", file=sys.stderr)

    def resume(self) -> None:
        """Collect every batch an earlier (interrupted) run submitted and did not finish."""
        for entry in self.state.unfinished(self.api_base):
            self._say(f"resuming {entry.get('id') or entry['input_file_id']} ({len(entry['keys'])} requests)")
            self.report.resumed.append(entry.get("id") or entry["input_file_id"])
            self._finish(entry)

    def submit(self, lines: list[dict]) -> None:
        """Upload and submit `lines` (in chunks of the per-batch limit), then wait for and store them."""
        entries = []
        for start in range(0, len(lines), MAX_REQUESTS_PER_BATCH):
            chunk = lines[start : start + MAX_REQUESTS_PER_BATCH]
            payload = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in chunk).encode("utf-8")
            n = len(self.state.batches)
            self.state.directory.mkdir(parents=True, exist_ok=True)
            (self.state.directory / f"input-{n:03d}.jsonl").write_bytes(payload)
            file_id = self.client.upload(payload, f"instructkit-{n:03d}.jsonl")
            entry = {"input_file_id": file_id, "endpoint": public_endpoint(self.api_base), "model": self.model,
                     "keys": [line["custom_id"] for line in chunk], "created": time.time(), "done": False}
            self.state.batches.append(entry)
            self.state.save()  # the uploaded file and its keys are known before the batch exists
            self._create(entry)
            self.report.requests += len(chunk)
            self.report.submitted.append(entry["id"])
            entries.append(entry)
        for entry in entries:
            self._finish(entry)

    def _create(self, entry: dict) -> None:
        batch = self.client.create(entry["input_file_id"], self.window, {"source": "instructkit"})
        entry["id"] = batch["id"]
        entry["status"] = batch.get("status")
        self.state.save()
        self._say(f"submitted {batch['id']}: {len(entry['keys'])} requests")

    def _finish(self, entry: dict) -> None:
        if not entry.get("id"):
            self._create(entry)  # interrupted between upload and create: reuse the uploaded file
        batch = self._wait(entry)
        answered, errors = self._store(batch, set(entry["keys"]))
        for key in entry["keys"]:
            if key not in answered and key not in errors:
                errors[key] = f"no result for this request (batch {batch['status']})"
        if errors:
            with (self.state.directory / "errors.jsonl").open("a", encoding="utf-8") as fh:
                for key, message in errors.items():
                    fh.write(json.dumps({"batch": entry["id"], "custom_id": key, "error": message}) + "\n")
        self.failed.update(errors)
        self.answered.update(answered)
        self.report.answered += len(answered)
        self.report.failed += len(errors)
        entry.update(done=True, status=batch["status"], answered=len(answered), failed=len(errors),
                     finished=time.time())
        self.state.save()
        self._say(f"{entry['id']} {batch['status']}: {len(answered)} answered, {len(errors)} failed")

    def _wait(self, entry: dict) -> dict:
        try:
            return self._poll(entry)
        except KeyboardInterrupt:
            self._say(f"{entry['id']} keeps running at the provider; run the same command again to collect it")
            raise

    def _poll(self, entry: dict) -> dict:
        start = time.monotonic()
        last = None
        while True:
            batch = self.client.retrieve(entry["id"])
            status = batch.get("status")
            if status != last:
                counts = batch.get("request_counts") or {}
                self._say(f"{entry['id']} {status} {counts.get('completed', 0)}/{counts.get('total', 0)}")
                last = status
                entry["status"] = status
                self.state.save()
            if status in FINAL_STATUSES:
                return batch
            if self.max_wait_s is not None and time.monotonic() - start > self.max_wait_s:
                raise TimeoutError(f"batch {entry['id']} still {status}; run again later to collect it")
            time.sleep(self.poll_s)

    def _store(self, batch: dict, keys: set[str]) -> tuple[set[str], dict[str, str]]:
        """Cache every successful line of the batch's output and error files; return (answered, errors)."""
        answered: set[str] = set()
        errors: dict[str, str] = {}
        if batch.get("status") == "failed" and batch.get("errors"):
            data = (batch["errors"] or {}).get("data") or []
            reason = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in data[:3]) or "batch failed"
            return answered, {k: reason for k in keys}
        llm = self.llm
        for file_key in ("output_file_id", "error_file_id"):
            file_id = batch.get(file_key)
            if not file_id:
                continue
            for raw in self.client.content(file_id).splitlines():
                if not raw.strip():
                    continue
                line = json.loads(raw)
                key = line.get("custom_id")
                if key not in keys:
                    continue
                response = line.get("response") or {}
                body = response.get("body") or {}
                if line.get("error") or response.get("status_code") != 200:
                    err = line.get("error") or body.get("error") or {}
                    message = err.get("message") if isinstance(err, dict) else str(err)
                    errors[key] = f"HTTP {response.get('status_code')}: {message}"[:500]
                    continue
                try:
                    comp = parse_choices(body)[0]
                except ModelCallError as exc:
                    errors[key] = str(exc)[:500]
                    continue
                comp.cost = llm.price(comp.usage.prompt_tokens, comp.usage.completion_tokens, batch=True)
                llm.cache.set(key, comp.to_json())
                llm.stats.calls += 1
                llm.stats.prompt_tokens += comp.usage.prompt_tokens
                llm.stats.completion_tokens += comp.usage.completion_tokens
                llm.stats.cost += comp.cost
                answered.add(key)
                errors.pop(key, None)
        llm.stats.failures += len(errors)
        return answered, errors


def run_batched(
    method_fn: Callable[[list[dict], RunContext], list[dict]],
    records: list[dict],
    ctx: RunContext,
    *,
    poll_s: float = 30.0,
    window: str = "24h",
    max_rounds: int = 100,
    barrier: bool = True,
    state_dir: str | os.PathLike | None = None,
    client: BatchClient | None = None,
    max_wait_s: float | None = None,
) -> list[dict]:
    """Run `method_fn(records, ctx)` with every uncached chat request sent through the Batch API.

    Loops collect -> submit -> poll -> store until a pass records no request; returns that pass's
    output. With `barrier` (default) a pass ends after the first `ctx.map` stage that recorded
    requests, so one batch holds one stage's requests and nothing is asked about rows still waiting
    for an earlier answer; without it a pass runs every stage (fewer rounds for methods whose stages
    are independent, but speculative requests for methods that carry pending rows forward).
    State (for resume) lives in `state_dir` (default `ctx.work_dir / "batch"`). A summary is kept in
    `ctx.extras["batch"]`. With `ctx.llm.dry_run` it is a plain dry run.
    """
    llm = ctx.llm
    if llm is None or llm.dry_run:
        return method_fn(records, ctx)
    if state_dir is None:
        if ctx.work_dir is None:
            raise ValueError("batch mode needs a work dir (ctx.work_dir or state_dir) to keep its state for resume")
        state_dir = Path(ctx.work_dir) / "batch"
    runner = BatchRunner(llm, Path(state_dir), poll_s=poll_s, window=window, client=client,
                         max_wait_s=max_wait_s, log=ctx.progress)
    runner.resume()
    for _ in range(max_rounds):
        runner.report.rounds += 1
        collector = Collector(failed=runner.failed, answered=runner.answered, barrier=barrier,
                              api_base=batch_target(llm)[1])
        result = _collect_pass(method_fn, records, ctx, collector)
        ctx.extras["batch"] = runner.report.as_dict()
        if not collector.lines:
            return result or []
        if llm.max_cost is not None and llm.stats.cost + collector.estimated_cost > llm.max_cost:
            reason = f"--max-cost {llm.max_cost:.4f}: the next batch (~${collector.estimated_cost:.4f}) would pass it"
            break
        runner.submit(list(collector.lines.values()))
        ctx.extras["batch"] = runner.report.as_dict()
    else:
        reason = f"batch mode: still new requests after {max_rounds} rounds"
    # Stopped with requests unsent: one full pass gives the output, unanswered rows pending.
    result = _collect_pass(method_fn, records, ctx, Collector(failed=runner.failed, barrier=False))
    ctx.stats.stopped_reason = reason
    return result or []


def _collect_pass(method_fn: Callable[[list[dict], RunContext], list[dict]], records: list[dict], ctx: RunContext,
                  collector: Collector) -> list[dict] | None:
    """One run of the method in collect mode; None when the barrier ended it early."""
    assert ctx.llm is not None
    ctx.stats = RunStats()
    remove = ctx.on_stage_end(collector.stage_done)
    try:
        with ctx.llm.batching.collecting(collector):
            return method_fn(records, ctx)
    except PassComplete:
        return None
    finally:
        remove()
