"""InsTag: open-set intention tags per user query, normalised; complexity = number of tags.

Paper: Lu et al., "#InsTag: Instruction Tagging for Analyzing Supervised Fine-tuning of Large
Language Models" (ICLR 2024, arXiv 2308.07074).
Deviations: the prompt is our own wording (JSON list of {tag, explanation}), constrained by JSON
schema where the backend supports it, else parsed, validated and repaired; common near-misses
({"tags": [...]}, one object, a list of strings) are accepted. The paper released no normalisation
code, so: frequency filter α=20 counted in rows, scaled down linearly for sets smaller than the
paper's 306,044-query pool (with a warning; never below 1); rule aggregation with NLTK's Porter
stemmer, the most frequent surface form naming each stem group; semantic aggregation embeds tags
with all-MiniLM-L6-v2 (not PhraseBERT, which we do not ship) and runs DBSCAN with eps=0.05 on
cosine distance and min_samples=1; association aggregation mines pair rules X→Y (support ≥ 40
rows, absolute and not scaled: at support 1 every pair seen once would merge; confidence ≥ 0.99)
and merges the linked tags transitively (rules with larger antecedents are not mined).
Multi-turn records: each user turn is tagged and the conversation's tags are their union. Complexity-first sampling belongs to selection/instag.py.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from instructkit.data.io import INSTRUCTION_FIELD, to_turns
from instructkit.models import extract_json
from instructkit.registry import method
from instructkit.run.runner import RunContext
from instructkit.shared.rows import chat_messages, finish, llm_of
from instructkit.shared.scores import OK, report, usage_columns
from instructkit.templates import render

PREFIX = "instag"
PAPER_POOL = 306_044  # queries in the paper's tagged pool, the scale α=20 and support=40 refer to
TAG_SCHEMA = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {"tag": {"type": "string"}, "explanation": {"type": "string"}},
        "required": ["tag", "explanation"],
    },
}
COLUMNS = [
    f"{PREFIX}_{c}"
    for c in ("tags", "complexity", "raw_tags", "items", "raw", "parse", "tokens", "cost", "calls")
]


@dataclass
class InstagOptions:
    min_freq: int = 20  # frequency filter α (rows a tag must appear in); 0 turns the step off
    scale_min_freq: bool = True  # scale α down for sets smaller than the paper's pool (with a warning)
    rule: bool = True  # lowercase, special characters to spaces, Porter stemming
    semantic: bool = True  # tag embeddings + DBSCAN
    eps: float = 0.05  # DBSCAN radius on cosine distance (the paper's threshold)
    embedder: str = "local"  # instructkit.models.embeddings.embedder spec
    association: bool = True  # merge tags linked by pair rules
    min_support: int = 40  # rows in which both tags appear (absolute, never scaled)
    min_confidence: float = 0.99
    max_tokens: int = 256
    temperature: float = 0.0
    repairs: int = 1  # ask again with the validation error (non-constrained backends)
    template: str | None = None
    system_template: str | None = None


# ----- parsing ------------------------------------------------------------------------------------


def coerce_tags(value: Any) -> list[dict[str, str]] | None:
    """A list of {tag, explanation} from what a tagger returned, or None when it is not one."""
    if isinstance(value, dict):
        if "tag" in value:
            value = [value]
        else:
            lists = [v for v in value.values() if isinstance(v, list)]
            if len(lists) != 1:
                return None
            value = lists[0]
    if not isinstance(value, list):
        return None
    out = []
    for item in value:
        if isinstance(item, str) and item.strip():
            out.append({"tag": item.strip(), "explanation": ""})
        elif isinstance(item, dict) and isinstance(item.get("tag"), str) and item["tag"].strip():
            out.append({"tag": item["tag"].strip(), "explanation": str(item.get("explanation") or "")})
        else:
            return None
    return out


def parse_tags(text: str | None) -> tuple[list[dict[str, str]] | None, str]:
    """(items, status) from a tagger reply: ok, empty (no text or an empty list) or invalid."""
    if text is None or not text.strip():
        return None, "empty"
    try:
        items = coerce_tags(extract_json(text))
    except ValueError:
        return None, "invalid"
    if items is None:
        return None, "invalid"
    return (items, OK) if items else (None, "empty")


# ----- normalisation ------------------------------------------------------------------------------

_SPECIAL = re.compile(r"[^0-9a-z]+")


def clean_tag(tag: str) -> str:
    """Lowercase, every run of special characters to one space."""
    return " ".join(_SPECIAL.sub(" ", tag.lower()).split())


def stem_key(tag: str) -> str:
    from nltk.stem import PorterStemmer

    stemmer = _stemmer_cache.setdefault("porter", PorterStemmer())
    return " ".join(stemmer.stem(w) for w in clean_tag(tag).split())


_stemmer_cache: dict[str, Any] = {}


def _dedup(tags: list[str]) -> list[str]:
    return list(dict.fromkeys(tags))


def _row_counts(rows: list[list[str] | None]) -> Counter:
    return Counter(t for row in rows if row for t in set(row))


def _canonical(members: list[str], counts: Counter) -> str:
    """The most frequent member; ties go to the alphabetically first."""
    return min(members, key=lambda t: (-counts[t], t))


def _apply(rows: list[list[str] | None], mapping: dict[str, str | None]) -> list[list[str] | None]:
    out: list[list[str] | None] = []
    for row in rows:
        if row is None:
            out.append(None)
        else:
            out.append(_dedup([m for t in row if (m := mapping.get(t, t)) is not None]))
    return out


def _step(name: str, rows_before: list, rows_after: list, mapping: dict, **extra: Any) -> dict[str, Any]:
    merges = sorted([a, b] for a, b in mapping.items() if b is not None and a != b)
    return {
        "step": name,
        "tags_before": len(_row_counts(rows_before)),
        "tags_after": len(_row_counts(rows_after)),
        "dropped": sorted(a for a, b in mapping.items() if b is None)[:200],
        "n_dropped": sum(b is None for b in mapping.values()),
        "n_merges": len(merges),
        "merges": merges[:200],
        **extra,
    }


def frequency_filter(rows: list[list[str] | None], threshold: int) -> tuple[list, dict]:
    counts = _row_counts(rows)
    mapping = {t: (t if n >= threshold else None) for t, n in counts.items()}
    out = _apply(rows, mapping)
    return out, _step("frequency", rows, out, mapping, threshold=threshold)


def rule_aggregate(rows: list[list[str] | None]) -> tuple[list, dict]:
    counts = _row_counts(rows)
    surface_counts: Counter = Counter()
    for tag, n in counts.items():
        surface_counts[clean_tag(tag)] += n
    groups: dict[str, list[str]] = {}
    for surface in surface_counts:
        groups.setdefault(stem_key(surface), []).append(surface)
    mapping: dict[str, str | None] = {}
    for tag in counts:
        surface = clean_tag(tag)
        key = stem_key(surface)
        mapping[tag] = _canonical(groups[key], surface_counts) if key else None
    out = _apply(rows, mapping)
    return out, _step("rule", rows, out, mapping)


def semantic_aggregate(
    rows: list[list[str] | None], embed: Callable[[list[str]], np.ndarray], eps: float
) -> tuple[list, dict]:
    from sklearn.cluster import DBSCAN

    counts = _row_counts(rows)
    tags = sorted(counts, key=lambda t: (-counts[t], t))
    if len(tags) < 2:
        return rows, _step("semantic", rows, rows, {}, eps=eps)
    vectors = np.asarray(embed(tags), dtype=np.float64)
    labels = DBSCAN(eps=eps, min_samples=1, metric="cosine").fit(vectors).labels_
    clusters: dict[int, list[str]] = {}
    for tag, label in zip(tags, labels):
        clusters.setdefault(int(label), []).append(tag)
    mapping: dict[str, str | None] = {}
    for members in clusters.values():
        head = _canonical(members, counts)
        mapping.update({t: head for t in members})
    out = _apply(rows, mapping)
    return out, _step("semantic", rows, out, mapping, eps=eps)


def association_rules(
    rows: list[list[str] | None], min_support: int, min_confidence: float
) -> list[tuple[str, str, int, float]]:
    """Pair rules X→Y with support(X∪Y) ≥ min_support rows and support(X∪Y)/support(X) ≥ min_confidence."""
    counts = _row_counts(rows)
    pairs: Counter = Counter()
    for row in rows:
        if row:
            uniq = sorted(set(row))
            for i, a in enumerate(uniq):
                for b in uniq[i + 1 :]:
                    pairs[(a, b)] += 1
    rules = []
    for (a, b), n in pairs.items():
        if n < min_support:
            continue
        for x, y in ((a, b), (b, a)):
            conf = n / counts[x]
            if conf >= min_confidence:
                rules.append((x, y, n, conf))
    return sorted(rules)


def association_aggregate(
    rows: list[list[str] | None], min_support: int, min_confidence: float
) -> tuple[list, dict]:
    counts = _row_counts(rows)
    rules = association_rules(rows, min_support, min_confidence)
    parent: dict[str, str] = {}

    def find(t: str) -> str:
        while parent.get(t, t) != t:
            t = parent[t]
        return t

    for x, y, _, _ in rules:
        rx, ry = find(x), find(y)
        if rx != ry:
            parent[rx] = ry
    groups: dict[str, list[str]] = {}
    for t in counts:
        groups.setdefault(find(t), []).append(t)
    mapping: dict[str, str | None] = {}
    for members in groups.values():
        head = _canonical(members, counts)
        mapping.update({t: head for t in members})
    out = _apply(rows, mapping)
    extra = {
        "min_support": min_support,
        "min_confidence": min_confidence,
        "n_rules": len(rules),
        "rules": [list(r) for r in rules[:200]],
    }
    return out, _step("association", rows, out, mapping, **extra)


def scaled(value: int, n_rows: int, enabled: bool) -> int:
    """A count threshold set for the paper's pool, scaled linearly to n_rows (at least 1)."""
    if not enabled or n_rows >= PAPER_POOL or value <= 0:
        return value
    return max(1, round(value * n_rows / PAPER_POOL))


