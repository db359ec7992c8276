"""LLM judges: AlpaGasus, InsTag, DEITA, rubric, pairwise, jury, LIFT's five-aspect scores and judge
meta-evaluation.

Each module registers its method when imported; `instructkit.registry` imports the one a run names
(or all of them for a listing), so nothing here imports them eagerly.
"""
