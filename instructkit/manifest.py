"""A small JSON manifest written beside every output: what ran, with what, and what it cost."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

from . import __version__


def write_manifest(path: str | Path, **fields: Any) -> Path:
    """Write `fields` plus version and time as pretty JSON; values that are not JSON become strings."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    data = {"instructkit": __version__, "python": platform.python_version(), "written": time.time(), **fields}
    p.write_text(json.dumps(data, indent=2, default=str, ensure_ascii=False), encoding="utf-8")
    return p
