"""The dataset card (README.md) of an export, and the per-step figures the pipeline records for it.

The card is the Hugging Face layout: a YAML header (license, language, task categories, size category,
`configs` naming each split's files, and an `instructkit` block with the manifest's figures per step),
then a body: steps, models and their identities, template hashes, seeds, rows in and out, tokens and
cost, parse failure rates, agreement between judges that scored the same rows, and why rows were
selected (method, options, the diversity report beside a random subset). Every figure is read from
the run's manifest (`step_figures` puts them there as the pipeline runs), so the card equals it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import sys
from array import array
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import registry
from ..credentials import redact
from ..run.manifest import json_hash, parse_figure
from .io import read_records

TASK_CATEGORIES = {  # Bonito task types (and similar) -> Hugging Face task categories
    "exqa": "question-answering", "mcqa": "multiple-choice", "qa": "question-answering",
    "ynqa": "question-answering", "qg": "text-generation", "summarization": "summarization",
    "paraphrase": "text2text-generation", "sentiment": "text-classification",
    "topic_class": "text-classification", "paraphrase_id": "text-classification", "nli": "text-classification",
    "te": "text-classification", "wsd": "text-classification", "coref": "token-classification",
}  # fmt: skip
SIZES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
         (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"))  # fmt: skip
RECORD_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet", ".ndjson")
FEATURES: dict[str, dict[str, Any]] = {  # export column -> its `datasets` feature in card YAML
    "id": {"dtype": "int64"}, "instruction": {"dtype": "string"}, "input": {"dtype": "string"},
    "output": {"dtype": "string"}, "system": {"dtype": "string"}, "meta": {"dtype": "string"},
    "history": {"sequence": {"sequence": "string"}},
    "messages": {"list": [{"name": "role", "dtype": "string"}, {"name": "content", "dtype": "string"}]},
    "conversations": {"list": [{"name": "from", "dtype": "string"}, {"name": "value", "dtype": "string"}]},
    "prompt": {"list": [{"name": "role", "dtype": "string"}, {"name": "content", "dtype": "string"}]},
    "completion": {"list": [{"name": "role", "dtype": "string"}, {"name": "content", "dtype": "string"}]},
}  # fmt: skip
FIGURES = ("templates", "parse", "counts", "input_licenses", "agreement", "separation", "selection")  # what step_figures records
REPORT_MAX_POOL = 20_000  # above this a selection step's diversity report is left to `select --report`


# ----- figures recorded per pipeline step --------------------------------------------------------


def declared_licenses(path: str | Path | None, records: list[dict] | None = None) -> list[str]:
    """Licenses an input declares: the `license` field of its records (a records file, or the JSONL
    files of a documents folder). `records`, the rows already read from a records file at `path`,
    spare reading it again."""
    if not path:
        return []
    p = Path(path)
    if records is not None and p.is_file():
        return sorted({str(r["license"]) for r in records if r.get("license")})
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.suffix.lower() in RECORD_SUFFIXES) if p.is_dir() else []
    found: set[str] = set()
    for f in files:
        if f.suffix.lower() not in RECORD_SUFFIXES:
            continue
        try:
            found.update(str(r["license"]) for r in read_records(f) if r.get("license"))
        except (ValueError, KeyError, OSError):
            continue  # not records: a documents file the generator reads its own way
    return sorted(found)


def method_templates(func: Any, options: Any, side_manifest: Path | None = None) -> dict[str, str]:
    """Template name -> hash: from the generator's side manifest when it wrote one, else every packaged
    template its module names, plus any user template file given in an option ending in `template`."""
    from ..templates import template_hash

    if side_manifest is not None and side_manifest.is_file():
        data = json.loads(side_manifest.read_text(encoding="utf-8"))
        if isinstance(data.get("templates"), dict):
            return dict(data["templates"])
    out: dict[str, str] = {}
    module = sys.modules.get(getattr(func, "__module__", ""))
    source = Path(module.__file__).read_text(encoding="utf-8") if module and getattr(module, "__file__", None) else ""
    names = set(re.findall(r"[\"']([\w-]+\.jinja)[\"']", source))
    chosen = getattr(options, "template", None)
    for table in (v for v in vars(module).values() if isinstance(v, dict)) if module else ():
        if isinstance(chosen, str) and chosen in table:  # e.g. IFD's TEMPLATES[opts.template]: only the one used
            names -= {n for key, value in table.items() if key != chosen for n in _jinja_names(value)}
    for name in sorted(names):
        try:
            out[name] = template_hash(name)
        except (FileNotFoundError, OSError):
            continue
    if dataclasses.is_dataclass(options):
        for f in dataclasses.fields(options):
            value = getattr(options, f.name)
            if f.name.endswith("template") and isinstance(value, str) and Path(value).is_file():
                out[value] = template_hash(f.name, value)
    return out


def _jinja_names(value: Any) -> set[str]:
    values = value if isinstance(value, (tuple, list)) else (value,)
    return {v for v in values if isinstance(v, str) and v.endswith(".jinja")}


def parse_figures(records_in: list[dict], result: list[dict]) -> dict[str, dict[str, Any]]:
    """For each `*_parse` column the step added: rows, failures (status not ok) and their rate, statuses."""
    before = {k for r in records_in for k in r}
    cols = sorted({k for r in result for k in r if k.endswith("_parse") and k not in before})
    return {col: parse_figure(result, col) for col in cols}


SCORE_SUFFIXES = ("_score", "_ifd", "_ppl", "_reward", "_quality", "_complexity")
SCORE_NAMES = ("ifd", "deita_score")  # score columns named without a suffix


def column(records: list[dict], name: str) -> Any:
    """The numbers of column `name` as a float array (NaN where a row has none), for figures and plots."""
    import numpy as np

    vals = [r.get(name) for r in records]
    return np.array([v if isinstance(v, (int, float)) and not isinstance(v, bool) else np.nan for v in vals], float)


def score_columns(records: list[dict]) -> list[str]:
    """Numeric columns that hold scores (by name), present in at least one row."""
    names: list[str] = []
    for rec in records:
        for k, v in rec.items():
            if k in names or not isinstance(v, (int, float)) or isinstance(v, bool):
                continue
            if is_score_column(k):
                names.append(k)
    return names


def is_score_column(name: str) -> bool:
    return name.endswith(SCORE_SUFFIXES) or name in SCORE_NAMES


def separation_figures(records_in: list[dict], result: list[dict]) -> dict[str, dict[str, Any]]:
    """For each score column the step added: how its values spread over the scored rows (manifest.separation
    reads it to flag a judge that scored every row yet separated nothing), and beside `<judge>_score`, the
    same for `<judge>_expected`, the expected-value scores, where the judge computed them."""
    before = {k for r in records_in for k in r}
    out: dict[str, dict[str, Any]] = {}
    for col in score_columns(result):
        if col in before:
            continue
        out[col] = spread_figure(result, col)
        expected = col.removesuffix("_score") + "_expected"
        if col.endswith("_score") and expected not in before and any(_is_number(r.get(expected)) for r in result):
            out[col]["expected"] = {"column": expected, **spread_figure(result, expected)}
    return out


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def spread_figure(records: list[dict], column: str) -> dict[str, Any]:
    """Scored rows of `column`, its most common value and that value's share of them, min, max and std."""
    values = [float(r[column]) for r in records if _is_number(r.get(column))]
    if not values:
        return {"rows": 0}
    top, count = Counter(round(v, 9) for v in values).most_common(1)[0]
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    return {"rows": len(values), "top_value": _num(top), "top_rows": count, "top_share": round(count / len(values), 6),
            "min": _num(min(values)), "max": _num(max(values)), "mean": _num(mean), "std": _num(std)}