def normalise(
    rows: list[list[str] | None], opts: InstagOptions, embed: Callable[[list[str]], np.ndarray] | None = None
) -> tuple[list[list[str] | None], dict[str, Any]]:
    """Run the enabled normalisation steps in the paper's order; return tags per row and a report."""
    n = sum(row is not None for row in rows)
    rep: dict[str, Any] = {
        "rows": len(rows),
        "tagged_rows": n,
        "raw_tags": len(_row_counts(rows)),
        "steps": [],
    }
    warnings = []
    if opts.min_freq > 0:
        alpha = scaled(opts.min_freq, n, opts.scale_min_freq)
        if alpha != opts.min_freq:
            warnings.append(f"frequency threshold scaled from {opts.min_freq} to {alpha} for {n} tagged rows")
        rows, step = frequency_filter(rows, alpha)
        rep["steps"].append(step)
    if opts.rule:
        rows, step = rule_aggregate(rows)
        rep["steps"].append(step)
    if opts.semantic:
        if embed is None:

            def embed(tags: list[str]) -> np.ndarray:
                from instructkit.models.embeddings import embedder

                return embedder(opts.embedder).embed(tags)

        rows, step = semantic_aggregate(rows, embed, opts.eps)
        rep["steps"].append(step)
    if opts.association:
        rows, step = association_aggregate(rows, opts.min_support, opts.min_confidence)
        if n < PAPER_POOL and not step["n_rules"]:
            warnings.append(f"no association rule reaches support {opts.min_support} in {n} tagged rows")
        rep["steps"].append(step)
    rep["tags"] = len(_row_counts(rows))
    rep["warnings"] = warnings
    return rows, rep


