"""Raw documents for document-grounded generators: loading and a paragraph-aware chunker.

Readers: `.txt`, `.md` (plain text; markdown kept as written), `.html`/`.htm` (visible text via
BeautifulSoup, one block element per paragraph), `.pdf` (pypdf, one page after another), `.jsonl`
(one document per line, text in a named field) and folders of any of these (sorted, recursive).

The chunker keeps paragraphs whole and packs consecutive ones into passages of at most `max_tokens`;
a paragraph longer than the budget is split at sentence ends, a sentence longer than the budget at
word boundaries. Token counts come from the given tokenizer (a Hugging Face tokenizer or any callable
returning a count); without one, an estimate of 4 tokens per 3 words is used.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .io import InputError, Records, guess_column, read_jsonl

TEXT_SUFFIXES = {".txt", ".md", ".markdown", ".rst"}
HTML_SUFFIXES = {".html", ".htm"}
SUPPORTED = TEXT_SUFFIXES | HTML_SUFFIXES | {".pdf", ".jsonl", ".ndjson"}
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[A-Z0-9\"'(\[])")


@dataclass
class Document:
    """One source document: a stable id, its text, and where it came from."""

    doc_id: str
    text: str
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Passage:
    """A chunk of a document with its provenance."""

    doc_id: str
    passage_index: int
    text: str
    n_tokens: int
    source: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


# ----- loading ---------------------------------------------------------------------------------
def load_documents(
    path: str | Path, *, text_field: str = "text", id_field: str | None = None, recursive: bool = True
) -> list[Document]:
    """Documents from a file or a folder (files of unsupported types in a folder are skipped)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or folder")
    if p.is_dir():
        files = sorted(f for f in (p.rglob("*") if recursive else p.iterdir()) if f.is_file())
        docs: list[Document] = []
        for f in files:
            if f.suffix.lower() in SUPPORTED:
                docs.extend(load_documents(f, text_field=text_field, id_field=id_field))
        return docs
    suffix = p.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return record_documents(read_jsonl(p), text_field, id_field, source=str(p))
    if suffix in HTML_SUFFIXES:
        text = html_to_text(p.read_text(encoding="utf-8", errors="replace"))
    elif suffix == ".pdf":
        text = pdf_to_text(p)
    else:
        text = p.read_text(encoding="utf-8", errors="replace")
    return [Document(p.name, text, str(p))]


def record_documents(
    records: Records, text_field: str = "text", id_field: str | None = None, source: str | None = None
) -> list[Document]:
    """One document per record: the text in `text_field` (a record without one is an InputError naming
    file, line and field, and the `-o text_field` that would read another column), the id from
    `id_field` (default doc_id, id or _id), every other field as meta. `source`: the file the records
    were read from (ids default to "<file stem>:<line>"); without it they are rows handed to a method
    ("doc<i>")."""
    docs = []
    for i, row in enumerate(records):
        line = records.line_of(i)
        text = row.get(text_field)
        if not isinstance(text, str) or not text.strip():
            column = guess_column(text_field, row) or "COLUMN"
            fix = "" if text_field in row else f". To read another column: -o text_field {column}"
            raise InputError(records.source, f"{'empty' if text_field in row else 'missing'}; the record has "
                             f"{sorted(row)}{fix}", line, text_field)  # fmt: skip
        keys = [id_field] if id_field else ["doc_id", "id", "_id"]
        fallback = f"{Path(source).stem}:{line}" if source else f"doc{i}"
        doc_id = next((str(row[k]) for k in keys if row.get(k) is not None), fallback)
        meta = {k: v for k, v in row.items() if k != text_field}
        docs.append(Document(doc_id, text, f"{source}:{line}" if source else "records", meta))
    return docs