def agreement_figures(records_in: list[dict], result: list[dict]) -> list[dict[str, Any]]:
    """Spearman and Kendall between each score column the step added and each one earlier judges wrote,
    over the rows where both are numbers (at least 3). scipy (seconds to import) only when there is a pair."""
    before = set(score_columns(records_in))
    new = [c for c in score_columns(result) if c not in before] if before else []
    if not new:
        return []  # nothing to compare: numpy stays unloaded (a single judge run from the CLI)
    import numpy as np


    out = []
    for a in new:
        for b in sorted(before):
            x, y = column(result, a), column(result, b)
            mask = np.isfinite(x) & np.isfinite(y)
            n = int(mask.sum())
            if n < 3:
                continue
            rho = tau = float("nan")  # undefined where either column is constant (scipy would warn)
            if np.ptp(x[mask]) > 0 and np.ptp(y[mask]) > 0:
                from scipy.stats import kendalltau, spearmanr

                rho = spearmanr(x[mask], y[mask]).statistic
                tau = kendalltau(x[mask], y[mask]).statistic
            out.append({"a": a, "b": b, "rows": n, "spearman": _num(rho), "kendall": _num(tau)})
    return out


def selection_figures(records_in: list[dict], result: list[dict], options: Any, ctx: Any) -> dict[str, Any]:
    """What the selector was asked (its options) and the diversity report of its pick beside a random
    subset of the same size, on the same embeddings (the "select.report" extension, selection/report.py)."""
    opts = dataclasses.asdict(options) if dataclasses.is_dataclass(options) else {}
    out: dict[str, Any] = {"options": opts, "pool": len(records_in), "selected": len(result)}
    idx = [int(r["_select_index"]) for r in result if "_select_index" in r]
    if len(idx) != len(result) or len(records_in) < 3 or not idx:
        return out
    if not ctx.extras.get("report"):  # the pipeline asks for it; a single command with --report
        return out
    if len(records_in) > REPORT_MAX_POOL:  # embedding a pool this size is a job of its own
        out["report"] = f"not computed: pool of {len(records_in)} rows > {REPORT_MAX_POOL} (use select --report)"
        return out
    score = opts.get("score") if isinstance(opts.get("score"), str) else None
    if score and not any(isinstance(r.get(score), (int, float)) for r in records_in):
        score = None
    out["report"] = _jsonable(registry.extension_of("select.report")(records_in, idx, ctx, options, score=score))
    return out


