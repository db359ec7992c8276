"""What a model spec names, and the registry of backends that build it.

`parse_spec` resolves a spec string (`local`, `hf:PATH`, `MODEL@URL`, `provider/model`, or the name of
a registered backend) to a `ModelRef`; `ModelRef.backend` names the registry entry whose factory
builds the backend. Adding a backend means implementing its protocols (`models/types.py`) and
registering a factory, as the `llm` CLI's `register_models` does:

    register_backend("echo", lambda ref, settings: EchoBackend(ref.model), prices=(1e-6, 2e-6))
    LLM("echo/any-name")   # or -m echo/any-name on the command line

The built-ins (`builtin_backends.py`: local engines, the OpenAI-compatible HTTP client, named hosted
providers, litellm) register the same way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..credentials import split_credentials
from .cache import public_endpoint
from .providers import FAST, LITELLM, Route, litellm_reason, route
from .types import ModelBackend

BUILTIN = ("local", "openai-compatible", "hosted", "litellm")  # chosen by parse_spec's own rules


@dataclass
class ModelRef:
    """What a spec string resolved to."""

    family: str  # "openai-compatible" | "litellm" | "local" | a registered backend's name
    model: str
    api_base: str | None = None
    via: str = "http"  # for openai-compatible: "http" (fast path) or "litellm"
    options: dict[str, Any] = field(default_factory=dict)
    path: str = "local"  # what sends it: "local" | providers.FAST | providers.LITELLM | a registered name
    why: str = "in process"  # why that path (`models check`, the run summary)
    route: Route | None = None  # a named hosted provider's (providers.py)
    backend: str = "local"  # the registry entry that builds it


@dataclass(frozen=True)
class BackendSettings:
    """What a factory gets besides the spec: the explicit key (`--key`, a URL's credentials; a factory
    reads the environment itself, never handing one provider's key to another), the request timeout
    and a local engine's options (dtype, device, engine, threads, ...)."""

    api_key: str | None = None
    timeout: float = 600.0
    local: dict[str, Any] = field(default_factory=dict)


Factory = Callable[[ModelRef, BackendSettings], ModelBackend]


@dataclass(frozen=True)
class BackendEntry:
    """One registered backend. `prices`: dollars per (prompt, reply) token (None: the price map of
    `pricing.py` by the model's name, free where it lists none). `in_process`: a local model (free,
    bounded by a semaphore rather than a provider's limits, computed even in a dry run where free).
    `identity`: the cache identity without building the backend (None: family, model and endpoint).
    `supports_n`: what a dry run assumes before the backend is built."""

    name: str
    factory: Factory
    prices: tuple[float, float] | None = None
    in_process: bool = False
    identity: Callable[[ModelRef, BackendSettings], dict[str, Any]] | None = None
    supports_n: bool = True


_REGISTRY: dict[str, BackendEntry] = {}


def register_backend(name: str, factory: Factory, *, prices: tuple[float, float] | None = None,
                     in_process: bool = False, identity: Callable[[ModelRef, BackendSettings], dict[str, Any]] | None
                     = None, supports_n: bool = True) -> BackendEntry:  # fmt: skip
    """Register `factory` for specs `NAME`, `NAME/model` and `NAME:model` (a later registration of the
    same name replaces the earlier one)."""
    if not name or any(c in name for c in "/:@ "):
        raise ValueError(f"a backend name is one word without '/', ':', '@' or spaces, not {name!r}")
    entry = BackendEntry(name, factory, prices, in_process, identity, supports_n)
    _REGISTRY[name] = entry
    return entry


def unregister_backend(name: str) -> None:
    """Forget a registered backend (tests); the built-ins cannot be removed."""
    if name in BUILTIN:
        raise ValueError(f"{name} is built in")
    _REGISTRY.pop(name, None)


def backend_entry(name: str) -> BackendEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"no backend registered as {name!r} (known: {', '.join(sorted(_REGISTRY))})") from None


def _registered(spec: str) -> str | None:
    """The registered (not built-in) backend a spec names by its first word, else None."""
    for sep in ("/", ":"):
        head = spec.partition(sep)[0]
        if head in _REGISTRY and head not in BUILTIN:
            return head
    return None


def parse_spec(spec: str, api_base: str | None = None, via: str | None = None) -> ModelRef:
    """Resolve a model spec: `local`, `hf:PATH`, a registered backend's `NAME[/model]`, `MODEL@URL`,
    `provider/model` (a named provider of providers.py on its fast path, else litellm)."""
    spec = spec.strip()
    if spec == "local" or spec.startswith("local:") or spec.startswith("hf:"):
        return ModelRef("local", spec)
    if (name := _registered(spec)) is not None:
        return ModelRef(name, spec, api_base.rstrip("/") if api_base else None, path=name, why=f"registered backend {name}",
                        backend=name)  # fmt: skip
    if "@http" in spec:
        spec, api_base = spec.split("@", 1)
        why = "MODEL@URL"
    else:
        why = "--api-base"
    if api_base:
        model = spec.removeprefix("openai/")
        fast = (via or "http") == "http"
        return ModelRef("openai-compatible", model, api_base.rstrip("/"), via or "http", path=FAST if fast else LITELLM,
                        why=f"{why}: OpenAI-compatible server" if fast else "--via litellm",
                        backend="openai-compatible" if fast else "litellm")  # fmt: skip
    found = route(spec, via)
    if found is None:
        return ModelRef("litellm", spec, None, "litellm", path=LITELLM, why=litellm_reason(spec), backend="litellm")
    # The family stays "litellm" (a provider/model spec) on both paths, so cache keys do not depend on the path.
    return ModelRef("litellm", spec, found.api_base or None, "http" if found.path == FAST else "litellm",
                    path=found.path, why=found.why, route=found, backend="hosted")  # fmt: skip


def resolve(spec: str, api_base: str | None = None, via: str | None = None) -> tuple[ModelRef, str | None]:
    """`parse_spec`, with any key inside the URL taken out: (the ref, that key). A key inside the URL
    goes into the Authorization header, never into a log or a file; a named provider's URL (from
    OPENAI_BASE_URL & co.) is what its backend calls, so it is stripped too."""
    ref = parse_spec(spec, api_base, via)
    ref.api_base, url_key = split_credentials(ref.api_base)
    if ref.route is not None and ref.route.api_base:
        route_base, route_key = split_credentials(ref.route.api_base)
        ref.route = dataclasses.replace(ref.route, api_base=route_base)
        url_key = url_key or route_key
    return ref, url_key


def identity_of(ref: ModelRef, settings: BackendSettings) -> dict[str, Any]:
    """What identifies a model in cache keys, without building its backend: its entry's own rule, else
    family, model and public endpoint (none for a named provider at its documented URL, as before it had
    a fast path). Never a key or a credential."""
    entry = backend_entry(ref.backend)
    if entry.identity is not None:
        return entry.identity(ref, settings)
    endpoint = None if ref.route and ref.route.default_base else public_endpoint(ref.api_base)
    return {"family": ref.family, "model": ref.model, "endpoint": endpoint}
