"""One registry for every method (generators, judges, scorers, selectors), built-in or plugin.

A method is a function `run(records, ctx) -> records` plus an options dataclass and the record
fields it reads (`reads`, checked before any model call). Built-ins register
with the `@method` decorator when their module is imported; third-party packages expose a module
(or a callable) under the `instructkit.methods` entry-point group. The CLI and the Python API are
built from this registry, never from hand-kept lists.

Loading is lazy: `get(kind, name)` first imports only the built-in module named after the method
(`instructkit.judge.alpagasus` for `judge alpagasus`), so a run pays for the one method it uses; a
listing, an extension, a method whose module has another name, or any installed plugin loads
everything (every module of the built-in packages, then the plugins, which may override built-ins).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

KINDS = ("generate", "judge", "score", "select")
TURN_KINDS = ("judge", "score")  # kinds that read chat rows one assistant turn at a time
# What a kind's methods need unless they declare otherwise (`@method(cross_row=...)`): judges and
# scorers take each row alone; a selector picks among all rows; a generator may draw or dedup over them.
CROSS_ROW_KINDS = {"select": "it selects among all rows", "generate": "a generator may draw or dedup over all rows"}
ENTRY_POINT_GROUP = "instructkit.methods"
# Where each kind's built-in methods live: a module there is found by its name first (`get`).
KIND_PACKAGES = {
    "generate": "instructkit.generators",
    "judge": "instructkit.judge",
    "score": "instructkit.scorers",
    "select": "instructkit.selection",
}
BUILTIN_PACKAGES = ("instructkit.generators", "instructkit.judge", "instructkit.scorers", "instructkit.selection")


@dataclass
class MethodInfo:
    kind: str
    name: str
    func: Callable[..., list[dict]]
    options: type | None
    summary: str
    needs_model: bool
    source: str  # "builtin" or the distribution/entry point that provided it
    turns: str = "views"  # judge/score on chat rows: "views" (instructkit.data.turns) or "native" (reads turns itself)

    @property
    def takes_turn_options(self) -> bool:
        """Whether `-o turns` / `-o turn_context` apply (judges and scorers that read turn views)."""
        return self.kind in TURN_KINDS and self.turns == "views"

    # The record fields the method reads: one entry per field it needs, "a|b" where either will do,
    # "{option}" for a field an option names; or a function of the options giving that tuple.
    reads: tuple[str, ...] | Callable[[Any], tuple[str, ...]] = ()
    # Why a row's output depends on other rows ("" : it does not), or a function of the options giving
    # that; None: the kind's default (CROSS_ROW_KINDS). Such a method runs on the whole input at once:
    # never per Ray batch nor per streaming window.
    cross_row: str | Callable[[Any], str] | None = None

    def cross_row_reason(self, options: Any = None) -> str:
        """Why this method needs every row at once with `options` ("" when each row stands alone)."""
        if self.cross_row is None:
            return CROSS_ROW_KINDS.get(self.kind, "")
        if callable(self.cross_row):
            return self.cross_row(options if options is not None else self.make_options())
        return self.cross_row

    def fields_read(self, options: Any = None) -> list[list[str]]:
        """The fields this method needs in every record, each as its alternatives, for `options`."""
        reads = self.reads(options) if callable(self.reads) else self.reads
        out = []
        for entry in reads:
            names = []
            for alt in entry.split("|"):
                if alt.startswith("{") and alt.endswith("}"):
                    value = getattr(options, alt[1:-1], None) if options is not None else None
                    if value is None and options is None and self.options is not None:
                        value = getattr(self.options(), alt[1:-1], None)
                    if not value:
                        continue  # an option left unset names no field
                    alt = str(value)
                names.append(alt)
            if names:
                out.append(names)
        return out

    def check_input(self, records: list[dict], options: Any = None) -> None:
        """Raise InputError (file, line, field, the --map that would fix it) when a record lacks a field
        this method reads, before any model call."""
        from .data.io import check_fields

        check_fields(records, self.fields_read(options), f"{self.kind} {self.name}")

    def make_options(self, values: dict[str, Any] | None = None) -> Any:
        """Options dataclass from strings or values, with type conversion and a clear error.

        `preset` names a set of option values from the options class's `PRESETS` (e.g. "official":
        the released configuration); options given beside it override the preset's."""
        values = dict(values or {})
        if self.options is None:
            if values:
                raise ValueError(f"{self.kind} {self.name} takes no options (got {sorted(values)})")
            return None
        if "preset" in values:
            values = {**self.preset_values(values.pop("preset")), **values}
        fields = {f.name: f for f in dataclasses.fields(self.options)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ValueError(f"{self.kind} {self.name}: unknown option(s) {unknown}; known: {sorted(fields)}")
        hints = _type_hints(self.options)
        return self.options(**{k: coerce(v, hints.get(k, str), k) for k, v in values.items()})

    def presets(self) -> dict[str, dict[str, Any]]:
        """Named option sets of this method (`PRESETS` on its options class), e.g. "official"."""
        return dict(getattr(self.options, "PRESETS", None) or {})

    def preset_values(self, name: str) -> dict[str, Any]:
        presets = self.presets()
        if name not in presets:
            known = ", ".join(sorted(presets)) or "none"
            raise ValueError(f"{self.kind} {self.name}: unknown preset {name!r}; known: {known}")
        return dict(presets[name])

    def option_help(self) -> list[tuple[str, str, str]]:
        """(name, type, default) for each option, for `--help` and docs (`preset` first when the
        method has presets; the turn options last for judges and scorers)."""
        if self.takes_turn_options:
            from .data.turns import OPTION_HELP

            return self._own_option_help() + OPTION_HELP
        return self._own_option_help()

    def _own_option_help(self) -> list[tuple[str, str, str]]:
        if self.options is None:
            return []
        hints = _type_hints(self.options)
        out = []
        if self.presets():
            out.append(("preset", "one of " + "|".join(sorted(self.presets())), "None"))
        for f in dataclasses.fields(self.options):
            default = f.default if f.default is not dataclasses.MISSING else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else "required"
            )
            out.append((f.name, getattr(hints.get(f.name), "__name__", str(hints.get(f.name))), repr(default)))
        return out