def step_figures(kind: str, func: Any, records_in: list[dict], result: list[dict], options: Any, ctx: Any,
                 input_path: str | None) -> dict[str, Any]:
    """The card's figures for one finished step, to store in its manifest entry. A figure that cannot be
    computed is recorded as an error; it never sinks the run."""
    side = Path(ctx.work_dir) / f"{ctx.method}.manifest.json" if ctx.work_dir else None
    jobs = {"templates": lambda: method_templates(func, options, side),
            "parse": lambda: parse_figures(records_in, result),
            "input_licenses": lambda: declared_licenses(input_path, records_in)}  # fmt: skip
    if kind in ("judge", "score"):
        jobs["agreement"] = lambda: agreement_figures(records_in, result)
        jobs["separation"] = lambda: separation_figures(records_in, result)
    if kind == "select":
        jobs["selection"] = lambda: selection_figures(records_in, result, options, ctx)
    out: dict[str, Any] = {}
    if counts := ctx.extras.get(f"{kind}_summary", {}).get(ctx.method):  # manifest.write_method_summary's
        out["counts"] = counts
    for name, job in jobs.items():
        try:
            value = job()
        except Exception as exc:  # a figure is never worth a failed run
            value = {"error": f"{type(exc).__name__}: {exc}"[:300]}
        if value:
            out[name] = value
    return out


