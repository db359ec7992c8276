"""Scores from local models (IFD, perplexity, reward, ...): they sit beside the LLM judges."""

from . import ifd, instruction_mining, iqs, nuggets, perplexity, reward, uncertainty

__all__ = ["ifd", "instruction_mining", "iqs", "nuggets", "perplexity", "reward", "uncertainty"]
