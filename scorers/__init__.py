"""Scores from local models (IFD, perplexity, reward, ...): they sit beside the LLM judges.

Each module registers its method when imported (through `instructkit.registry`, on demand)."""
