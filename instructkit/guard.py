"""What a run checks about its files before the first call: it never writes over its input, every
place it writes is writable, and it is the only run writing there (a lock on its work folder).

A run that paid for answers must not then fail on a file it could have checked first: `--out` on a
read-only disk, a work folder owned by someone else, a cache on a full or read-only disk. And two
identical commands must not pay twice: the second finds the first's lock and stops at once.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .data.io import InputError

LOCK_NAME = ".instructkit.lock"


def same_path(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name the same file or folder (links and relative paths resolved)."""
    pa, pb = Path(a), Path(b)
    try:
        if pa.exists() and pb.exists():
            return os.path.samefile(pa, pb)
    except OSError:
        pass
    return pa.resolve() == pb.resolve()


def refuse_overwrite(out: str | os.PathLike, inputs: Iterable[str | os.PathLike | None], flag: str = "--in-place") -> None:
    """InputError when `out` is one of `inputs` (or lies inside an input folder): the run would replace
    the data it reads. `flag` names how the user asks for that on purpose."""
    for source in inputs:
        if source is None:
            continue
        src = Path(source)
        inside = src.is_dir() and Path(out).resolve().is_relative_to(src.resolve())
        if same_path(out, src) or inside:
            hint = f"; give another --out, or {flag} to replace it" if flag else "; give another output path"
            raise InputError(out, f"is the input {src}: writing it would destroy the rows being read{hint}")


def check_writable(path: str | os.PathLike, what: str = "output folder") -> None:
    """InputError unless a file can be created in folder `path` (made if missing), before any call."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".instructkit-write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise InputError(folder, f"{what} is not writable ({describe_os_error(exc)}); nothing was called") from None


def describe_os_error(exc: BaseException) -> str:
    """An OSError (or SQLite's "disk is full") as a few words: its reason, and the file where known."""
    if isinstance(exc, OSError):
        reason = exc.strerror or str(exc)
        return f"{reason}: {exc.filename}" if exc.filename else reason
    return str(exc)


def is_disk_error(exc: BaseException) -> bool:
    """A write that failed for want of space or permission (OSError, or SQLite reporting it)."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG, errno.EIO)
    text = str(exc).lower()
    return type(exc).__module__ == "sqlite3" and any(
        s in text for s in ("disk is full", "readonly", "read-only", "disk i/o", "unable to open"))


class RunLock:
    """An exclusive lock on a run's work folder for as long as the run writes there: a second run on the
    same folder stops at once with one line instead of paying again for the same rows."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self._fh: Any = None

    def __enter__(self) -> RunLock:
        check_writable(self.folder, "work folder")
        path = self.folder / LOCK_NAME
        fh = open(path, "a+", encoding="utf-8")
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks here; the run goes on unlocked
            self._fh = fh
            return self
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise InputError(self.folder, f"another instructkit run ({holder}) is writing here; wait for it to "
                                          "finish (then run again: its answers are reused) or use another --out") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}")
        fh.flush()
        self._fh = fh
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._fh is not None:
            self._fh.close()  # closing releases the lock
            self._fh = None
