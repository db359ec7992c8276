"""Scores from local models (IFD, perplexity, reward, ...): they sit beside the LLM judges."""

from . import ifd, perplexity, reward

__all__ = ["ifd", "perplexity", "reward"]
