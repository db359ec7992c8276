"""Selectors: plain functions on arrays returning np.int64 indices, and registered `select` methods.

Importing the package registers: threshold, topk, ratio, random, deita, car, kcenter, instag, cherry,
mods, dq, dedup, lift_variety, instructiongpt4, diverseevol. `embed.embed_records` writes the vectors; `report`
computes diversity metrics. Both lend the core what it shows of a selection (`registry.extension`: select.report,
embed.texts, ...).
"""

from instructkit.shared.clustering import cherry_pre_select, middle_confidence_sample

from . import (  # noqa: F401 (registration)
    basic,
    car,
    cherry,
    dedup,
    deita,
    diverseevol,
    dq,
    embed,
    instag,
    instructiongpt4,
    kcenter,
    lift_variety,
    mods,
    report,
)
from .basic import random_select, ratio_select, threshold_select, topk_select
from .car import car_clusters, car_combine, car_select
from .dedup import embedding_dedup, exact_dedup, minhash_dedup, rouge_dedup
from .deita import deita_select, greedy_similarity_filter
from .dq import dq_bins, dq_select, graphcut_greedy
from .instag import instag_select
from .kcenter import kcenter_greedy
from .lift_variety import pca_row_variance, variety_select
from .mods import mods_necessity, mods_seeds, mods_select

__all__ = [
    "car_clusters",
    "car_combine",
    "car_select",
    "cherry_pre_select",
    "deita_select",
    "dq_bins",
    "dq_select",
    "embedding_dedup",
    "exact_dedup",
    "graphcut_greedy",
    "greedy_similarity_filter",
    "instag_select",
    "kcenter_greedy",
    "middle_confidence_sample",
    "minhash_dedup",
    "mods_necessity",
    "mods_seeds",
    "mods_select",
    "pca_row_variance",
    "random_select",
    "ratio_select",
    "rouge_dedup",
    "threshold_select",
    "topk_select",
    "variety_select",
]
