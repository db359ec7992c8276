"""A small JSON manifest written beside every output: what ran, with what, and what it cost."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
import sys
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .. import __version__
from ..credentials import redact

OK = "ok"  # the parse status of a row that parsed (judge.parsing.OK)


def json_hash(obj: Any) -> str:
    """16 hex digits of the SHA-256 of `obj` as JSON with sorted keys: a pipeline step's fingerprint,
    the card's hash of its manifest. (Changing the form changes every fingerprint: runs would redo.)"""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def write_manifest(path: str | Path, **fields: Any) -> Path:
    """Write `fields` plus version and time as pretty JSON; values that are not JSON become strings."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    data = {"instructkit": __version__, "python": platform.python_version(), "written": time.time(), **fields}
    p.write_text(redact(json.dumps(data, indent=2, default=str, ensure_ascii=False)), encoding="utf-8")
    return p


def options_dict(options: Any) -> dict[str, Any]:
    """A method's options as plain data (a dataclass's fields, else the object's attributes)."""
    if options is None:
        return {}
    if dataclasses.is_dataclass(options):
        return dataclasses.asdict(options)
    return dict(getattr(options, "__dict__", {}))


def write_method_summary(
    ctx: Any,
    kind: str,
    counts: dict[str, Any],
    *,
    name: str | None = None,
    options: Any = None,
    templates: Iterable[str] | None = None,
    echo: bool = False,
    extra: dict[str, Any] | None = None,
) -> Path | None:
    """Record a method's run summary (a judge's parse counts, a generator's kept/rejected counts): the one
    writer. Kept in `ctx.extras["<kind>_summary"][name]` (the run manifest's `counts`, via
    card.step_figures) and written to `<work_dir>/<name>.manifest.json` with the options, seed, model,
    template hashes (when given), run and call statistics. `options`: the options the method ran with
    (default: ctx.options). `echo` also prints the counts as one line."""
    name = name or ctx.method
    ctx.extras.setdefault(f"{kind}_summary", {})[name] = counts
    if echo and counts and ctx.progress:
        print(f"[{name}] {json.dumps(counts, default=str)[:600]}", file=sys.stderr)
    if ctx.work_dir is None:
        return None
    from .provenance import model_identity

    fields: dict[str, Any] = {"method": name, "params": options_dict(ctx.options if options is None else options), "seed": ctx.random_state}
    if templates is not None:
        from ..templates import template_hash

        fields["templates"] = {t: template_hash(t) for t in sorted(set(templates))}
    fields.update(model=model_identity(ctx), counts=counts, run=ctx.stats.as_dict(),
                  calls=ctx.llm.stats.as_dict() if ctx.llm is not None else {}, **(extra or {}))
    return write_manifest(Path(ctx.work_dir) / f"{name}.manifest.json", **fields)


def value_counts(records: Iterable[dict], column: str, missing: str | None = None) -> dict[str, int]:
    """Rows per value of `column` (sorted); rows without a value count as `missing`, or not at all."""
    counts = Counter(str(r[column]) if r.get(column) not in (None, "") else missing for r in records)
    counts.pop(None, None)
    return dict(sorted(counts.items()))


def parse_figure(records: Iterable[dict], column: str, missing: str | None = None) -> dict[str, Any]:
    """How a parse-status column came out: rows, failed (status not "ok"), rate, and rows per status
    (rows without a status count as `missing`: a judge's failed call is "error"; or not at all)."""
    statuses = value_counts(records, column, missing)
    n = sum(statuses.values())
    failed = n - statuses.get(OK, 0)
    return {"rows": n, "failed": failed, "rate": round(failed / n, 6) if n else 0.0, "statuses": statuses}


LITTLE_PARSE_RATE = 0.10  # a step whose parse failures exceed this share of its rows is flagged


NO_SEPARATION_SHARE = 0.90  # a score column whose most common value holds this share of its rows or more
NO_SPREAD = 0.01  # ... or whose standard deviation is at most this fraction of its mean's magnitude
SEPARATION_MIN_ROWS = 10  # fewer scored rows than this say nothing either way


def no_separation(col: str, fig: dict[str, Any]) -> str:
    """Why a score column (card.spread_figure's figures) separated nothing, or "" when it did."""
    rows = int(fig.get("rows") or 0)
    if rows < SEPARATION_MIN_ROWS:
        return ""
    std, mean = float(fig.get("std") or 0.0), abs(float(fig.get("mean") or 0.0))
    if float(fig.get("top_share") or 0.0) >= NO_SEPARATION_SHARE:
        why = f"{fig['top_rows']}/{rows} rows score {fig['top_value']:g}"
    elif std <= NO_SPREAD * mean:
        why = f"{rows} rows within {fig['min']:.3g}-{fig['max']:.3g} (std {std:.3g})"
    else:
        return ""
    note = f"{col} separates nothing ({why})"
    expected = fig.get("expected") or {}
    if expected.get("rows") and not no_separation(expected["column"], {k: v for k, v in expected.items() if k != "column"}):
        note += (f"; its expected-value scores {expected['column']} span {expected['min']:.3g}-{expected['max']:.3g}"
                 " (-o score expected)")
    return note


def little_output(step: dict[str, Any]) -> list[str]:
    """Why a finished step produced little, from its manifest entry: no rows out, a parse column
    (`parse` figures: `<col>: {rows, failed, rate}`) failing on more than 10% of its rows, or a score
    column that separates nothing (`separation` figures; see no_separation). A judge's
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
    for col, fig in sorted((step.get("separation") or {}).items()):
        if isinstance(fig, dict) and (note := no_separation(col, fig)):
            notes.append(note)
    return notes


def little_output_line(steps: list[dict[str, Any]]) -> str:
    """One line naming every step that produced little ("" when none did): the CLI's last line and the
    report's first warning say the same thing."""
    flagged = [f"{s.get('step') or s.get('method')} ({'; '.join(notes)})" for s in steps if (notes := little_output(s))]
    return f"little output: {', '.join(flagged)}" if flagged else ""


def dry_run_line(calls: dict[str, Any]) -> str:
    """What a dry run found: calls (every stage, sample and member), tokens, cost, and what sized the replies."""
    n, calibrated = calls.get("estimated_calls", 0), calls.get("estimated_calibrated", 0)
    if not n:
        basis = ""
    elif calibrated == n:
        basis = "; reply sizes from this model's earlier calls"
    else:
        basis = f"; {n - calibrated} of {n} replies sized at max_tokens, an upper bound: no earlier calls to calibrate from"
    return (f"dry run: {n} calls, ~{calls.get('estimated_tokens', 0):,} tokens, ~${calls.get('estimated_cost', 0.0):.4f} "
            f"({calls.get('cache_hits', 0)} cached answers reused{basis})")


def done_rows(run: dict[str, Any]) -> str:
    """"R of N rows already done" for a dry run over a half-finished run (N counts every stage's rows)."""
    return f"{run.get('reused', 0)} of {run.get('rows', 0)} rows already done"
