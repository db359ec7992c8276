"""`instructkit report OUTDIR`: one self-contained HTML page about a pipeline run.

Counts through each step, score distributions per judge, agreement between judges, a 2-D map of
the embeddings coloured by cluster with the selected rows marked, top tags, the diversity report
(selected vs random), failures with their errors, tokens and cost. Plain HTML and inline SVG: no
scripts, no network, opens anywhere.
"""

from __future__ import annotations

import html
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from .. import registry
from ..credentials import redact
from .card import column, score_columns
from .io import read_records, to_turns

PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
           "#9c755f", "#bab0ac"]


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def row_id(rec: dict) -> str:
    return json.dumps({k: v for k, v in rec.items() if not k.startswith("_select")}, sort_keys=True, default=str)


def histogram_svg(values: np.ndarray, title: str, bins: int = 20, width: int = 320, height: int = 140) -> str:
    vals = values[np.isfinite(values)]
    if vals.size == 0:
        return f"<figure><figcaption>{esc(title)}: no values</figcaption></figure>"
    lo, hi = float(vals.min()), float(vals.max())
    if hi == lo:
        hi = lo + 1.0
    counts, edges = np.histogram(vals, bins=bins, range=(lo, hi))
    top = max(int(counts.max()), 1)
    bw = (width - 40) / bins
    bars = "".join(
        f'<rect x="{30 + i * bw:.1f}" y="{height - 20 - c / top * (height - 40):.1f}" width="{bw - 1:.1f}" '
        f'height="{c / top * (height - 40):.1f}" fill="#4e79a7"><title>{edges[i]:.3g}–{edges[i + 1]:.3g}: {c}</title></rect>'
        for i, c in enumerate(counts)
    )
    axis = (f'<text x="30" y="{height - 5}" font-size="10">{lo:.3g}</text>'
            f'<text x="{width - 10}" y="{height - 5}" font-size="10" text-anchor="end">{hi:.3g}</text>'
            f'<text x="2" y="20" font-size="10">{top}</text>')
    missing = int(np.sum(~np.isfinite(values)))
    caption = f"{esc(title)} — n={vals.size}, mean {vals.mean():.3g}, median {np.median(vals):.3g}" + (
        f", {missing} unparsed" if missing else "")
    return (f'<figure><svg width="{width}" height="{height}" role="img">{bars}{axis}</svg>'
            f"<figcaption>{caption}</figcaption></figure>")


