"""Jinja2 prompt templates shipped in `instructkit.prompts`, with a content hash for manifests."""

from __future__ import annotations

import hashlib
from functools import cache
from importlib import resources
from pathlib import Path

import jinja2


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("instructkit.prompts", "."),
        auto_reload=False,  # packaged templates do not change under a run: no stat per render
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=False,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )


@cache
def _exact_environment() -> jinja2.Environment:
    return jinja2.Environment(keep_trailing_newline=True, undefined=jinja2.StrictUndefined, autoescape=False)


@cache
def exact_template(source: str) -> jinja2.Template:
    """A template rendered byte for byte (no trimming, trailing newline kept, strict variables): for
    texts a model was trained on or an official script built (IFD prompts, embedding texts)."""
    return _exact_environment().from_string(source)


def template_source(name: str, path: str | Path | None = None) -> str:
    if path is not None:
        return Path(path).read_text(encoding="utf-8")
    return resources.files("instructkit.prompts").joinpath(name).read_text(encoding="utf-8")


def render(name: str, /, path: str | Path | None = None, **variables: object) -> str:
    """Render a packaged template (or a user's template file at `path`) with strict variables."""
    if path is not None:
        template = _user_template(str(path), Path(path).stat().st_mtime_ns)
    else:
        template = _environment().get_template(name)
    if not variables:
        return _fixed_text(template)  # a system prompt: the same text for every row
    return template.render(**variables).strip()


@cache
def _fixed_text(template: jinja2.Template) -> str:
    """A template rendered without variables, once (templates are cached, so this is per version)."""
    return template.render().strip()


@cache
def _user_template(path: str, mtime_ns: int) -> jinja2.Template:
    """A user's template file, compiled once per version of the file (not once per row)."""
    return _environment().from_string(template_source("", path))


def template_hash(name: str, path: str | Path | None = None) -> str:
    """Short SHA-256 of the template text, recorded in manifests so a prompt change is visible."""
    return hashlib.sha256(template_source(name, path).encode("utf-8")).hexdigest()[:16]