class _FigureColumn:
    """One column of FigureRows: per row a kind byte (0 absent, 1 float, 2 int, 3 other) and a float64
    slot holding the number, or for other values (statuses, licenses) an index into `objects`, where
    equal hashable values are stored once. About 9 bytes a row, however many rows."""

    def __init__(self) -> None:
        self.kinds = bytearray()
        self.slots = array("d")
        self.objects: list[Any] = []
        self._codes: dict[Any, int] = {}

    def put(self, i: int, value: Any) -> None:
        if len(self.kinds) < i:  # rows before this one had no such column
            self.kinds.extend(bytes(i - len(self.kinds)))
            self.slots.extend(array("d", bytes(8 * (i - len(self.slots)))))
        if isinstance(value, float):
            kind, slot = 1, value
        elif isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**53:  # exact in float64
            kind, slot = 2, float(value)
        else:
            kind, slot = 3, float(self._code(value))
        self.kinds.append(kind)
        self.slots.append(slot)

    def _code(self, value: Any) -> int:
        try:
            code = self._codes.get(value)
        except TypeError:  # unhashable: kept as it is
            code = None
        else:
            if code is not None:
                return code
            self._codes[value] = len(self.objects)
        self.objects.append(value)
        return len(self.objects) - 1

    def get(self, i: int) -> tuple[bool, Any]:
        """(present, value) of row i."""
        kind = self.kinds[i] if i < len(self.kinds) else 0
        if kind == 0:
            return False, None
        slot = self.slots[i]
        return True, slot if kind == 1 else int(slot) if kind == 2 else self.objects[int(slot)]


class FigureRows(Sequence[dict]):
    """What `step_figures` reads of many rows, kept compact and column by column: per row only its
    license, parse statuses and numeric score columns (about 9 bytes a row and column, see
    `_FigureColumn`), plus the union of every row's keys (which columns a step added). A streaming step
    keeps these, not its rows, for its figures. A row reads back as the dict of its kept columns, in
    the order the columns were first seen."""

    def __init__(self) -> None:
        self._columns: dict[str, _FigureColumn] = {}
        self._rows = 0
        self.keys: dict[str, None] = {}

    def add(self, rows: Iterable[Mapping[str, Any]]) -> None:
        for row in rows:
            self.keys.update(dict.fromkeys(row))
            for k, v in row.items():
                if _figure_column(k, v):
                    column = self._columns.get(k)
                    if column is None:  # a new column, made once (not a throwaway default a value)
                        column = self._columns[k] = _FigureColumn()
                    column.put(self._rows, v)
            self._rows += 1

    def __len__(self) -> int:
        return self._rows + 1

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        if i == 0:  # the first row names every key (values None: no figure reads it)
            return dict.fromkeys(self.keys)
        row = {}
        for name, col in self._columns.items():
            present, value = col.get(i - 1)
            if present:
                row[name] = value
        return row


def _figure_column(key: str, value: Any) -> bool:
    if key == "license" or key.endswith("_parse"):
        return True
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    return numeric and (is_score_column(key) or key.endswith("_expected"))


def _num(x: Any) -> float | None:
    x = float(x)
    return round(x, 6) if math.isfinite(x) else None


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


# ----- the card --------------------------------------------------------------------------------


def manifest_steps(manifest: dict[str, Any] | None) -> list[dict[str, Any]]:
    """A pipeline manifest's steps, or the one step a single command's manifest describes."""
    if not manifest:
        return []
    if isinstance(manifest.get("steps"), list):
        return manifest["steps"]
    kind, _, name = str(manifest.get("method", "")).partition(" ")
    figures = {k: manifest[k] for k in FIGURES if k in manifest}
    return [{"step": name or kind, "kind": kind, "method": name, "rows_in": manifest.get("rows_in"),
             "rows_out": manifest.get("rows_out"), "calls": manifest.get("calls") or {},
             "calls_total": manifest.get("calls_total") or manifest.get("calls") or {},
             "model_identity": manifest.get("model"), "options": manifest.get("options"), **figures}]  # fmt: skip


