"""The pipeline file's schema, checked before anything runs: a shared pipeline file is untrusted input.

Every key at every level must be one the pipeline knows (a misspelt `optoins:` is refused, not run on
defaults), every value of the expected type, step names unique, and each `input:` an earlier step or
an existing file or folder. Errors name the file, the line, the key and the nearest valid name.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from ..data.io import InputError, decoded_text

KINDS = ("generate", "judge", "score", "select")
OTHER_KINDS = ("concat", "export", "train")
TOP_KEYS = {"name": str, "description": str, "model": str, "out": str, "seed": int, "model_options": dict,
            "steps": list}
STEP_KEYS = {"name": str, **dict.fromkeys(KINDS, str), "concat": list, "export": str, "train": str, "input": str, "model": str,
             "options": dict, "model_options": dict, "batch": bool, "batch_poll": (int, float), "engine": str,
             "ray": dict, "allow_empty": bool}
RAY_KEYS = {"actors": int, "num_gpus": (int, float), "num_cpus": (int, float), "batch_size": int}
TYPE_NAMES = {str: "text", int: "an integer", bool: "true or false", dict: "a mapping", list: "a list",
              (int, float): "a number"}


def load_pipeline_yaml(path: Path) -> dict[str, Any]:
    """The pipeline file's settings, checked against the schema (InputError: file, line, key)."""
    import yaml

    text = decoded_text(path)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise InputError(path, f"not valid YAML for a pipeline ({problem})",
                         line=mark.line + 1 if mark is not None else None) from None
    except RecursionError:
        raise InputError(path, "not valid YAML for a pipeline (nested too deeply)") from None
    if data is None:
        raise InputError(path, "is empty: a pipeline needs `steps`")
    checker = _Checker(path)
    checker.mapping(data, node, TOP_KEYS, "the pipeline")
    steps = data.get("steps")
    if not steps:
        raise InputError(path, "no steps: give `steps:` a list of steps", line=checker.line(node, "steps"), field="steps")
    step_nodes = checker.child(node, "steps")
    names: dict[str, int] = {}
    for i, raw in enumerate(steps):
        item = step_nodes.value[i] if isinstance(getattr(step_nodes, "value", None), list) else None
        if not isinstance(raw, dict):
            raise InputError(path, f"step {i + 1}: expected a mapping such as {{name: rated, judge: alpagasus}}, "
                                   f"got {_kind(raw)}", line=_line(item))
        label = f"step {raw['name']}" if isinstance(raw.get("name"), str) else f"step {i + 1}"
        checker.mapping(raw, item, STEP_KEYS, label)
        kinds = [k for k in (*KINDS, *OTHER_KINDS) if k in raw]
        if len(kinds) != 1:
            raise InputError(path, f"step {i + 1}: give exactly one of {', '.join((*KINDS, *OTHER_KINDS))}",
                             line=_line(item))
        kind = kinds[0]
        if kind == "concat" and not all(isinstance(n, str) for n in raw["concat"]):
            raise InputError(path, f"step {i + 1}: concat takes a list of step names", line=checker.line(item, kind),
                             field=kind)
        name = str(raw.get("name") or (raw[kind] if kind != "concat" else f"concat{i + 1}"))
        if name in names:
            raise InputError(path, f"step {i + 1}: the name {name!r} is already step {names[name]}'s; step names "
                                   "are unique (give `name:`)", line=checker.line(item, "name") or _line(item), field="name")
        sources = raw["concat"] if kind == "concat" else [str(raw["input"])] if raw.get("input") is not None else []
        for source in sources:
            is_path = kind != "concat" and (Path(source).exists() or (path.parent / source).exists())
            if source not in names and not is_path:
                later = [s.get("name") for s in steps[i:] if isinstance(s, dict)]
                why = ("is this step itself" if source == name else "is a later step: a step reads only earlier ones"
                       if source in later else "is neither an earlier step nor an existing file or folder")
                near = _nearest(source, list(names))
                raise InputError(path, f"step {name}: input {source!r} {why}"
                                       + (f"; did you mean {near!r}?" if near else ""),
                                 line=checker.line(item, "concat" if kind == "concat" else "input"), field="input")
        names[name] = i + 1
        if isinstance(raw.get("ray"), dict):
            checker.mapping(raw["ray"], checker.child(item, "ray"), RAY_KEYS, f"step {name}: ray")
    return data


def option_line(path: Path, step_index: int, key: str) -> int | None:
    """The line of step `step_index`'s `key` (options, model_options), for errors found later."""
    import yaml

    try:
        node = yaml.compose(decoded_text(path), Loader=yaml.SafeLoader)
        checker = _Checker(path)
        steps = checker.child(node, "steps")
        item = steps.value[step_index] if steps is not None else None
        return checker.line(item, key) or _line(item)
    except Exception:  # a line is a courtesy: the error is raised without one
        return None


class _Checker:
    def __init__(self, path: Path):
        self.path = path

    def _pair(self, node: Any, key: str) -> tuple[Any, Any] | None:
        pairs = getattr(node, "value", None)
        for pair in pairs if isinstance(pairs, list) else []:
            if isinstance(pair, tuple) and getattr(pair[0], "value", None) == key:
                return pair
        return None

    def child(self, node: Any, key: str) -> Any:
        pair = self._pair(node, key)
        return pair[1] if pair else None

    def line(self, node: Any, key: str) -> int | None:
        pair = self._pair(node, key)
        return _line(pair[0]) if pair else None

    def mapping(self, data: Any, node: Any, schema: dict[str, Any], where: str) -> None:
        if not isinstance(data, dict):
            raise InputError(self.path, f"{where}: expected a mapping, got {_kind(data)}", line=_line(node))
        for key, value in data.items():
            line = self.line(node, str(key)) or _line(node)
            if not isinstance(key, str) or key not in schema:
                near = _nearest(str(key), list(schema))
                raise InputError(self.path, f"{where}: unknown key {key!r}"
                                            + (f"; did you mean {near!r}?" if near else "")
                                            + f" (known: {', '.join(sorted(schema))})", line=line, field=str(key))
            want = schema[key]
            if value is None and key not in ("steps",):
                continue
            if not _is(value, want):
                raise InputError(self.path, f"{where}: {key} must be {TYPE_NAMES.get(want, want)}, got {_kind(value)}",
                                 line=line, field=key)
        if "model_options" in data and isinstance(data["model_options"], dict):
            from ..models.config import OPTION_NAMES

            sub = self.child(node, "model_options")
            for key in data["model_options"]:
                if key not in OPTION_NAMES:
                    near = _nearest(str(key), list(OPTION_NAMES))
                    raise InputError(self.path, f"{where}: model_options: unknown model option {key!r}"
                                                + (f"; did you mean {near!r}?" if near else "")
                                                + f" (known: {', '.join(OPTION_NAMES)})",
                                     line=self.line(sub, str(key)) or _line(sub), field=str(key))


def _is(value: Any, want: Any) -> bool:
    if want is bool:
        return isinstance(value, bool)
    if isinstance(value, bool) and want is not str:
        return False
    if want is str:
        return isinstance(value, (str, int, float)) and not isinstance(value, bool)  # `name: 2024` is a name
    return isinstance(value, want)


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "text", bool: "true/false", type(None): "nothing"}.get(
        type(value), type(value).__name__)


def _line(node: Any) -> int | None:
    mark = getattr(node, "start_mark", None)
    return mark.line + 1 if mark is not None else None


def _nearest(name: str, known: list[str]) -> str | None:
    match = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return match[0] if match else None
