"""Model interface: one `LLM` facade over litellm, OpenAI-compatible servers and local models, and the
backend protocols (`models/types.py`) a backend implements."""

from .llm import LLM, BudgetExceeded, CallStats, DryRunSkip, ModelRef, extract_json, parse_spec, to_messages
from .types import (
    Backend,
    ClassifierBackend,
    Completion,
    CompletionBackend,
    EmbeddingBackend,
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
    "BudgetExceeded",
    "CallStats",
    "ClassifierBackend",
    "Completion",
    "CompletionBackend",
    "DryRunSkip",
    "EmbeddingBackend",
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
    "to_messages",
]
