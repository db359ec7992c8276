"""Architecture rules the layout must keep, checked on the source (no model loaded)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

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