_REGISTRY: dict[tuple[str, str], MethodInfo] = {}
_loaded = False


def method(
    kind: str,
    name: str,
    options: type | None = None,
    needs_model: bool = True,
    source: str = "builtin",
    turns: str = "views",
    reads: tuple[str, ...] | Callable[[Any], tuple[str, ...]] = (),
    cross_row: str | Callable[[Any], str] | None = None,
):
    """Decorator that registers `func(records, ctx) -> records` as `kind name`. A judge or scorer
    that reads every turn of a chat row itself says `turns="native"`; the others get turn views.
    `reads` declares the record fields it needs ("a|b": either; "{opt}": the field option `opt` names).
    `cross_row` says why a row's output depends on the other rows (or a function of the options that
    does, "" where they make it row-wise); the run layer then never splits the input (Ray, windows)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")

    def wrap(func: Callable[..., list[dict]]) -> Callable[..., list[dict]]:
        doc = inspect.getdoc(func) or inspect.getdoc(inspect.getmodule(func)) or ""
        summary = doc.strip().splitlines()[0] if doc.strip() else ""
        _REGISTRY[(kind, name)] = MethodInfo(kind, name, func, options, summary, needs_model, source, turns, reads,
                                            cross_row)
        return func

    return wrap


def load_all() -> None:
    """Import every module of the built-in packages, then every plugin entry point (once)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for package in BUILTIN_PACKAGES:
        root = importlib.import_module(package)
        for module in pkgutil.walk_packages(root.__path__, package + "."):
            importlib.import_module(module.name)
    for ep in _plugin_entry_points():
        before = set(_REGISTRY)
        obj = ep.load()
        if callable(obj) and not inspect.ismodule(obj):
            obj()
        dist = getattr(ep, "dist", None)
        label = f"plugin:{dist.name if dist else ep.value}"
        for key in set(_REGISTRY) - before:
            _REGISTRY[key].source = label


