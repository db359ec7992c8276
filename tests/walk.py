"""The request walk: the chain of package files a call passes through from the CLI down to a backend.

At the moment a backend's `chat`/`complete` is entered, the chain is the Python stack of that frame,
preceded by the stack that created its asyncio task (and that task's creator, and so on), and by the
caller of `asyncio.run_coroutine_threadsafe` where sync code handed a coroutine to the background
loop. Only the package's own files count (instructkit/, judge/, generators/, scorers/, selection/);
consecutive frames in one file are one stay. Test code: not installed."""

from __future__ import annotations

import asyncio
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ("instructkit", "judge", "generators", "scorers", "selection")
ENTRY_NAMES = frozenset({"chat", "complete"})


def package_file(filename: str) -> str | None:
    """`filename` relative to the repository when it is one of the package's files, else None."""
    try:
        rel = Path(filename).resolve().relative_to(ROOT)
    except ValueError:
        return None
    return rel.as_posix() if rel.parts and rel.parts[0] in FOLDERS else None


def stays(files: list[str]) -> list[str]:
    """Consecutive repeats folded: the files in the order the chain stays in them."""
    out: list[str] = []
    for f in files:
        if not out or out[-1] != f:
            out.append(f)
    return out


@contextmanager
def record_walk(is_backend: Callable[[str], bool]) -> Iterator[list[list[str]]]:
    """Record the chain (package files, root first) each time a backend entry (`chat`/`complete` in a
    file `is_backend` accepts) is called, in any thread; yields the list the chains are appended to."""
    origins: dict[int, list[str]] = {}  # id(task) or id(coroutine) -> chain that created it
    keep: list[Any] = []  # keeps the keyed objects alive, so their ids stay theirs
    chains: list[list[str]] = []
    lock = threading.Lock()

    def stack_files(skip: int) -> list[str]:
        frames = traceback.extract_stack(sys._getframe(skip))
        return [f for f in (package_file(fr.filename) for fr in frames) if f]

    def chain_here(skip: int) -> list[str]:
        try:
            task = asyncio.current_task()
        except RuntimeError:
            task = None
        head = origins.get(id(task), []) if task is not None else []
        return head + stack_files(skip + 1)

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task:
        parent = origins.pop(id(coro), None)
        chain = parent if parent is not None else chain_here(2)
        task = asyncio.Task(coro, loop=loop, **kwargs)
        with lock:
            origins[id(task)] = chain
            keep.append(task)
        return task

    real_new_loop = asyncio.new_event_loop
    real_threadsafe = asyncio.run_coroutine_threadsafe

    def new_event_loop() -> asyncio.AbstractEventLoop:
        loop = real_new_loop()
        loop.set_task_factory(factory)
        return loop

    def run_coroutine_threadsafe(coro: Any, loop: asyncio.AbstractEventLoop) -> Any:
        with lock:
            origins[id(coro)] = chain_here(2)
            keep.append(coro)
        if loop.get_task_factory() is None:
            loop.set_task_factory(factory)
        return real_threadsafe(coro, loop)

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == "call" and frame.f_code.co_name in ENTRY_NAMES:
            f = package_file(frame.f_code.co_filename)
            if f and is_backend(f):
                caller = package_file(frame.f_back.f_code.co_filename) if frame.f_back else None
                if caller != f:  # the first entry into the backend, not its own inner calls
                    chains.append(chain_here(2))

    asyncio.new_event_loop = new_event_loop
    asyncio.run_coroutine_threadsafe = run_coroutine_threadsafe
    import instructkit.aio as aio

    saved_loop = aio._loop
    aio._loop = None  # a fresh background loop, made through the patched new_event_loop
    sys.setprofile(profile)
    threading.setprofile(profile)
    try:
        yield chains
    finally:
        sys.setprofile(None)
        threading.setprofile(None)  # type: ignore[arg-type]
        asyncio.new_event_loop = real_new_loop
        asyncio.run_coroutine_threadsafe = real_threadsafe
        if aio._loop is not None:
            aio._loop.call_soon_threadsafe(aio._loop.stop)
        aio._loop = saved_loop
