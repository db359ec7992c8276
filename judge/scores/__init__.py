"""Scores from local models (IFD, perplexity, reward, ...): they sit beside the LLM judges."""

from . import ifd, iqs, nuggets, perplexity, reward, uncertainty

__all__ = ["ifd", "iqs", "nuggets", "perplexity", "reward", "uncertainty"]