def step_summary(entry: dict[str, Any]) -> dict[str, Any]:
    """The figures of one manifest step that the card's YAML carries (copied, never recomputed)."""
    calls = entry.get("calls_total") or entry.get("calls") or {}  # every session of a resumed run
    out = {"step": entry.get("step"), "kind": entry.get("kind"), "method": entry.get("method"),
           "rows_in": entry.get("rows_in"), "rows_out": entry.get("rows_out"),
           "prompt_tokens": calls.get("prompt_tokens", 0), "completion_tokens": calls.get("completion_tokens", 0),
           "cost": calls.get("cost", 0.0)}  # fmt: skip
    if entry.get("model_identity") is not None and entry.get("kind") not in ("concat", "export", "select"):
        from ..run.provenance import model_label

        out["model"] = model_label(entry["model_identity"])
    from ..run.manifest import little_output

    if flags := little_output(entry):  # the same flags as the CLI's last line and the report's top
        out["flags"] = flags
    return out


def size_category(n: int) -> str:
    return next((label for limit, label in SIZES if n < limit), "n>100M")


def card_metadata(figures: dict[str, Any], records: list[dict], opts: Any, manifest: dict[str, Any] | None,
                  steps: list[dict[str, Any]]) -> dict[str, Any]:
    """The YAML header of the card."""
    declared = sorted({lic for s in steps for lic in (s.get("input_licenses") or []) if isinstance(lic, str)}
                      | {str(r["license"]) for r in records if r.get("license")})  # fmt: skip
    license_ = opts.license or (declared[0] if len(declared) == 1 else "other" if declared else "unknown")
    languages = list(opts.language) or sorted({str(r["language"]) for r in records if r.get("language")}) or ["en"]
    types = {str(r.get("task_type")) for r in records if r.get("task_type")}
    categories = ["text-generation", *sorted({TASK_CATEGORIES[t] for t in types if t in TASK_CATEGORIES} - {"text-generation"})]
    meta: dict[str, Any] = {
        "license": license_, "language": languages, "task_categories": categories,
        "size_categories": [size_category(figures["rows_out"])], "tags": ["instructkit", "synthetic", "sft"],
        "pretty_name": opts.pretty_name or (manifest or {}).get("name") or Path(figures["out"]).name,
        "configs": [{"config_name": "default",
                     "data_files": [{"split": s, "path": p} for s, p in figures["files"].items()]}],
        # Declared types: a split whose rows all have an empty `history` still reads as lists of strings.
        # (No `splits` here: `datasets` wants their Arrow byte sizes; rows per split are in `instructkit`.)
        "dataset_info": {"features": [{"name": c, **FEATURES[c]} for c in figures["columns"]]},
    }  # fmt: skip
    if license_ == "other" and declared:
        meta["license_name"] = "mixed"
        meta["license_details"] = "The inputs declare: " + ", ".join(declared)
    meta["instructkit"] = {
        "format": figures["format"], "meta": figures["meta"], "split_seed": figures["seed"],
        "splits": figures["splits"], "rows_in": figures["rows_in"], "rows_out": figures["rows_out"],
        "skipped_no_response": figures["skipped_no_response"],
        "pipeline": (manifest or {}).get("name"), "seed": (manifest or {}).get("seed"),
        "manifest_sha256": json_hash(manifest) if manifest is not None else None, "steps": [step_summary(s) for s in steps],
    }  # fmt: skip
    return meta


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        text = f"{v:.4g}" if isinstance(v, float) else "" if v is None else str(v)
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def card_body(meta: dict[str, Any], figures: dict[str, Any], steps: list[dict[str, Any]],
              manifest: dict[str, Any] | None) -> str:
    ik = meta["instructkit"]
    parts = [f"# {meta['pretty_name']}", ""]
    parts.append(f"Instruction-tuning data made with instructkit, exported as `{figures['format']}` "
                 f"({ik['rows_out']} rows from {ik['rows_in']}; {ik['skipped_no_response']} without a response left out).")
    files = ", ".join(f"`{p}` ({figures['splits'][s]} rows)" for s, p in figures["files"].items())
    parts += ["", "## Data", "", f"Splits: {files}; drawn by ratio "
              f"({', '.join(f'{s} {r:.3g}' for s, r in figures['split_ratios'].items())}) with seed {figures['seed']}. "
              f"`datasets.load_dataset` reads this folder (the `configs` above name the files)."]  # fmt: skip
    parts.append({"field": "instructkit's own columns (scores, parse statuses, provenance) are in `meta`, a JSON object "
                           "stored as a string.",
                  "side": "instructkit's own columns (scores, parse statuses, provenance) are in `SPLIT.meta.jsonl`, "
                          "one line per row, joined on `id`.",
                  "none": "instructkit's own columns were left out."}[figures["meta"]])  # fmt: skip
    parts += training_section(figures)
    if not steps:
        parts += ["", "No manifest was found for the input, so how the data was made is not described here."]
        return "\n".join(parts) + "\n"
    parts += ["", "## How it was made", "",
              f"Pipeline `{ik['pipeline']}`, seed {ik['seed']} (every sampling step and per-call seed derives from it)."
              if ik["pipeline"] else f"One command; seed {(manifest or {}).get('seed')}.", ""]
    parts.append(_table(["step", "kind", "method", "model", "rows in", "rows out", "prompt tokens",
                         "completion tokens", "cost $"],
                        [[s["step"], s["kind"], s["method"], s.get("model", ""), s["rows_in"], s["rows_out"],
                          s["prompt_tokens"], s["completion_tokens"], s["cost"]] for s in ik["steps"]]))  # fmt: skip
    flagged = [f"- `{s['step']}`: {'; '.join(s['flags'])}" for s in ik["steps"] if s.get("flags")]
    if flagged:
        parts += ["", "**Flagged steps** (little output, or scores that separate nothing):", "", *flagged]
    total_tokens = sum(s["prompt_tokens"] + s["completion_tokens"] for s in ik["steps"])
    parts += ["", f"Total: {total_tokens:,} tokens, ${sum(s['cost'] for s in ik['steps']):.4f}."]
    models = {json.dumps(s["model_identity"], sort_keys=True): s["model_identity"] for s in steps
              if s.get("model_identity") is not None and s.get("kind") not in ("concat", "export", "select")}  # fmt: skip
    if models:
        parts += ["", "## Models", ""] + [f"- `{json.dumps(m, sort_keys=True)}`" for m in models.values()]
    rows = [[s["step"], name, h] for s in steps for name, h in sorted((s.get("templates") or {}).items())
            if isinstance(h, str)]  # fmt: skip
    if rows:
        parts += ["", "## Prompt templates", "", _table(["step", "template", "sha256 (16)"], rows)]
    opts_rows = [[s["step"], json.dumps(s.get("options") or {}, sort_keys=True, default=str)] for s in steps
                 if s.get("options")]  # fmt: skip
    if opts_rows:
        parts += ["", "## Options", "", _table(["step", "options"], opts_rows)]
    rows = [[s["step"], col, p["rows"], p["failed"], p["rate"], json.dumps(p["statuses"])]
            for s in steps for col, p in sorted((s.get("parse") or {}).items()) if isinstance(p, dict) and "rows" in p]  # fmt: skip
    if rows:
        parts += ["", "## Parse failures", "", _table(["step", "column", "rows", "failed", "rate", "statuses"], rows)]
    rows = [[s["step"], a["a"], a["b"], a["rows"], a["spearman"], a["kendall"]]
            for s in steps for a in (s.get("agreement") or []) if isinstance(a, dict) and "a" in a]  # fmt: skip
    if rows:
        parts += ["", "## Agreement between judges", "",
                  "Rank correlation of two judges' scores over the rows both scored.", "",
                  _table(["step", "score", "earlier score", "rows", "Spearman", "Kendall"], rows)]
    for s in steps:
        sel = s.get("selection")
        if not isinstance(sel, dict) or "options" not in sel:
            continue
        parts += ["", f"## Selection: step `{s['step']}` ({s['method']})", "",
                  f"{sel['selected']} of {sel['pool']} rows; options `{json.dumps(sel['options'], sort_keys=True, default=str)}`."]  # fmt: skip
        report = sel.get("report")
        if isinstance(report, dict) and {"selection", "random"} <= set(report):
            flatten = registry.extension_of("select.flatten_report")
            flat = {k: flatten(v) for k, v in report.items()}
            metrics = [m for m in flat["selection"] if isinstance(flat["selection"][m], (int, float))]
            parts += ["", "Diversity of the selection beside a random subset of the same size (same embeddings):", "",
                      _table(["metric", "selection", "random"],
                             [[m, flat["selection"][m], flat["random"].get(m)] for m in metrics])]  # fmt: skip
    parts += ["", "## Provenance", "",
              "Each generated row's `provenance` (in the meta) names the step, method and model that made it and "
              "where its content came from (document and passage, seed tasks, parent row); a row made from another "
              "keeps that row's provenance under `parent`. `instructkit.run.provenance.origin(row)` follows the chain.",
              "", "## License", "", f"`{meta['license']}`" + (
                  f" — {meta['license_details']}" if meta.get("license_details") else
                  " (taken from the inputs)" if meta["license"] not in ("unknown", "other") else
                  " (no input declares one: check the sources before publishing)")]  # fmt: skip
    return "\n".join(parts) + "\n"


