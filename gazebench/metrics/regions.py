"""Region shares of saliency maps, in the scoring loop (Kim, Zhou, Lipton; REFERENCES.md section 2).

``region_shares`` (batched torch): the share of each map's total mass inside each anatomical
region, ``sum(map * region) / sum(map)``.  The run stores them per (batch, method); the post-run
analysis (z-scores, most salient region, agreement with gaze) is ``gazebench.aggregate.regions``.
"""

from __future__ import annotations

import math

import torch

from gazebench.metrics.ops import check_shapes, flat_maps, is_distribution, row_dot, working_dtype


def region_shares(maps: torch.Tensor, regions: dict[str, torch.Tensor]) -> tuple[torch.Tensor, list[str]]:
    """Share of each map's mass inside each region -> (shares ``[B, R]``, region names).

    Columns follow ``sorted(regions)`` (the names returned).  share = sum(map * region) /
    sum(map), no epsilon, in float64 on the maps' device (float32 on ``mps``).  Regions may
    overlap (the EGD masks do) and need not cover the image, so a row need not sum to 1.  NaN
    for a whole row when the map has a negative or non-finite pixel or sums to zero (saliency
    maps are non-negative after gazebench's post-processing; a gaze density without fixations
    is all zero); NaN for one cell when that region is empty in that row.
    """
    names = sorted(regions)
    dtype = working_dtype(maps.device)
    flat = flat_maps(maps, dtype)
    total = flat.sum(dim=1)
    shares = torch.full((flat.shape[0], len(names)), math.nan, dtype=dtype, device=maps.device)
    valid_map = is_distribution(flat, total)
    for column, name in enumerate(names):
        check_shapes(maps, regions[name])
        inside = regions[name].reshape(flat.shape[0], -1) != 0
        share = row_dot(flat, inside.to(dtype)) / total
        shares[:, column] = torch.where(valid_map & inside.any(dim=1), share, shares[:, column])
    return shares, names
