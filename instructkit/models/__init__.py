"""Model interface: one `LLM` facade over litellm, OpenAI-compatible servers and local transformers."""

from .llm import LLM, BudgetExceeded, CallStats, DryRunSkip, ModelRef, extract_json, parse_spec, to_messages
from .types import Completion, GenParams, ModelCallError, SpanScore, TokenLogprob, TransientError, Usage

__all__ = [
    "LLM",
    "BudgetExceeded",
    "CallStats",
    "Completion",
    "DryRunSkip",
    "GenParams",
    "ModelCallError",
    "ModelRef",
    "SpanScore",
    "TokenLogprob",
    "TransientError",
    "Usage",
    "extract_json",
    "parse_spec",
    "to_messages",
]
