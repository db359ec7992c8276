"""A loopback fake of the OpenAI Batch API, on top of the fake server in tests/fakes.py (tests only).

Besides everything the fake chat server answers, it implements the Batch contract:
`POST /v1/files` (multipart, purpose=batch), `GET /v1/files/{id}` and `/v1/files/{id}/content`,
`POST /v1/batches` and `GET /v1/batches/{id}`. A batch is `validating`, then `in_progress`, then
`completed` (`batch_seconds` after creation; `batch_hold=True` keeps new and running batches in
progress until it is set back to False). The input file is validated as OpenAI does (JSON lines,
unique `custom_id`, `method` POST, `url` equal to the batch endpoint); a bad file fails the batch.
Each line is answered like a synchronous chat call (the same deterministic `reply_text`), and
fault rules apply per line: a "429", "500" or "status" rule gives that line an error response,
which goes to the error file. Lines are recorded as requests with path `BATCH_LINE_PATH`.

    with serve_fake_batch(batch_seconds=0.3) as url:
        llm = LLM("fake-model", api_base=url)
        ...
        url.count(path="/v1/batches")                   # batches created
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

from fakes import (
    CONTROL,
    Connection,
    FakeServer,
    Fault,
    ServerState,
    chat_body,
    http_response,
    main,
    prompt_text,
    server_process,
)

BATCH_LINE_PATH = "/v1/batch/chat/completions"
CHAT_ENDPOINT = "/v1/chat/completions"


class BatchState(ServerState):
    """The fake server's state plus uploaded files and batches."""

    def __init__(self, config: dict[str, Any]):
        self.files: dict[str, dict[str, Any]] = {}
        self.contents: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        super().__init__({"batch_seconds": 0.3, "batch_hold": False, **config})

    def new_id(self, prefix: str) -> str:
        return f"{prefix}-{len(self.files) + len(self.batches):06d}"

    def add_file(self, content: bytes, filename: str, purpose: str) -> dict[str, Any]:
        file_id = self.new_id("file")
        obj = {"id": file_id, "object": "file", "bytes": len(content), "created_at": int(time.time()),
               "filename": filename, "purpose": purpose, "status": "processed"}
        self.files[file_id] = obj
        self.contents[file_id] = content
        return obj

    def advance(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Move a batch along validating -> in_progress -> completed by the clock (or hold it)."""
        if batch["status"] in ("completed", "failed"):
            return batch
        age = time.time() - batch["_t0"]
        total = float(self.config["batch_seconds"])
        if batch["status"] == "validating" and age >= total / 3:
            errors = self.validate(batch)
            if errors:
                batch.update(status="failed", failed_at=int(time.time()), errors={"object": "list", "data": errors})
                return batch
            batch.update(status="in_progress", in_progress_at=int(time.time()))
        if batch["status"] == "in_progress" and age >= total and not self.config["batch_hold"]:
            self.complete(batch)
        return batch

    def validate(self, batch: dict[str, Any]) -> list[dict[str, Any]]:
        errors: list[dict[str, Any]] = []
        seen: set[str] = set()
        lines = self.contents[batch["input_file_id"]].decode("utf-8").splitlines()
        for n, raw in enumerate(lines, 1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
            except ValueError:
                errors.append({"code": "invalid_json_line", "message": "not JSON", "line": n})
                continue
            cid = line.get("custom_id")
            if not isinstance(cid, str) or not cid or cid in seen:
                errors.append({"code": "duplicate_custom_id" if cid in seen else "missing_custom_id",
                               "message": f"custom_id {cid!r}", "line": n})
            seen.add(cid)
            if line.get("method") != "POST" or line.get("url") != batch["endpoint"]:
                errors.append({"code": "invalid_url", "message": f"{line.get('method')} {line.get('url')}", "line": n})
            if not isinstance(line.get("body"), dict) or not line["body"].get("model"):
                errors.append({"code": "missing_model", "message": "body.model is required", "line": n})
        batch["request_counts"]["total"] = len(seen)
        return errors

    def complete(self, batch: dict[str, Any]) -> None:
        """Answer every line, write the output and error files, and mark the batch completed."""
        out, err = [], []
        for raw in self.contents[batch["input_file_id"]].decode("utf-8").splitlines():
            if not raw.strip():
                continue
            line = json.loads(raw)
            req = line["body"]
            prompt = prompt_text(req.get("messages") or [])
            index, attempt, rule = self.admit(prompt)
            if self.config["record"]:
                self.requests.append({"i": index, "t": time.time(), "path": BATCH_LINE_PATH, "headers": {},
                                      "body": req, "prompt": prompt, "attempt": attempt,
                                      "fault": rule.kind if rule else None, "batch": batch["id"]})
            if rule is not None and rule.kind in ("429", "500", "status"):
                status = {"429": 429, "500": 500}.get(rule.kind, rule.status)
                body = {"error": {"message": f"line failed (fake {rule.kind})", "type": "server_error"}}
                err.append({"id": f"req-{index}", "custom_id": line["custom_id"],
                            "response": {"status_code": status, "request_id": f"r{index}", "body": body},
                            "error": None})
            else:
                body = chat_body(req, self.config["model"])
                out.append({"id": f"req-{index}", "custom_id": line["custom_id"],
                            "response": {"status_code": 200, "request_id": f"r{index}", "body": body},
                            "error": None})
        for key, rows in (("output_file_id", out), ("error_file_id", err)):
            if rows:
                content = "".join(json.dumps(r) + "\n" for r in rows).encode()
                batch[key] = self.add_file(content, f"{batch['id']}_{key}.jsonl", "batch_output")["id"]
        batch["request_counts"].update(completed=len(out), failed=len(err))
        now = int(time.time())
        batch.update(status="completed", finalizing_at=now, completed_at=now)


class BatchConnection(Connection):
    """The fake server's connection handler plus the files and batches endpoints."""

    state: BatchState

    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> None:
        path = target.split("?", 1)[0]
        close = headers.get("connection", "").lower() == "close"
        parts = path.rstrip("/").split("/")
        if path == f"{CONTROL}/batches":
            self.send(http_response(200, json.dumps(list(self.state.batches.values())).encode(), close=close))
            return
        if "files" not in parts and "batches" not in parts:
            super().handle(method, target, headers, body)
            return
        state = self.state
        if state.config["record"]:
            state.requests.append({"i": -1, "t": time.time(), "path": path, "method": method, "headers": headers,
                                   "body": None, "prompt": "", "attempt": 0, "fault": None})
        try:
            status, payload = self.route(method, parts[parts.index("files" if "files" in parts else "batches"):],
                                         headers, body)
        except (ValueError, KeyError) as exc:
            status, payload = 400, {"error": {"message": f"bad request: {exc}", "type": "invalid_request_error"}}
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send(http_response(status, data, close=close))

    def route(self, method: str, parts: list[str], headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        state = self.state
        not_found = (404, {"error": {"message": "not found", "type": "invalid_request_error"}})
        if parts == ["files"] and method == "POST":
            fields = parse_multipart(headers.get("content-type", ""), body)
            if "file" not in fields or fields.get("purpose", (b"",))[0] != b"batch":
                return 400, {"error": {"message": "need a file and purpose=batch"}}
            content, filename = fields["file"][0], fields["file"][1] or "upload.jsonl"
            return 200, state.add_file(content, filename, "batch")
        if parts[0] == "files" and len(parts) >= 2:
            if parts[1] not in state.files:
                return not_found
            if len(parts) == 3 and parts[2] == "content":
                return 200, state.contents[parts[1]]
            return 200, state.files[parts[1]]
        if parts == ["batches"] and method == "POST":
            req = json.loads(body)
            file = state.files.get(req.get("input_file_id"))
            if file is None or file["purpose"] != "batch":
                return 400, {"error": {"message": f"no batch input file {req.get('input_file_id')!r}"}}
            if req.get("endpoint") != CHAT_ENDPOINT or req.get("completion_window") != "24h":
                return 400, {"error": {"message": "endpoint must be /v1/chat/completions, window 24h"}}
            batch_id = state.new_id("batch")
            batch = {"id": batch_id, "object": "batch", "endpoint": req["endpoint"], "errors": None,
                     "input_file_id": file["id"], "completion_window": "24h", "status": "validating",
                     "output_file_id": None, "error_file_id": None, "created_at": int(time.time()),
                     "request_counts": {"total": 0, "completed": 0, "failed": 0},
                     "metadata": req.get("metadata"), "_t0": time.time()}
            state.batches[batch_id] = batch
            return 200, _public(batch)
        if parts[0] == "batches" and len(parts) == 2 and method == "GET":
            batch = state.batches.get(parts[1])
            return (200, _public(state.advance(batch))) if batch else not_found
        return not_found


def _public(batch: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in batch.items() if not k.startswith("_")}


def parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[bytes, str | None]]:
    """{field name: (value bytes, filename or None)} of a multipart/form-data body."""
    boundary = content_type.split("boundary=", 1)[1].strip().strip('"').encode()
    fields: dict[str, tuple[bytes, str | None]] = {}
    for part in body.split(b"--" + boundary):
        if b"\r\n\r\n" not in part:
            continue
        head, _, value = part.partition(b"\r\n\r\n")
        disposition = next((h for h in head.decode("latin-1").split("\r\n") if h.lower().startswith("content-disposition")), "")
        params = dict(
            p.strip().split("=", 1) for p in disposition.split(";")[1:] if "=" in p
        )
        name = params.get("name", "").strip('"')
        filename = params.get("filename", "").strip('"') or None
        fields[name] = (value.removesuffix(b"\r\n"), filename)
    return fields


class FakeBatchServer(FakeServer):
    """`FakeServer` plus batch helpers."""

    def batches(self) -> list[dict[str, Any]]:
        """Every batch the server holds (oldest first)."""
        return self._call(f"{CONTROL}/batches")

    def created(self) -> int:
        """How many batches were created (POST /v1/batches)."""
        return sum(1 for r in self.requests("/v1/batches") if r.get("method") == "POST")

    def hold(self, on: bool = True) -> None:
        """Keep batches in progress (True) or let them complete (False)."""
        self.configure(batch_hold=on)


@contextlib.contextmanager
def serve_fake_batch(
    faults: list[Fault] | None = None,
    *,
    batch_seconds: float = 0.3,
    batch_hold: bool = False,
    model: str = "fake-model",
    startup_timeout: float = 30.0,
) -> Iterator[FakeBatchServer]:
    """Start the fake batch server in its own process; yield its base URL (a `FakeBatchServer`)."""
    config = {"faults": [asdict(f) for f in faults or []], "batch_seconds": batch_seconds,
              "batch_hold": batch_hold, "model": model}
    with server_process(__file__, config, FakeBatchServer, "fake batch server", startup_timeout) as url:
        yield url


if __name__ == "__main__":
    main(sys.argv, BatchState, BatchConnection)
