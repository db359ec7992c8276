"""Model interface: one `LLM` facade over litellm, OpenAI-compatible servers and local models, the
backend protocols (`models/types.py`) a backend implements, and the registry it is added to
(`register_backend`, `spec.py`)."""

from .llm import LLM, BudgetExceeded, CallStats, DryRunSkip, to_messages
from .spec import BackendSettings, ModelRef, parse_spec, register_backend, unregister_backend
from .structured import extract_json
from .types import (
    Backend,
    ClassifierBackend,
    Completion,
    CompletionBackend,
    EmbeddingBackend,
    GenOptions,
    GenParams,
    ModelBackend,
    ModelCallError,
    ScoringBackend,
    SpanScore,
    TokenCountingBackend,
    TokenLogprob,
    TransientError,
    Usage,
)

__all__ = [
    "LLM",
    "Backend",
    "BackendSettings",
    "BudgetExceeded",
    "CallStats",
    "ClassifierBackend",
    "Completion",
    "CompletionBackend",
    "DryRunSkip",
    "EmbeddingBackend",
    "GenOptions",
    "GenParams",
    "ModelBackend",
    "ModelCallError",
    "ModelRef",
    "ScoringBackend",
    "SpanScore",
    "TokenCountingBackend",
    "TokenLogprob",
    "TransientError",
    "Usage",
    "extract_json",
    "parse_spec",
    "register_backend",
    "to_messages",
    "unregister_backend",
]
