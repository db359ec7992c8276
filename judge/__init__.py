"""LLM judges: AlpaGasus, InsTag, DEITA, rubric, pairwise, jury and judge meta-evaluation."""

from . import alpagasus, deita, instag, jury, meta_eval, pairwise, rubric, scores  # noqa: F401
