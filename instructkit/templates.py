"""Jinja2 prompt templates shipped in `instructkit.prompts`, with a content hash for manifests.

Every environment is Jinja's `SandboxedEnvironment`: a template (a user's file, a pipeline's
`text_template`, one a colleague shared) reads its variables but cannot reach Python's internals
(`cycler.__init__.__globals__.os...` raises `SecurityError`, refused as a ValueError). Templates that
only read variables render byte for byte as in a plain environment."""

from __future__ import annotations

import hashlib
from functools import cache
from importlib import resources
from pathlib import Path

import jinja2
from jinja2.sandbox import SandboxedEnvironment


@cache
def _environment() -> jinja2.Environment:
    return SandboxedEnvironment(
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
    return SandboxedEnvironment(keep_trailing_newline=True, undefined=jinja2.StrictUndefined, autoescape=False)


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
        template, parts = _compiled("", str(path), Path(path).stat().st_mtime_ns)
    else:
        template, parts = _compiled(name, None, 0)
    if not variables:
        return _fixed_text(template)  # a system prompt: the same text for every row
    if parts is not None:
        return _substitute(template, parts, variables).strip()
    return safe_render(template, variables, name or str(path)).strip()


def safe_render(template: jinja2.Template, variables: dict[str, object], name: str = "template") -> str:
    """`template.render(**variables)`; what the sandbox refuses is a ValueError naming the template."""
    try:
        return template.render(**variables)
    except jinja2.exceptions.SecurityError as exc:
        raise ValueError(f"{name}: refused by the template sandbox ({exc}); templates may read their "
                         "variables, not Python internals") from None


@cache
def _fixed_text(template: jinja2.Template) -> str:
    """A template rendered without variables, once (templates are cached, so this is per version)."""
    return safe_render(template, {}).strip()


@cache
def _compiled(name: str, path: str | None, mtime_ns: int) -> tuple[jinja2.Template, tuple[str, ...] | None]:
    """A packaged template, or a user's file (once per version of it: `mtime_ns`), compiled once, with
    its `plain_parts`."""
    env = _environment()
    template = env.get_template(name) if path is None else env.from_string(template_source("", path))
    return template, plain_parts(env.parse(template_source(name, path)))


def plain_parts(tree: jinja2.nodes.Template) -> tuple[str, ...] | None:
    """A template that only substitutes variables (`{{ name }}`: no filter, test, expression or
    statement) as its literal texts and variable names, alternating (texts at even positions); None
    for any other template. Jinja compiles such a template to `str(value)` of each variable between
    the texts, so joining them gives its output byte for byte, without a render context per row."""
    from jinja2 import nodes

    parts: list[str] = [""]
    for node in tree.body:
        if not isinstance(node, nodes.Output):
            return None
        for child in node.nodes:
            if isinstance(child, nodes.TemplateData):
                parts[-1] += child.data
            elif isinstance(child, nodes.Name) and child.ctx == "load":
                parts += [child.name, ""]
            else:
                return None
    return tuple(parts)


def _substitute(template: jinja2.Template, parts: tuple[str, ...], variables: dict[str, object]) -> str:
    out = []
    for i, part in enumerate(parts):
        if i % 2 == 0:
            out.append(part)
            continue
        value = variables.get(part, _MISSING)
        if value is _MISSING:
            value = template.globals.get(part, _MISSING)
        # A missing variable is Jinja's own StrictUndefined, which raises its own error on str().
        out.append(str(template.environment.undefined(name=part) if value is _MISSING else value))
    return "".join(out)


_MISSING = object()


def unsafe_access(source: str) -> tuple[int, str] | None:
    """(line, name) of the first attribute or item a template reads that the sandbox refuses (a name
    starting with "_": `__globals__`, `__init__`, ...), found without rendering; None when there is none."""
    from jinja2 import nodes

    tree = _exact_environment().parse(source)
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        name = node.attr if isinstance(node, nodes.Getattr) else getattr(node.arg, "value", None)
        if isinstance(name, str) and name.startswith("_"):
            return node.lineno, name
    return None


def check_user_templates(options: object) -> None:
    """Refuse, before any call, a user's template (an option whose name says template and whose value is a
    file or a Jinja string) that reaches for Python internals: a ValueError naming the option and line."""
    for name, value in vars(options).items() if hasattr(options, "__dict__") else ():
        if "template" not in name or not isinstance(value, str) or not value:
            continue
        if "{{" in value or "{%" in value:
            source, where = value, f"option {name}"
        elif len(value) < 4096 and Path(value).is_file():
            source, where = Path(value).read_text(encoding="utf-8"), f"option {name} ({value})"
        else:
            continue
        try:
            found = unsafe_access(source)
        except jinja2.TemplateSyntaxError as exc:
            raise ValueError(f"{where}: line {exc.lineno}: not a valid Jinja template ({exc.message})") from None
        if found:
            raise ValueError(f"{where}: line {found[0]}: reads {found[1]!r}, which the template sandbox refuses; "
                             "templates may read their variables, not Python internals")


def template_hash(name: str, path: str | Path | None = None) -> str:
    """Short SHA-256 of the template text, recorded in manifests so a prompt change is visible."""
    return hashlib.sha256(template_source(name, path).encode("utf-8")).hexdigest()[:16]
