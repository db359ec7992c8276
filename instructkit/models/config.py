"""`ModelConfig`: every model option, listed once (name, type, default, CLI flag, help).

The CLI's model flags are generated from it (`add_model_args`), `instructkit judge ...` builds it
from those flags (`from_args`), a pipeline from its YAML's `model` and `model_options`
(`from_options`), and `LLM(config)` runs on it; `LLM.config` gives it back (without the key), which
is how Ray actors rebuild the driver's model. So a pipeline step and a CLI call with the same options
get the same model. Options follow the `llm` CLI's habits: `-m MODEL`, `--key`, one flag per option.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Any, get_type_hints


def option(default: Any, flag: str, help: str, *, short: str | None = None, choices: tuple[str, ...] | None = None,
           metavar: str | None = None, group: str = "model") -> Any:
    """A model option: its default, its CLI flag and help (and choices, a short flag, its help group)."""
    meta = {"flag": flag, "short": short, "help": help, "choices": choices, "metavar": metavar, "group": group}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class ModelConfig:
    """The options that build one model (`LLM(config)`). Local-model options (group "local model")
    are None where the backend's own default applies; hosted models ignore them."""

    model: str = option("local", "--model", "model spec: local, hf:PATH, provider/model, or MODEL@URL", short="-m")
    api_base: str | None = option(None, "--api-base", "OpenAI-compatible server base URL (e.g. http://127.0.0.1:8000/v1)")
    api_key: str | None = field(default=None, repr=False, metadata={
        "flag": "--key", "help": "API key (never written). Omitted: a provider's variable (OPENAI_API_KEY) goes only to that "
                "provider's own host; a custom --api-base gets a key from its URL (user:KEY@host) or "
                "INSTRUCTKIT_API_KEY",
        "group": "model", "metavar": "KEY"})
    via: str | None = option(None, "--via", "what sends hosted requests: http (default: the fast client, for servers and "
                             "the providers it knows) or litellm", choices=("http", "litellm"))
    concurrency: int = option(32, "--concurrency", "requests in flight (default 32)")
    rpm: float | None = option(None, "--rpm", "requests-per-minute limit")
    tpm: float | None = option(None, "--tpm", "tokens-per-minute limit")
    max_retries: int = option(6, "--max-retries", "retries of a failed call (default 6)")
    retry_length: float = option(0.0, "--retry-length", "ask a reply cut at max_tokens again, once, with "
                                 "max_tokens x FACTOR (e.g. 2)", metavar="FACTOR")
    timeout: float = option(600.0, "--timeout", "seconds per request (default 600)")
    max_cost: float | None = option(None, "--max-cost", "stop cleanly before spending more than this many dollars")
    max_prompt_tokens: int | None = option(None, "--max-prompt-tokens", "refuse a row whose text is longer than "
                                           "this many tokens (about 4 characters each) before any call (default: "
                                           "the model's context length where known, else 131072)", metavar="N")
    dry_run: bool = option(False, "--dry-run", "estimate calls, tokens and cost without calling")
    cache: bool = option(True, "--no-cache", "do not read or write the response cache")
    cache_dir: str | None = option(None, "--cache-dir", "response cache directory (default ~/.cache/instructkit/responses)")
    dtype: str | None = option(None, "--dtype", "local models: weights dtype (default float32)",
                               choices=("float32", "bfloat16"), group="local model")
    device: str | None = option(None, "--device", "local models: torch device for scoring (default cpu)",
                                group="local model")
    threads: int | None = option(None, "--threads", "local models: CPU threads (default: half the cores)",
                                 group="local model")
    engine: str | None = option(None, "--local-engine", "local models: what generates (default auto: llama.cpp "
                                "for a GGUF, transformers for a folder)", choices=("auto", "llama.cpp", "transformers"),
                                group="local model")
    parallel: int | None = option(None, "--parallel", "local models: sequences llama.cpp decodes at once (default 8)",
                                  group="local model")
    n_ctx: int | None = option(None, "--n-ctx", "local models: llama.cpp tokens per sequence (default 2048)",
                               group="local model")
    batch_size: int | None = option(None, "--local-batch-size", "local models: rows per transformers batch (default 16)",
                                    group="local model")

    def replace(self, **changes: Any) -> ModelConfig:
        """A copy with `changes` (option names checked, values converted to the option's type)."""
        return dataclasses.replace(self, **{name: _convert(name, value) for name, value in changes.items()})

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ModelConfig:
        """The config the CLI's model flags (`add_model_args`) describe."""
        return cls(**{f.name: getattr(args, _dest(f)) for f in dataclasses.fields(cls) if hasattr(args, _dest(f))})

    @classmethod
    def from_options(cls, model: str, options: dict[str, Any], where: str = "model_options") -> ModelConfig:
        """The config of a pipeline step: its model spec and its `model_options` (names as the CLI
        flags', `api_key` for `--key`). An unknown name or a value of the wrong type is a ValueError
        naming `where` and the option."""
        try:
            return cls(model=str(model)).replace(**options)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: {exc}") from None

    def public(self) -> dict[str, Any]:
        """Every option but the key (nor one inside a URL), as plain JSON values (manifests, other processes)."""
        from ..credentials import redact_value

        return redact_value({f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "api_key"})

    def local_options(self) -> dict[str, Any]:
        """The local-model options that were set, for the local backend's loader."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.metadata.get("group") == "local model" and getattr(self, f.name) is not None}


OPTION_NAMES = tuple(f.name for f in dataclasses.fields(ModelConfig))
LOCAL_OPTIONS = tuple(f.name for f in dataclasses.fields(ModelConfig) if f.metadata.get("group") == "local model")
# What every model takes besides its spec (endpoint, key, cache, limits, retries, budget, dry run).
COMMON_OPTIONS = tuple(n for n in OPTION_NAMES if n != "model" and n not in LOCAL_OPTIONS)
_TYPES = get_type_hints(ModelConfig)
_FIELDS = {f.name: f for f in dataclasses.fields(ModelConfig)}


def _dest(f: dataclasses.Field) -> str:
    """Where argparse puts an option's flag: its name, but `--local-engine` in args.local_engine
    (args.engine is the execution engine, local or ray)."""
    return "local_engine" if f.name == "engine" else f.name


def _base_type(name: str) -> type:
    """int, float, str or bool: the option's type without `| None`."""
    hint = _TYPES[name]
    return next(t for t in getattr(hint, "__args__", (hint,)) if t is not type(None))


