"""Content-addressed response cache on diskcache.

The key is a SHA-256 over the canonical request: operation, backend family, model id, endpoint
(without credentials), messages, every generation parameter and the sample index. API keys never
enter the key or the value. Only successful answers are stored, so a failure is always retried.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import sys
import time
import weakref
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import diskcache

from .. import fastjson
from ..aio import EndOfTurn

DEFAULT_CACHE_DIR = Path(os.environ.get("INSTRUCTKIT_CACHE_DIR", Path.home() / ".cache" / "instructkit"))


_LIVE: weakref.WeakSet[ResponseCache] = weakref.WeakSet()  # flushed at interpreter exit


def canonical_json(obj: Any) -> str:
    """Deterministic JSON: sorted keys, no whitespace, UTF-8 kept."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def request_key(payload: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()


def public_endpoint(api_base: str | None) -> str | None:
    """The api base as it may appear in keys and logs: no user:password, query or fragment."""
    if not api_base:
        return None
    parts = urlsplit(api_base.rstrip("/"))
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def default_response_dir() -> Path:
    """`$INSTRUCTKIT_RESPONSE_CACHE_DIR`, else `$INSTRUCTKIT_CACHE_DIR/responses` (~/.cache/instructkit)."""
    override = os.environ.get("INSTRUCTKIT_RESPONSE_CACHE_DIR")
    if override:
        return Path(override)
    return Path(os.environ.get("INSTRUCTKIT_CACHE_DIR", DEFAULT_CACHE_DIR)) / "responses"


class ResponseCache:
    """A diskcache-backed store of JSON answers; safe for several processes on one directory."""

    def __init__(self, directory: str | os.PathLike | None = None, enabled: bool = True):
        self.directory = Path(directory) if directory else default_response_dir()
        self.enabled = enabled
        self._store: diskcache.Cache | None = None
        self._pending: dict[str, str] = {}  # written in this event-loop turn, committed at its end
        self.write_error: str | None = None  # why answers stopped being stored (a full or read-only disk)
        self._end_of_turn = EndOfTurn(self.flush)
        _LIVE.add(self)

    @property
    def store(self) -> diskcache.Cache:
        if self._store is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            # Large size limit: the cache holds paid answers, eviction must be the user's choice. Nothing
            # expires or is evicted, so no set needs to look for entries to cull (cull_limit=0 saves
            # a query per answer stored).
            self._store = diskcache.Cache(str(self.directory), size_limit=2**40, eviction_policy="none",
                                          cull_limit=0)
        return self._store

    def get(self, key: str) -> dict[str, Any] | None:
        if not self.enabled:
            return None
        raw = self._pending.get(key)
        if raw is None:
            raw = self.store.get(key)
        if raw is None:
            return None
        return fastjson.loads(raw, small_ints=True)["v"]

    def set(self, key: str, value: dict[str, Any]) -> None:
        """Store an answer. Inside an event loop, the writes of one loop turn are committed together
        by a callback that runs right after it (one SQLite transaction for a burst of answers)."""
        if not self.enabled or self.write_error is not None:
            return
        self._pending[key] = fastjson.dumps_text({"t": time.time(), "v": value})
        if not self._end_of_turn.schedule():
            self.flush()

    def flush(self) -> None:
        """Commit pending writes (called by the loop; also by close and at interpreter exit)."""
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        try:
            store = self.store
            with store.transact():
                for key, raw in pending.items():
                    store.set(key, raw)
        except Exception as exc:
            from ..guard import describe_os_error, is_disk_error

            if not is_disk_error(exc):
                self._pending = {**pending, **self._pending}
                raise
            # A full or read-only disk: the run goes on (its journals keep every answer), storing no more.
            self.write_error = describe_os_error(exc)
            print(f"warning: the response cache {self.directory} cannot store answers ({self.write_error}); "
                  "the run goes on, its journals keep every answer", file=sys.stderr)
        except BaseException:
            self._pending = {**pending, **self._pending}
            raise

    def read_note(self, key: str) -> dict[str, Any] | None:
        """A small side record kept beside the answers (not an answer: never counted, pruned or
        cleared with them), e.g. a model's dry-run calibration; None when absent or disabled."""
        if not self.enabled:
            return None
        try:
            return json.loads((self.directory / "notes" / f"{key}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def write_note(self, key: str, value: dict[str, Any]) -> None:
        """Replace a side record atomically (a reader never sees half of it)."""
        if not self.enabled:
            return
        folder = self.directory / "notes"
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{key}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(value), encoding="utf-8")
        os.replace(tmp, folder / f"{key}.json")

    def stats(self) -> dict[str, Any]:
        store = self.store
        return {"directory": str(self.directory), "entries": len(store), "bytes": store.volume()}

    def clear(self) -> int:
        return self.store.clear()

    def prune(self, older_than_days: float) -> int:
        """Delete answers stored more than `older_than_days` ago; returns how many."""
        cutoff = time.time() - older_than_days * 86400
        removed = 0
        store = self.store
        for key in list(store.iterkeys()):
            raw = store.get(key)
            if raw is not None and json.loads(raw).get("t", 0) < cutoff:
                store.delete(key)
                removed += 1
        return removed

    def close(self) -> None:
        self.flush()
        if self._store is not None:
            self._store.close()
            self._store = None


@atexit.register
def _flush_all() -> None:
    for cache in list(_LIVE):
        try:
            cache.flush()
        except Exception:  # best effort at exit
            pass
