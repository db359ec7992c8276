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


LITTLE_PARSE_RATE = 0.10  # a step whose parse failures exceed this share of its rows is flagged


def little_output(step: dict[str, Any]) -> list[str]:
    """Why a finished step produced little, from its manifest entry: no rows out, or a parse column
    (`parse` figures: `<col>: {rows, failed, rate}`) failing on more than 10% of its rows. A judge's
    `<judge>_text_parse` is left to its `<judge>_parse`: a row scored from the expected value is scored."""
    if step.get("kind") == "export":
        return []
    notes = ["0 rows out"] if step.get("rows_out") == 0 else []
    parse = step.get("parse") or {}
    for col, fig in sorted(parse.items()):
        if col.endswith("_text_parse") and col.removesuffix("_text_parse") + "_parse" in parse:
            continue  # the reply text's own parse: whether a row got a score is `<judge>_parse`
        if isinstance(fig, dict) and fig.get("rows") and float(fig.get("rate") or 0.0) > LITTLE_PARSE_RATE:
            notes.append(f"{col} failed on {fig['failed']}/{fig['rows']} rows ({float(fig['rate']):.0%})")
    return notes


def little_output_line(steps: list[dict[str, Any]]) -> str:
    """One line naming every step that produced little ("" when none did): the CLI's last line and the
    report's first warning say the same thing."""
    flagged = [f"{s.get('step') or s.get('method')} ({'; '.join(notes)})" for s in steps if (notes := little_output(s))]
    return f"little output: {', '.join(flagged)}" if flagged else ""