def _plugin_entry_points() -> list[Any]:
    from importlib.metadata import entry_points

    return list(entry_points(group=ENTRY_POINT_GROUP))


def _load_method(kind: str, name: str) -> None:
    """Register `kind name` as cheaply as possible: its built-in module by name when no plugin is
    installed (a plugin may override a built-in, so then everything loads, as `load_all` orders it)."""
    if _loaded or (kind, name) in _REGISTRY:
        return
    package = KIND_PACKAGES.get(kind)
    if package and name.isidentifier() and not _plugin_entry_points():
        module = f"{package}.{name}"
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise  # the module exists and lacks a dependency: say so
    if (kind, name) not in _REGISTRY:
        load_all()


# ----- extensions: what a feature package lends the core ------------------------------------------
# The core (CLI, report, card) never imports a method package. What it needs from one (the selection's
# diversity report, the text a row is embedded as) the package registers here under a name, and the core
# asks for it by that name; a plugin may register a name too (the last one loaded wins).
_EXTENSIONS: dict[str, Callable[..., Any]] = {}


def extension(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator that lends `func` to the core under `name` (e.g. "select.report")."""

    def wrap(func: Callable[..., Any]) -> Callable[..., Any]:
        _EXTENSIONS[name] = func
        return func

    return wrap


def extension_of(name: str) -> Callable[..., Any]:
    """The function registered as `name`, after loading the method packages and plugins."""
    load_all()
    try:
        return _EXTENSIONS[name]
    except KeyError:
        raise KeyError(f"no package provides {name!r} (known: {', '.join(sorted(_EXTENSIONS)) or 'none'})") from None


def get(kind: str, name: str) -> MethodInfo:
    _load_method(kind, name)
    try:
        return _REGISTRY[(kind, name)]
    except KeyError:
        known = ", ".join(sorted(n for k, n in _REGISTRY if k == kind)) or "none"
        raise KeyError(f"no {kind} method named {name!r}; known: {known}") from None


def list_methods(kind: str | None = None) -> list[MethodInfo]:
    load_all()
    return sorted(
        (m for (k, _), m in _REGISTRY.items() if kind is None or k == kind), key=lambda m: (m.kind, m.name)
    )


def coerce(value: Any, typ: Any, name: str = "") -> Any:
    """Convert a CLI string to the option's annotated type (int, float, bool, list, optional)."""
    if not isinstance(value, str):
        return value
    text = str(typ)
    if value.lower() in ("none", "null") and ("None" in text or "Optional" in text):
        return None
    try:
        if typ is bool or text.startswith("bool"):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if typ is int or text.startswith("int"):
            return int(value)
        if typ is float or text.startswith("float"):
            return float(value)
        if "list" in text or "tuple" in text:
            if value.lstrip().startswith("["):  # a JSON list: items may hold commas
                import json

                parsed = json.loads(value)
                if not isinstance(parsed, list):
                    raise ValueError(value)
                items = [v.strip() if isinstance(v, str) else v for v in parsed]
            else:
                items = [v.strip() for v in value.split(",") if v.strip()]
            if "int" in text:
                return [int(v) for v in items]
            if "float" in text:
                return [float(v) for v in items]
            return items
        if "dict" in text:
            import json

            return json.loads(value)
    except ValueError:
        hint = " (a list: a,b,c or a JSON list)" if "list" in text or "tuple" in text else ""
        raise ValueError(f"option {name}: cannot read {value!r} as {text}{hint}") from None
    return value


def _type_hints(cls: type) -> dict[str, Any]:
    import typing

    try:
        return typing.get_type_hints(cls)
    except Exception:
        return {f.name: f.type for f in dataclasses.fields(cls)}
