"""The share of fixations on the map's most salient pixels (Judd et al. 2009)."""

from __future__ import annotations

import math
from typing import ClassVar

import torch

from gazebench.metrics.base import Metric
from gazebench.metrics.ops import check_shapes, finite_non_constant, nan_where_invalid, working_dtype


class FixationsInTop(Metric):
    """Share of the fixations that fall on the top ``area`` fraction of the map's pixels.

    Judd, Ehinger, Durand and Torralba, "Learning to predict where humans look" (ICCV 2009),
    report the percentage of human fixations inside the top 5-30 % most salient pixels; the
    default is their 20 %.  The region is every pixel whose value is at least the k-th largest,
    k = ceil(area * H * W) (ties at the threshold included); fixations count with their
    multiplicity.  A random map scores ``area`` on average.  NaN for a constant map (the region
    would be the whole image), non-finite pixels or counts, or no fixations.
    """

    name = "fixations_in_top"
    needs = ("fixations",)
    higher_is_better = True
    value_range = (0.0, 1.0)
    default_settings: ClassVar[dict] = {"area": 0.2}

    def __init__(self, **settings):
        super().__init__(**settings)
        if not 0 < self.settings["area"] <= 1:
            raise ValueError(f"{self.name}: area must be in (0, 1], got {self.settings['area']!r}")

    def compute(self, maps, targets):
        check_shapes(maps, targets.fixations)
        flat = maps.flatten(1).to(working_dtype(maps.device))  # float64 (float32 on mps)
        counts = targets.fixations.flatten(1).to(flat)
        k = max(1, math.ceil(self.settings["area"] * flat.shape[1]))
        threshold = flat.nan_to_num(nan=-math.inf).topk(k, dim=1).values[:, -1:]
        total = counts.sum(dim=1)
        values = (counts * (flat >= threshold)).sum(dim=1) / total
        valid = finite_non_constant(flat.amin(dim=1), flat.amax(dim=1)) & torch.isfinite(total) & (total > 0)
        return nan_where_invalid(values, valid, maps)
