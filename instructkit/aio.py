"""Run coroutines from sync code on one long-lived background event loop.

One loop for the whole process keeps HTTP sessions and local-model batchers alive across calls,
and works inside notebooks that already run a loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
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
