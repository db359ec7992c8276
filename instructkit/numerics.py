"""Rounding-error bounds for float32 arithmetic: how far a computed sum may be from the exact one.

Used where results must match a reference to within what rounding allows, not to a number one machine
happened to pass: k-center's exact-tie refinement, and the tests' tolerances for span scores.
"""

from __future__ import annotations

FP32_UNIT_ROUNDOFF = 2.0**-24


def gamma(terms: int, unit_roundoff: float = FP32_UNIT_ROUNDOFF) -> float:
    """Higham's gamma_n = n*u/(1 - n*u): the relative error bound of a sum of n terms computed with unit
    roundoff u, in any order. Infinite once n*u reaches 1/2, where the bound stops being useful."""
    nu = terms * unit_roundoff
    return nu / (1 - nu) if nu < 0.5 else float("inf")


def fp32_tolerance(terms: int, scale: float) -> float:
    """How far two fp32 evaluations of the same quantity may differ when only the order of their sums
    differs (padding, batching, another kernel or CPU): gamma(`terms`) times the magnitude `scale` of what
    is summed, for each of the two results. For a transformer's log-probability, `terms` is the longest
    accumulation (hidden size plus sequence length: the head's dot product and attention over the
    positions) and `scale` the largest |logit|."""
    return 2 * gamma(terms) * max(scale, 1.0)
