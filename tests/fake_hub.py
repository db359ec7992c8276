"""A loopback stand-in for the Hugging Face Hub's repo and commit API (tests only: no real Hub is
reachable here). It answers what `huggingface_hub.HfApi.create_repo` and `create_commit` send, marks
every file "regular" (so contents arrive inline in the commit), and records what was uploaded."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class HubLog:
    url: str = ""
    repos: list[dict] = field(default_factory=list)  # create_repo payloads
    commits: list[dict] = field(default_factory=list)  # {"repo", "revision", "header", "files": {path: bytes}}
    validated: list[str] = field(default_factory=list)  # README.md texts sent to validate-yaml
    requests: list[tuple[str, str]] = field(default_factory=list)


def _handler(log: HubLog) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def _reply(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            path = self.path.split("?")[0]
            log.requests.append(("POST", path))
            if path == "/api/repos/create":
                body = json.loads(raw)
                log.repos.append(body)
                name = f"{body['organization']}/{body['name']}" if body.get("organization") else body["name"]
                return self._reply(200, {"url": f"{log.url}/datasets/{name}", "name": name})
            if path == "/api/validate-yaml":
                log.validated.append(json.loads(raw)["content"])
                return self._reply(200, {"errors": [], "warnings": []})
            parts = path.split("/")  # /api/datasets/ORG/NAME/{preupload|commit}/REV
            if len(parts) == 7 and parts[1] == "api" and parts[2] == "datasets" and parts[5] == "preupload":
                files = json.loads(raw)["files"]
                return self._reply(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                                                    "oid": None} for f in files]})  # fmt: skip
            if len(parts) == 7 and parts[1] == "api" and parts[2] == "datasets" and parts[5] == "commit":
                commit: dict[str, Any] = {"repo": f"{parts[3]}/{parts[4]}", "revision": parts[6], "files": {}}
                for line in raw.decode().splitlines():
                    item = json.loads(line)
                    if item["key"] == "header":
                        commit["header"] = item["value"]
                    elif item["key"] == "file":
                        commit["files"][item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                    else:
                        return self._reply(400, {"error": f"unexpected commit item {item['key']}"})
                log.commits.append(commit)
                oid = f"{len(log.commits):040x}"
                return self._reply(200, {"commitUrl": f"{log.url}/datasets/{commit['repo']}/commit/{oid}",
                                         "commitOid": oid, "pullRequestUrl": None})  # fmt: skip
            return self._reply(404, {"error": f"not faked: POST {path}"})

        def do_GET(self) -> None:  # noqa: N802
            log.requests.append(("GET", self.path))
            self._reply(404, {"error": f"not faked: GET {self.path}"})

    return Handler


@contextmanager
def serve_fake_hub() -> Iterator[HubLog]:
    """Run the fake Hub on 127.0.0.1 (a free port) for the block; yields its log (`log.url` is the endpoint)."""
    log = HubLog()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(log))
    log.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield log
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
