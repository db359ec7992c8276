"""What the method families (judges, generators, scorers, selectors) share, so that no family imports another:
row helpers and constrained replies (rows), score parsing (scores), clustering pieces (clustering,
sklearn_legacy)."""
