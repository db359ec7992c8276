"""Cache stage: the stored answer of each key, and one request for identical ones in flight.

The facade calls it in sequence around the request, never through it: `find` (hits and the missing
indices), then `join` (another row already asking the same: `wait` for its answers) or `lead` (this
call asks; `store` its answers, or `fail` with its error, which the waiters re-raise).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from typing import Any

from ..cache import ResponseCache
from .state import RunShared


class Lookup:
    """The response cache of one model (`cache`), a dry run's remembered placeholders (the run's
    `shared.dry_answers`, in memory only) and the requests in flight (this model's)."""

    def __init__(self, cache: ResponseCache, shared: RunShared):
        self.cache = cache
        self.shared = shared
        self._inflight: dict[str, asyncio.Future] = {}

    def find(self, keys: list[str], decode: Callable[[dict], Any], dry: bool) -> tuple[list[Any], list[int], bool]:
        """(decoded answer or None per key, indices of the missing ones, whether a dry run's earlier
        placeholder answered one: a real run would find it cached)."""
        results: list[Any] = []
        walked = False
        get = self.cache.get
        for key in keys:
            hit = get(key)
            if hit is None and dry:
                hit = self.shared.dry_answers.get(key)
                walked = walked or hit is not None
            results.append(None if hit is None else decode(hit))
        missing = [i for i, r in enumerate(results) if r is None]
        self.shared.stats.cache_hits += len(keys) - len(missing)
        return results, missing, walked

    @staticmethod
    def flight_key(keys: list[str], missing: list[int]) -> str:
        if len(missing) > 1:
            return hashlib.sha1("".join(keys[i] for i in missing).encode()).hexdigest()
        return f"{keys[missing[0]]}:1"

    def pending(self, flight: str) -> asyncio.Future | None:
        """The same request already in flight, else None."""
        return self._inflight.get(flight)

    async def wait(self, pending: asyncio.Future, count: int, copy: Callable[[Any], Any]) -> list[Any]:
        """The answers of the request in flight (copies: each caller owns its objects), counted as hits."""
        fresh = [copy(v) for v in await asyncio.shield(pending)]
        self.shared.stats.cache_hits += count
        return fresh

    def lead(self, flight: str) -> None:
        """This call sends the request: later identical ones wait for it."""
        self._inflight[flight] = asyncio.get_running_loop().create_future()

    def store(self, flight: str, keys: list[str], missing: list[int], fresh: list[Any],
              encode: Callable[[Any], dict], dry: bool) -> None:  # fmt: skip
        """Store each answer under its key (a dry run's placeholders only in memory) and release the waiters."""
        store = self.shared.dry_answers.__setitem__ if dry else self.cache.set
        try:
            for i, value in zip(missing, fresh):
                store(keys[i], encode(value))
        except BaseException as exc:
            self.fail(flight, exc)
            raise
        future = self._inflight.pop(flight)
        future.set_result(fresh)

    def fail(self, flight: str, exc: BaseException) -> None:
        future = self._inflight.pop(flight, None)
        if future is not None and not future.done():
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it themselves
