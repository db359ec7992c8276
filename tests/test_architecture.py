"""The architecture's rules, read from the source (ast) where they can be: no class in models/ over 300
lines, methods reach models only through `LLM` capabilities (one door), no import circle, no method
family importing another (what families share lives in instructkit/shared/); and the request walk from
the CLI down to a backend, traced on a real run."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# ----- class sizes ------------------------------------------------------------------------------
MODELS = ROOT / "instructkit" / "models"
MAX_CLASS_LINES = 300


def class_sizes(root: Path) -> dict[str, int]:
    """Lines of every class (its `class` line to its last line, decorators left out) under `root`."""
    sizes = {}
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                sizes[f"{path.relative_to(root.parent)}:{node.name}"] = node.end_lineno - node.lineno + 1
    return sizes


def test_class_sizes_count_the_whole_body() -> None:
    sizes = class_sizes(MODELS)
    assert sizes["models/llm.py:LLM"] > 100  # the facade is found and measured, nested code included
    assert all(size >= 2 for size in sizes.values())


def test_no_model_class_over_300_lines() -> None:
    big = {name: size for name, size in class_sizes(MODELS).items() if size > MAX_CLASS_LINES}
    assert not big, f"classes in instructkit/models/ over {MAX_CLASS_LINES} lines: {big}"


# ----- one door: methods reach models only through `LLM` capabilities ---------------------------------
METHOD_FAMILIES = ("judge", "generators", "scorers", "selection", "instructkit/shared")  # and what they share
# The public model API for methods (docs/DEVELOPING.md, "One door"): module -> the names a method may
# import from it (None: any). Everything else under instructkit.models (local engines and their
# loaders, HTTP backends, litellm, classifier and encoder backends) is the model layer's own.
PUBLIC_MODEL_API: dict[str, frozenset[str] | None] = {
    "instructkit.models": None,  # its __all__: LLM, Completion, GenParams, the protocols, extract_json, ...
    "instructkit.models.types": None,  # data types and capability protocols
    "instructkit.models.logprobs": None,  # reading scores off log-probabilities
    "instructkit.models.llm": frozenset({"LLM", "is_placeholder", "extract_json", "to_messages"}),
    "instructkit.models.embeddings": frozenset({"embedder", "CAUSAL_POOLINGS", "split_pooling"}),  # an LLM, specs
    "instructkit.models.classifier": frozenset({"classifier"}),  # an LLM over a classifier folder
    "instructkit.models.local_files": frozenset({"minilm_path", "set_offline"}),  # where shipped weights lie
}
PROBES = frozenset({"is_local", "backend"})  # asking what a model is instead of what it can do


def _method_modules() -> list[Path]:
    return sorted(p for family in METHOD_FAMILIES for p in (ROOT / family).rglob("*.py"))


def _absolute(path: Path, node: ast.ImportFrom) -> str:
    """The module an ImportFrom names, relative ones resolved (a family folder installs as instructkit.<family>)."""
    if not node.level:
        return node.module or ""
    folders = list(path.relative_to(ROOT).parts[:-1])
    package = folders if folders[:1] == ["instructkit"] else ["instructkit", *folders]
    base = package[: len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _door_violations(path: Path, source: str) -> list[str]:
    """What in one method module's source goes past the model door: imports of instructkit.models.*
    outside `PUBLIC_MODEL_API`, and `is_local` / `.backend` reads."""
    from instructkit import models

    public = {**PUBLIC_MODEL_API, "instructkit.models": frozenset(models.__all__)}
    rel = path.relative_to(ROOT)
    bad = []
    for node in ast.walk(ast.parse(source, str(path))):
        found: list[tuple[str, str]] = []
        if isinstance(node, ast.Import):
            found = [(a.name, "*") for a in node.names if a.name.startswith("instructkit.models")]
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(path, node)
            if module == "instructkit":
                found = [("instructkit.models", "*") for a in node.names if a.name == "models"]
            elif module.startswith("instructkit.models"):
                found = [(module, a.name) for a in node.names]
        elif isinstance(node, ast.Attribute) and node.attr in PROBES:
            bad.append(f"{rel}:{node.lineno} reads .{node.attr}")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr")
              and len(node.args) > 1 and isinstance(node.args[1], ast.Constant) and node.args[1].value in PROBES):
            bad.append(f"{rel}:{node.lineno} reads .{node.args[1].value}")
        for module, name in found:
            if module not in public:
                bad.append(f"{rel}:{node.lineno} imports {module}")
            elif public[module] is not None and name not in public[module]:
                bad.append(f"{rel}:{node.lineno} imports {name} from {module}")
    return bad


def test_methods_reach_models_only_through_the_public_model_api():
    """No method module imports a backend, an engine or a loader, nor asks a model what it is
    (`is_local`, `.backend`): it asks `LLM` what it can do (`supports`, capabilities)."""
    modules = _method_modules()
    bad = [v for path in modules for v in _door_violations(path, path.read_text())]
    assert not bad, "methods past the model door:\n" + "\n".join(bad)
    assert len(modules) > 30  # the rule read the families, not an empty folder


def test_the_model_door_check_catches_each_way_past_it():
    """The rule can fail: each forbidden form, written in a scorer module, is reported; the public
    API is not."""
    where = ROOT / "scorers" / "example.py"
    forbidden = [
        "from instructkit.models.local import load_local_backend",
        "from ..models.local.llamacpp import LlamaCppBackend",  # relative: instructkit.scorers -> instructkit.models
        "from instructkit.models.classifier import load_classifier",
        "from instructkit.models.embeddings import load_encoder",
        "import instructkit.models.http_openai",
        "from instructkit import models",
        "from instructkit.models import LocalBackend",
        "ok = llm.is_local",
        "tok = llm.backend.tokenizer",
        'local = getattr(llm, "is_local", False)',
    ]
    for source in forbidden:
        assert len(_door_violations(where, source)) == 1, source
    shared = ROOT / "instructkit" / "shared" / "example.py"  # instructkit.shared: `..` is instructkit
    assert len(_door_violations(shared, "from ..models.local import LocalBackend")) == 1
    allowed = "from instructkit.models import LLM, GenParams\nfrom instructkit.models.embeddings import embedder\n"
    assert _door_violations(where, allowed + "llm.supports('span_scores')\n") == []


# ----- import circles and families --------------------------------------------------------------
# Folder -> installed package (pyproject's package-dir).
PACKAGES = {
    "instructkit": "instructkit",
    "judge": "instructkit.judge",
    "generators": "instructkit.generators",
    "scorers": "instructkit.scorers",
    "selection": "instructkit.selection",
    "prompts": "instructkit.prompts",
}
FAMILIES = ("judge", "generators", "scorers", "selection")


def package_modules() -> dict[str, Path]:
    """Every module of the installed package, by dotted name."""
    out = {}
    for folder, package in PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([package, *parts])] = path
    return out


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules `name` imports, at any depth (lazy imports in functions count too); a
    package's own parents are left out (importing `a.b` runs `a/__init__` first, which is no circle)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else (package if node.level else "")
            module = ".".join(p for p in (base, node.module or "") if p)
            targets = [module, *(f"{module}.{alias.name}" for alias in node.names)]
        for target in targets:
            while target and target not in modules:
                target = target.rsplit(".", 1)[0] if "." in target else ""
            if target and target != name and not name.startswith(target + "."):
                out.add(target)
    return out


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return circles


def test_the_circle_finder_finds_a_circle() -> None:
    # The rule below is only as good as this finder: a -> b -> c -> a is one circle, d stands apart.
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert import_circles(graph) == [["a", "b", "c"]]
    assert import_circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_in_the_package() -> None:
    modules = package_modules()
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    assert len(graph) > 100  # the whole package was read
    assert import_circles(graph) == []


@pytest.mark.parametrize("family", FAMILIES)
def test_no_family_imports_another(family: str) -> None:
    modules = package_modules()
    others = tuple(PACKAGES[f] for f in FAMILIES if f != family)
    bad = {
        name: sorted(m for m in imports_of(name, path, modules) if m.startswith(others))
        for name, path in modules.items()
        if name.startswith(PACKAGES[family])
    }
    assert {k: v for k, v in bad.items() if v} == {}


BACKEND_FILES = ("instructkit/models/http_", "instructkit/models/local/", "instructkit/models/litellm_backend.py")


def walk_of(argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The stays of the first request `instructkit judge alpagasus ... ARGV` sends down to a backend."""
    from instructkit.cli import main

    from walk import record_walk, stays

    monkeypatch.setenv("INSTRUCTKIT_RESPONSE_CACHE_DIR", str(tmp_path / "responses"))  # a real call, not a hit
    rows = tmp_path / "in.jsonl"
    rows.write_text('{"instruction": "Name a colour.", "output": "Blue."}\n')
    with record_walk(lambda f: f.startswith(BACKEND_FILES)) as chains:
        code = main(["judge", "alpagasus", str(rows), *argv, "-o", "max_tokens", "4",
                     "--out", str(tmp_path / "out.jsonl"), "--quiet"])
    assert code == 0 and chains, "no request reached a backend"
    return stays(chains[0])


def check_walk(walk: list[str]) -> None:
    print("\n".join(walk))
    assert walk[0] == "instructkit/cli.py" and walk[-1].startswith(BACKEND_FILES)
    assert len(walk) == len(set(walk)), f"a file is visited twice on the way down: {walk}"
    assert len(walk) <= 10, walk


def test_the_walk_finder_sees_a_revisit(tmp_path: Path) -> None:
    # A request that bounces (a -> b -> a) is one the check refuses.
    with pytest.raises(AssertionError, match="visited twice"):
        check_walk(["instructkit/cli.py", "judge/alpagasus.py", "instructkit/run/runner.py", "judge/alpagasus.py",
                    "instructkit/models/http_openai.py"])


def test_the_walk_from_the_cli_to_a_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, llama_server: str) -> None:
    check_walk(walk_of(["-m", "smollm2", "--api-base", llama_server], tmp_path, monkeypatch))


def test_the_walk_from_the_cli_to_the_local_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    check_walk(walk_of(["-m", "local"], tmp_path, monkeypatch))
