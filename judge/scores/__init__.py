"""Scores from local models (IFD, perplexity, reward, ...): they sit beside the LLM judges."""