def scatter_svg(xy: np.ndarray, clusters: np.ndarray, selected: np.ndarray, size: int = 520) -> str:
    if len(xy) == 0:
        return "<p>No embeddings.</p>"
    lo, hi = xy.min(0), xy.max(0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    pts = (xy - lo) / span * (size - 20) + 10
    dots = []
    for (x, y), c, s in zip(pts, clusters, selected):
        color = PALETTE[int(c) % len(PALETTE)]
        if s:
            dots.append(f'<circle cx="{x:.1f}" cy="{size - y:.1f}" r="4.5" fill="{color}" stroke="#000" stroke-width="1.5"/>')
        else:
            dots.append(f'<circle cx="{x:.1f}" cy="{size - y:.1f}" r="2.5" fill="{color}" fill-opacity="0.45"/>')
    return (f'<svg width="{size}" height="{size}" role="img" style="border:1px solid #ddd">{"".join(dots)}</svg>'
            "<p class=note>PCA of the embeddings; colour = K-means cluster; outlined = selected.</p>")


def table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{esc(_fmt(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def spearman(a: np.ndarray, b: np.ndarray) -> tuple[float, int]:
    from scipy.stats import spearmanr

    mask = np.isfinite(a) & np.isfinite(b)
    if mask.sum() < 3 or np.ptp(a[mask]) == 0 or np.ptp(b[mask]) == 0:  # undefined (scipy would warn)
        return float("nan"), int(mask.sum())
    rho = spearmanr(a[mask], b[mask]).statistic
    return float(rho), int(mask.sum())


def load_run(out_dir: Path) -> dict[str, Any]:
    manifest_path = out_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"steps": []}
    steps = []
    for entry in manifest.get("steps", []):
        if not entry.get("output"):  # an export step: a folder of trainer files, not one step output
            steps.append({**entry, "records": []})
            continue
        path = Path(entry["output"])
        if not path.is_absolute() and not path.exists():
            path = out_dir / path.name
        rows = read_records(path) if path.is_file() and path.stat().st_size else []
        steps.append({**entry, "records": list(rows)})
    if not steps:  # a single-command output folder: every JSONL file in it
        for path in sorted(out_dir.glob("*.jsonl")):
            if path.stat().st_size:
                steps.append({"step": path.stem, "kind": "", "records": list(read_records(path))})
    return {"manifest": manifest, "steps": steps}


def build_report(out_dir: str | Path, encoder: str = "local") -> str:
    """The HTML text of the report for a pipeline output folder."""
    out_dir = Path(out_dir)
    run = load_run(out_dir)
    steps = run["steps"]
    # The pool is what the last selector chose from: the output of the step before it.
    last_select = max((i for i, s in enumerate(steps) if s.get("kind") == "select"), default=None)
    if last_select is None:
        pool, selected_rows = next((s["records"] for s in reversed(steps) if s["records"]), []), []
    else:
        pool = steps[last_select - 1]["records"] if last_select > 0 else steps[last_select]["records"]
        selected_rows = steps[last_select]["records"]
    chosen = {row_id(r) for r in selected_rows}
    selected_mask = np.array([row_id(r) in chosen for r in pool], bool)

    parts = [f"<h1>instructkit report — {esc(run['manifest'].get('name', out_dir.name))}</h1>"]
    from ..run.manifest import little_output

    flagged = [(s.get("step"), notes) for s in steps if (notes := little_output(s))]
    if flagged:  # first thing on the page: a step that produced little
        parts.append("<div class=warn><b>Little output or no separation</b><ul>" + "".join(
            f"<li>{esc(name)}: {esc('; '.join(notes))}</li>" for name, notes in flagged) + "</ul></div>")
    # Counts, tokens and cost per step.
    rows, tot_tokens, tot_cost = [], 0, 0.0
    for s in steps:
        calls = s.get("calls") or {}
        tokens = int(calls.get("prompt_tokens", 0) + calls.get("completion_tokens", 0))
        tot_tokens += tokens
        tot_cost += float(calls.get("cost", 0.0))
        run_stats = s.get("run") or {}
        rows.append([s.get("step"), f"{s.get('kind', '')} {s.get('method', '')}".strip(), s.get("rows_in", ""),
                     s.get("rows_out", len(s["records"])), run_stats.get("failed", 0), calls.get("calls", 0),
                     calls.get("cache_hits", 0), tokens, f"${float(calls.get('cost', 0.0)):.4f}",
                     s.get("wall_s", ""), "reused" if s.get("skipped") else ""])
    parts.append("<h2>Steps</h2>" + table(
        ["step", "method", "rows in", "rows out", "failed", "calls", "cache hits", "tokens", "cost", "wall s", ""], rows))
    parts.append(f"<p>Total tokens {tot_tokens:,}; total cost ${tot_cost:.4f}.</p>")

    # Score distributions and agreement.
    cols = score_columns(pool)
    if cols:
        parts.append("<h2>Score distributions</h2><div class=grid>"
                     + "".join(histogram_svg(column(pool, c), c) for c in cols) + "</div>")
        if len(cols) > 1:
            agree = []
            for i, a in enumerate(cols):
                for b in cols[i + 1:]:
                    rho, n = spearman(column(pool, a), column(pool, b))
                    agree.append([a, b, rho, n])
            parts.append("<h2>Agreement between judges</h2>" + table(["score A", "score B", "Spearman ρ", "rows"], agree))

    # Embedding map and diversity.
    if len(pool) >= 3:
        from ..models.embeddings import embedder

        texts = ["\n".join(f"{q}\n{a}" for q, a in to_turns(r)) for r in pool]
        emb = embedder(encoder).embed(texts)
        from sklearn.cluster import KMeans
        from sklearn.decomposition import PCA

        k = max(2, min(10, int(np.sqrt(len(pool) / 2))))
        k = min(k, len(pool))
        clusters = KMeans(n_clusters=k, n_init=4, random_state=0).fit_predict(emb)
        xy = PCA(n_components=2, random_state=0).fit_transform(emb)
        parts.append(f"<h2>Embedding map</h2><p>{int(selected_mask.sum())} of {len(pool)} rows selected.</p>"
                     + scatter_svg(xy, clusters, selected_mask))
        if selected_mask.any():
            compare_with_random = registry.extension_of("select.compare_with_random")
            flatten = registry.extension_of("select.flatten_report")
            idx = np.flatnonzero(selected_mask)
            kw: dict[str, Any] = {"texts": [a for r in pool for _, a in to_turns(r)[:1]]}
            if cols:
                kw["scores"] = column(pool, cols[0])
            reports = compare_with_random(emb, idx, 0, k, **kw)
            names = list(reports)
            flat = {n: flatten(reports[n]) for n in names}
            metrics = sorted({m for f in flat.values() for m in f})
            parts.append("<h2>Diversity: selected vs random</h2>"
                         + table(["metric", *names], [[m, *[flat[n].get(m, "") for n in names]] for m in metrics]))

    # Tags.
    tag_counts: Counter[str] = Counter()
    for rec in pool:
        for key, value in rec.items():
            if key.endswith("tags") and isinstance(value, list):
                tag_counts.update(str(t.get("tag", t)) if isinstance(t, dict) else str(t) for t in value)
    if tag_counts:
        parts.append("<h2>Top tags</h2>" + table(["tag", "rows"], [[t, n] for t, n in tag_counts.most_common(30)]))

    # Failures.
    failures = []
    for s in steps:
        for i, rec in enumerate(s["records"]):
            for stage, err in (rec.get("_errors") or {}).items():
                failures.append([s.get("step"), i, stage, str(err)[:300]])
    parts.append("<h2>Failures</h2>" + (table(["step", "row", "stage", "error"], failures[:200])
                                        if failures else "<p>None.</p>"))
    style = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}"
             "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}"
             "th{background:#f3f3f3}.grid{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0}"
             "figcaption,.note{font-size:12px;color:#555}"
             ".warn{background:#fff4e5;border:1px solid #f0a040;padding:.3em 1em;margin:.5em 0}")
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>instructkit report</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>")


def write_report(out_dir: str | Path, path: str | Path | None = None, encoder: str = "local") -> Path:
    out_dir = Path(out_dir)
    target = Path(path) if path else out_dir / "report.html"
    target.write_text(redact(build_report(out_dir, encoder)), encoding="utf-8")
    return target