def _convert(name: str, value: Any) -> Any:
    if name not in _FIELDS:
        raise ValueError(f"unknown model option {name!r} (known: {', '.join(OPTION_NAMES)})")
    if value is None:
        return None
    kind = _base_type(name)
    if kind is bool:
        if not isinstance(value, bool):
            raise ValueError(f"model option {name}: expected true or false, got {value!r}")
        return value
    try:
        converted = kind(value)
    except (TypeError, ValueError):
        converted = None
    if converted is None or isinstance(value, bool) or (kind is int and converted != float(value)):
        raise ValueError(f"model option {name}: expected {kind.__name__}, got {value!r}")
    choices = _FIELDS[name].metadata.get("choices")
    if choices and converted not in choices:
        raise ValueError(f"model option {name}: one of {', '.join(choices)}, not {value!r}")
    return converted


def add_model_args(parser: argparse.ArgumentParser, only: tuple[str, ...] | None = None) -> None:
    """One flag per `ModelConfig` option (or per option in `only`), in its help group."""
    groups: dict[str, Any] = {}
    for f in dataclasses.fields(ModelConfig):
        if only is not None and f.name not in only:
            continue
        meta = f.metadata
        group = groups.get(meta["group"]) or groups.setdefault(meta["group"], parser.add_argument_group(meta["group"]))
        flags = [meta["short"], meta["flag"]] if meta.get("short") else [meta["flag"]]
        kind = _base_type(f.name)
        if kind is bool:  # a switch away from the default
            group.add_argument(*flags, dest=_dest(f), action="store_false" if f.default else "store_true",
                               help=meta["help"])
            continue
        group.add_argument(*flags, dest=_dest(f), type=kind, default=f.default, choices=meta.get("choices"),
                           metavar=meta.get("metavar"), help=meta["help"])
