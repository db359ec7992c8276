"""JSON on the request path (HTTP bodies and replies, cached answers, input rows): orjson, with the
standard library wherever orjson would read or write a value differently.

orjson is 5-20x faster on the replies a judge reads (token log-probabilities with their top
alternatives): at 1,000 requests/s the standard library's parse and dump of them took a fifth of
the client's CPU. Values come back exactly as the standard library gives them: orjson writes NaN
and infinities as null, so a text orjson wrote with a null in it is written again by `json.dumps`
(which keeps them); text orjson refuses to read (NaN/Infinity tokens, integers past 64 bits) is read
by `json.loads`, and so is text with 20 digits in a row (orjson reads integers past 64 bits as
floats; no float's shortest form has that many); values orjson cannot write (non-string keys,
lone surrogates) go to `json.dumps`. Where orjson is not installed, everything is the standard
library's.
"""

from __future__ import annotations

import json
import re
from typing import Any

try:
    import orjson
except ImportError:  # pragma: no cover - orjson is a dependency; kept working without it
    orjson = None  # type: ignore[assignment]


def dumps(obj: Any) -> bytes:
    """UTF-8 JSON of `obj` that `loads` (or `json.loads`) reads back as `json.dumps` would write it."""
    if orjson is not None:
        try:
            data = orjson.dumps(obj)
        except TypeError:
            pass
        else:
            if b"null" not in data:  # no None, NaN or infinity that orjson may have written as null
                return data
    return json.dumps(obj).encode("ascii")  # ASCII escapes: lone surrogates too


def dumps_text(obj: Any) -> str:
    """`dumps` as a str (for stores that keep text)."""
    return dumps(obj).decode("utf-8")


_LONG_DIGITS = {bytes: re.compile(rb"\d{20}"), str: re.compile(r"[0-9]{20}")}


def loads(data: bytes | str, *, small_ints: bool = False) -> Any:
    """`json.loads(data)`, faster. `small_ints=True` spares the scan for 20-digit runs (40 us on a 4 KB
    reply) where no integer can pass 64 bits in a field anyone reads: OpenAI-format replies (token
    counts, indexes) and the cache's own answers."""
    if orjson is not None and (small_ints or not _LONG_DIGITS[type(data)].search(data)):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass  # NaN/Infinity, huge integers, or not JSON at all: the standard library decides
    return json.loads(data)