def html_to_text(html: str) -> str:
    """Visible text of an HTML page, one paragraph per block element; scripts and styles dropped."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    for tag in soup(["script", "style", "noscript", "template", "head"]):
        tag.decompose()
    blocks = "p div li h1 h2 h3 h4 h5 h6 pre blockquote td th tr section article br".split()
    for tag in soup.find_all(blocks):
        tag.insert_before("\n\n")
        tag.insert_after("\n\n")
    text = soup.get_text()
    paragraphs = [re.sub(r"[ \t\r\f\v]+", " ", para).strip() for para in _PARAGRAPH_BREAK.split(text)]
    return "\n\n".join(p for p in paragraphs if p)


def pdf_to_text(path: str | Path) -> str:
    """Text of every page of a PDF (pypdf), pages separated by blank lines."""
    from pypdf import PdfReader

    reader = PdfReader(str(path))
    return "\n\n".join((page.extract_text() or "").strip() for page in reader.pages).strip()


# ----- chunking --------------------------------------------------------------------------------
TokenCounter = Callable[[str], int]


def token_counter(tokenizer: Any = None) -> TokenCounter:
    """A text -> token count function: the tokenizer's own count, else ceil(words * 4 / 3)."""
    if tokenizer is None:
        return lambda text: math.ceil(len(text.split()) * 4 / 3)
    if hasattr(tokenizer, "encode"):
        return lambda text: len(tokenizer.encode(text, add_special_tokens=False))
    if callable(tokenizer):
        return lambda text: int(tokenizer(text))
    raise TypeError("tokenizer must be a Hugging Face tokenizer, a callable text -> count, or None")


def split_paragraphs(text: str) -> list[str]:
    """Paragraphs separated by blank lines, inner whitespace kept, empty ones dropped."""
    return [p.strip() for p in _PARAGRAPH_BREAK.split(text.replace("\r\n", "\n")) if p.strip()]


def chunk_text(text: str, max_tokens: int = 384, tokenizer: Any = None, min_tokens: int = 0) -> list[str]:
    """Pack paragraphs into passages of at most `max_tokens` (oversized pieces split finer).

    Passages under `min_tokens` are merged into the previous one when that stays within budget.
    """
    if max_tokens < 1:
        raise ValueError("max_tokens must be >= 1")
    count = token_counter(tokenizer)
    pieces: list[str] = []
    for para in split_paragraphs(text):
        pieces.extend(_fit(para, max_tokens, count))
    passages: list[str] = []
    current: list[str] = []
    for piece in pieces:
        trial = "\n\n".join(current + [piece])
        if current and count(trial) > max_tokens:
            passages.append("\n\n".join(current))
            current = [piece]
        else:
            current.append(piece)
    if current:
        passages.append("\n\n".join(current))
    if min_tokens > 0 and len(passages) > 1:
        merged = [passages[0]]
        for passage in passages[1:]:
            joined = merged[-1] + "\n\n" + passage
            if count(passage) < min_tokens and count(joined) <= max_tokens:
                merged[-1] = joined
            else:
                merged.append(passage)
        passages = merged
    return passages


def _fit(paragraph: str, max_tokens: int, count: TokenCounter) -> list[str]:
    """The paragraph itself, or its sentences (and words of oversized sentences) packed to budget."""
    if count(paragraph) <= max_tokens:
        return [paragraph]
    units: list[str] = []
    for sentence in _SENTENCE_END.split(paragraph):
        if count(sentence) <= max_tokens:
            units.append(sentence)
        else:
            units.extend(_pack(sentence.split(), " ", max_tokens, count))
    return _pack(units, " ", max_tokens, count)


def _pack(units: list[str], sep: str, max_tokens: int, count: TokenCounter) -> list[str]:
    out: list[str] = []
    current: list[str] = []
    for unit in units:
        if current and count(sep.join(current + [unit])) > max_tokens:
            out.append(sep.join(current))
            current = [unit]
        else:
            current.append(unit)
    if current:
        out.append(sep.join(current))
    return out


def passages_from(
    documents: Iterable[Document], max_tokens: int = 384, tokenizer: Any = None, min_tokens: int = 0
) -> list[Passage]:
    """Every document chunked, with (doc_id, passage_index) provenance."""
    count = token_counter(tokenizer)
    out = []
    for doc in documents:
        for i, text in enumerate(chunk_text(doc.text, max_tokens, tokenizer, min_tokens)):
            out.append(Passage(doc.doc_id, i, text, count(text), doc.source))
    return out