# ----- the method ---------------------------------------------------------------------------------


@method("judge", PREFIX, options=InstagOptions, turns="native", reads=(INSTRUCTION_FIELD,),
        cross_row="its tag normalisation counts tags over all rows")
def instag(records: list[dict], ctx: RunContext) -> list[dict]:
    """InsTag: tag user intentions (JSON), normalise tags; complexity = number of tags."""
    opts = ctx.options or InstagOptions()
    llm = llm_of(ctx)
    system = render("instag_system.jinja", path=opts.system_template)
    params: dict[str, Any] = {"temperature": opts.temperature, "max_tokens": opts.max_tokens}
    constrained = llm.supports_json_schema

    async def tag_query(query: str) -> tuple[list[dict] | None, str, list]:
        msgs = chat_messages(system, render("instag.jinja", path=opts.template, query=query))
        comp = await llm.achat(msgs, **params, **({"json_schema": TAG_SCHEMA} if constrained else {}))
        items, status = parse_tags(comp.text)
        comps = [comp]
        if status == "invalid" and opts.repairs > 0:
            try:
                value, fixed = await llm.ajson(msgs, TAG_SCHEMA, repairs=opts.repairs, **params)
                items = coerce_tags(value)
                status = OK if items else "empty"
                comps.append(fixed)
            except ValueError:
                pass
        return items, status, comps

    async def one(rec: dict) -> dict:
        queries = [q for q, _ in to_turns(rec)]
        results = [await tag_query(q) for q in queries]
        comps = [c for r in results for c in r[2]]
        statuses = [r[1] for r in results]
        items = [i for r in results if r[0] for i in r[0]]
        ok = bool(results) and all(s == OK for s in statuses)
        return {
            f"{PREFIX}_items": items if ok else None,
            f"{PREFIX}_raw_tags": _dedup([i["tag"] for i in items]) if ok else None,
            f"{PREFIX}_raw": [r[2][0].text for r in results],
            f"{PREFIX}_parse": OK if ok else next((s for s in statuses if s != OK), "empty"),
            **usage_columns(PREFIX, comps),
        }

    out = finish(records, ctx.map(records, one, stage="tag"), "tag", PREFIX, COLUMNS)
    rows = [r.get(f"{PREFIX}_raw_tags") for r in out]
    normalised, rep = normalise(rows, opts)
    for rec, tags in zip(out, normalised):
        rec[f"{PREFIX}_tags"] = tags
        rec[f"{PREFIX}_complexity"] = len(tags) if tags is not None else None
    vocab = dict(sorted(_row_counts(normalised).items(), key=lambda kv: (-kv[1], kv[0])))
    for warning in rep["warnings"]:
        print(f"[instag] warning: {warning}", file=sys.stderr)
    ctx.extras["instag_vocab"] = vocab
    ctx.extras["instag_normalisation"] = rep
    if ctx.work_dir is not None:
        Path(ctx.work_dir).mkdir(parents=True, exist_ok=True)
        (Path(ctx.work_dir) / "instag.vocab.json").write_text(json.dumps(vocab, indent=1, ensure_ascii=False))
        (Path(ctx.work_dir) / "instag.normalisation.json").write_text(
            json.dumps(rep, indent=1, ensure_ascii=False)
        )
    steps = [
        {k: s[k] for k in ("step", "tags_before", "tags_after", "n_merges", "n_dropped")}
        for s in rep["steps"]
    ]
    report(
        out,
        PREFIX,
        ctx,
        {"raw_tags": rep["raw_tags"], "tags": rep["tags"], "steps": steps, "warnings": rep["warnings"]},
    )
    return out