def training_section(figures: dict[str, Any]) -> list[str]:
    """How each SFT trainer loads this folder as it is (trainer_configs.py; checked with their loaders)."""
    from ..trainer_configs import LLAMAFACTORY_FILE, axolotl_snippet, trl_note

    splits = list(figures["files"])
    eval_split = next((s for s in splits if s != "train"), None)
    return ["", "## Training with this folder", "", "- " + trl_note(figures),
            f"- LLaMA-Factory: `{LLAMAFACTORY_FILE}` here names one dataset per split; set `dataset_dir` to this folder "
            f"and `dataset: {splits[0]}`" + (f" (`eval_dataset: {eval_split}`)." if eval_split else "."),
            "- axolotl (the path relative to where you run it; `ds_type` says how to read the file):", "",
            "```yaml", axolotl_snippet(figures, Path(figures["out"]).name), "```",
            "", "- instructkit: `instructkit train FOLDER --base MODEL --out RUN` reads it with `datasets` as above."]


def render_card(figures: dict[str, Any], records: list[dict], opts: Any, manifest: dict[str, Any] | None) -> str:
    import yaml

    steps = manifest_steps(manifest)
    meta = card_metadata(figures, records, opts, manifest, steps)
    header = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, default_flow_style=False, width=100)
    return f"---\n{header}---\n\n{card_body(meta, figures, steps, manifest)}"


def write_card(out_dir: Path, figures: dict[str, Any], records: list[dict], opts: Any,
               manifest: dict[str, Any] | None) -> Path:
    path = Path(out_dir) / "README.md"
    path.write_text(redact(render_card(figures, records, opts, manifest)), encoding="utf-8")
    return path


def read_card(path: str | Path) -> tuple[dict[str, Any], str]:
    """(YAML header, body) of a card."""
    import yaml

    text = Path(path).read_text(encoding="utf-8")
    m = re.match(r"^---\n(.*?)\n---\n(.*)$", text, re.DOTALL)
    if not m:
        raise ValueError(f"{path}: no YAML header")
    return yaml.safe_load(m.group(1)), m.group(2)
