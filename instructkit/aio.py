"""Run coroutines from sync code on one long-lived background event loop.

One loop for the whole process keeps HTTP sessions and local-model batchers alive across calls,
and works inside notebooks that already run a loop. `EndOfTurn` batches the writes one loop turn
makes (journal lines, cache entries) into one write right after it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_loop: asyncio.AbstractEventLoop | None = None
_lock = threading.Lock()


def background_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _lock:
        if _loop is None or _loop.is_closed():
            _loop = asyncio.new_event_loop()
            thread = threading.Thread(target=_loop.run_forever, name="instructkit-loop", daemon=True)
            thread.start()
        return _loop


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` to completion on the background loop and return its result."""
    return asyncio.run_coroutine_threadsafe(coro, background_loop()).result()


class EndOfTurn:
    """Runs `flush` once right after the current event-loop turn, however many writes the turn made.

    Writers call `schedule()` after buffering a write: inside a running loop it returns True (the
    flush runs as the loop's next callback, before any further I/O is awaited, so nothing waits
    longer than one turn); outside a loop it returns False and the writer flushes at once."""

    def __init__(self, flush: Callable[[], None]):
        self._flush = flush
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop a flush is scheduled on

    def schedule(self) -> bool:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        if self._loop is not loop:
            self._loop = loop
            loop.call_soon(self._run)
        return True

    def _run(self) -> None:
        self._loop = None
        self._flush()

    def cancel(self) -> None:
        """Forget a scheduled flush (the writer flushed itself, e.g. on close)."""
        self._loop = None
