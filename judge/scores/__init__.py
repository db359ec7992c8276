"""Scores from local models (IFD, perplexity, reward, ...): they sit beside the LLM judges."""

from . import ifd

__all__ = ["ifd"]
