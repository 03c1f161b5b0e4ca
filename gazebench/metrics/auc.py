"""AUC-Judd and shuffled AUC, batched in torch without sorting the maps.

Both are areas under an ROC curve that separates *positive* pixels (fixated) from *negative*
ones, and both reduce to one sum over negative pixels of a *credit* that depends only on where
the pixel's saliency s lies among the map's distinct positive saliency values u_1 < ... < u_K
(weights g_k: how much positive weight sits at u_k).  With j = #{k : u_k <= s}:

- weight of positives above s:  A(j) = W_pos - (g_1 + ... + g_j);
- AUC-Judd credit:   A(j) + g_j / 2           (the trapezoid's interpolation, see ``AUCJudd``);
- shuffled credit:   A(j) + g_j / 2 if u_j == s, else A(j)   (a tie counts one half).

So every pixel needs only its *code* 2 j + [u_j == s], shared by both metrics (they differ only
in the weights g): each then reads its credits from a [K+1, 2] table.  Finding j with
``torch.searchsorted`` costs ~15 ns a pixel, more than the plain threshold loop it replaces.
Instead each map's value range is cut into ``VALUE_BINS`` bins (one affine map and a ceil,
monotone in s, so equal values share a bin): a pixel whose bin holds no positive value has j =
the number of positive values in lower bins, read from a per-bin table; only pixels sharing a
bin with a positive value are compared with it exactly.  The result is exact, ties included; no
jitter, so it is deterministic.  What both metrics then need is, per map, a histogram of the codes
(pixel counts, and the negatives' weight): on CPU tensors one fused kernel makes both in one pass
over the pixels (``cpu_kernels.code_histograms``); elsewhere every pixel's code is computed in
torch and scatter-added.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gazebench.metrics import cpu_kernels
from gazebench.metrics.base import GazeTargets, Metric
from gazebench.metrics.ops import (
    check_shapes,
    finite_non_constant,
    fixation_entries,
    flat_maps,
    memoised,
    nan_where_invalid,
    per_row_sum,
    shared_range,
    working_dtype,
)
from gazebench.registry import METRICS

VALUE_BINS = 4096  # bins of each map's value range; more bins: fewer exact comparisons, bigger tables


@METRICS.register("auc_judd")
class AUCJudd(Metric):
    """AUC-Judd: area under the ROC of fixated vs non-fixated pixels, thresholds at fixated values.

    Fixated pixels are those with ``fixations > 0`` (counts ignored, as in the MIT code).  For
    each threshold t among the saliency values of fixated pixels, TPR(t) = share of fixated
    pixels with S >= t and FPR(t) = share of non-fixated pixels with S >= t (ties go with >=;
    no jitter); the points, sorted, plus (0, 0) and (1, 1) are joined by trapezoids.  That area
    equals the mean over non-fixated pixels of (#fixated above s + #fixated at the highest
    fixated value <= s / 2) / #fixated, which is what is computed (module docstring).  No
    epsilon.  NaN for non-finite pixels, a constant map, no fixations or every pixel fixated.
    """

    name = "auc_judd"
    needs = ("fixations",)
    higher_is_better = True
    value_range = (0.0, 1.0)

    def compute(self, maps, targets):
        check_shapes(maps, targets.fixations)
        saliency = flat_maps(maps, working_dtype(maps.device))
        histograms = shared_histograms(targets, saliency)
        positives = histograms.positives
        pixels_per_code = histograms.pixels.clone()
        pixels_per_code[:, 3::2] -= positives.pixel_counts  # not negatives: the positive pixels of value u_k have code 2 k + 1
        credit = (pixels_per_code * _credit_table(positives, positives.pixel_counts, half_always=True)).sum(dim=1)
        n_fixated = positives.pixel_counts.sum(dim=1)
        n_negatives = saliency.shape[1] - n_fixated
        return nan_where_invalid(credit / (n_fixated * n_negatives), histograms.valid & (n_fixated > 0) & (n_negatives > 0), maps)


@METRICS.register("auc_shuffled")
class AUCShuffled(Metric):
    """Shuffled AUC: P(saliency at a fixation > saliency at another image's fixation), ties 1/2.

    Positives are the image's fixations, weighted by their count; negatives are
    ``targets.negatives``, the fixation counts of the other images of the evaluated set on the
    same grid, also count-weighted, so centre bias shared by all images cancels.  The value is
    the weighted Mann-Whitney statistic, i.e. the trapezoid area of the ROC over every threshold.
    No epsilon, no sampling.  NaN for non-finite pixels or counts, a constant map, no positives
    or no negatives.
    """

    name = "auc_shuffled"
    needs = ("fixations", "negatives")
    higher_is_better = True
    value_range = (0.0, 1.0)

    def compute(self, maps, targets):
        check_shapes(maps, targets.fixations)
        check_shapes(maps, targets.negatives)
        saliency = flat_maps(maps, working_dtype(maps.device))
        histograms = shared_histograms(targets, saliency)
        positives, negatives_per_code, valid = histograms.positives, histograms.negatives, histograms.valid
        credit = (negatives_per_code * _credit_table(positives, positives.fixation_counts, half_always=False)).sum(dim=1)
        positive_total, negative_total = positives.fixation_counts.sum(dim=1), negatives_per_code.sum(dim=1)
        values = credit / (positive_total * negative_total)
        valid = valid & torch.isfinite(positives.all_counts) & (positive_total > 0) & torch.isfinite(negative_total) & (negative_total > 0)
        return nan_where_invalid(values, valid, maps)


@dataclass
class _Positives:
    """Per map, the distinct saliency values at positive pixels (padded rows) and where they are."""

    values: torch.Tensor  # [B, K] ascending, padded with +inf
    pixel_counts: torch.Tensor  # [B, K] how many positive pixels have each value (0 in the padding)
    fixation_counts: torch.Tensor  # [B, K] their fixation counts, summed
    all_counts: torch.Tensor  # [B] sum of every non-zero count (NaN if one is NaN)


@dataclass
class _Histograms:
    """Per map, the positives and, for each code 2 j + tie, how many pixels and how much negative weight have it."""

    positives: _Positives
    valid: torch.Tensor  # [B] bool: the map is finite and not constant
    pixels: torch.Tensor  # [B, 2 (K + 1)] pixels of each code (positive pixels included)
    negatives: torch.Tensor | None  # [B, 2 (K + 1)] total ``negatives`` weight of the pixels of each code


def shared_histograms(targets: GazeTargets, saliency: torch.Tensor) -> _Histograms:
    """The code histograms of the [B, P] maps, memoised for the chunk (positive pixels: ``fixations > 0``).

    When the targets hold ``negatives``, their histogram is made in the same pass.  On CPU
    tensors, one fused kernel (``cpu_kernels.code_histograms``, which reads the negatives in
    their own dtype); elsewhere through every pixel's code (``_codes``).
    """
    return memoised(targets, "auc histograms", (saliency, targets.fixations), lambda: _histograms(targets, saliency))


def _histograms(targets: GazeTargets, saliency: torch.Tensor) -> _Histograms:
    low, high = shared_range(targets, saliency)
    valid = finite_non_constant(low, high)
    positives = _distinct_positives(saliency, fixation_entries(targets.fixations, saliency.dtype, targets), valid)
    negatives = None if targets.negatives is None else targets.negatives.reshape(len(saliency), -1)
    if cpu_kernels.applies(saliency, *([] if negatives is None else [negatives])):
        pixels, weights = cpu_kernels.code_histograms(saliency, low, *bin_scales(low, high, valid), positives.values, negatives, valid, VALUE_BINS)
        return _Histograms(positives, valid, pixels.to(saliency.dtype), None if weights is None else weights.to(saliency.dtype))
    codes = _codes(saliency, low, high, valid, positives)
    ones = torch.ones((), dtype=saliency.dtype, device=saliency.device).expand_as(codes)
    weights = None if negatives is None else _code_histogram(codes, negatives.to(saliency.dtype), positives)
    return _Histograms(positives, valid, _code_histogram(codes, ones, positives), weights)


def _codes(saliency: torch.Tensor, low: torch.Tensor, high: torch.Tensor, valid: torch.Tensor, positives: _Positives) -> torch.Tensor:
    """[B, P] long code 2 j + [u_j == s] of every pixel (module docstring)."""
    bins = value_bins(saliency, low, high, valid)
    positive_bins = value_bins(torch.where(torch.isfinite(positives.values), positives.values, low[:, None]), low, high, valid)  # padding: bin 0
    per_bin = torch.zeros(len(saliency), VALUE_BINS, dtype=torch.long, device=saliency.device)
    per_bin.view(-1).index_add_(0, (_row_offsets(positive_bins, VALUE_BINS) + positive_bins).view(-1), (positives.pixel_counts > 0).long().view(-1))
    below = per_bin.cumsum(dim=1).sub_(per_bin)  # distinct positive values in lower bins: j of a pixel alone in its bin
    bin_codes = torch.where(per_bin > 0, -1, 2 * below)  # -1: bins holding a positive value, resolved below,
    bin_codes[:, 0] = torch.where(per_bin[:, 0] > 0, 3, 0)  # but bin 0 holds only the minimum: its one positive value, tied (j = 1)
    codes = bin_codes.gather(1, bins)
    _resolve_shared_bins(codes, saliency, bins, below, per_bin, positives)
    return codes


def value_bins(saliency: torch.Tensor, low: torch.Tensor, high: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """[B, P] long: 0 for the row's minimum, else ceil((s - min) * (VALUE_BINS - 1.5) / (max - min)).

    (For a range below 1e-300, (s - min) is first multiplied by 2^600, exactly, and the scale
    divided by it: else the scale would overflow.)

    Monotone in s and the same for equal values, which is all exactness needs.  Bin 0 holds
    exactly the minimum (``s - min`` is 0 only for ``s == min``), so that the ties of a plateau at
    the minimum -- the zeros of a ReLU'd map -- are resolved by the tables, not one by one.  The
    other values land in [1, VALUE_BINS - 1] (the 1.5 keeps rounding inside).  0 on invalid rows.
    """
    boost, scale = bin_scales(low, high, valid)
    difference = saliency - low[:, None]
    if bool((boost > 1).any()):
        difference.mul_(boost[:, None])
    bins = difference.mul_(scale[:, None]).ceil_().long()
    tiny_scale = valid & (scale < 1)  # there a product could underflow to 0 although s > min
    if bool(tiny_scale.any()):
        rows = tiny_scale.nonzero().view(-1)
        bins[rows] = torch.where(saliency[rows] > low[rows, None], bins[rows].clamp(min=1), 0)
    if not bool(valid.all()):
        bins[~valid] = 0  # NaN / inf rows
    return bins


def bin_scales(low: torch.Tensor, high: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[B] (boost, scale) of each map's value bins: bin = ceil((s - min) * boost * scale).

    ``boost`` is 1, or 2^600 for a range below 1e-300 (multiplying s - min by it is exact), whose
    ``(VALUE_BINS - 1.5) / range`` would overflow; ``scale`` is 0 on invalid rows.  Both paths
    (``value_bins`` and ``cpu_kernels.code_histograms``) bin with these.
    """
    spread = high - low
    boost = torch.where(spread > 1e-300, 1.0, torch.full_like(spread, 2.0**600))
    return boost, torch.where(valid, (VALUE_BINS - 1.5) / (spread * boost), 0.0)


def _row_offsets(like: torch.Tensor, width: int) -> torch.Tensor:
    """[B, 1] offsets row * width, to index a [B, width] table through its flat view."""
    return torch.arange(like.shape[0], device=like.device)[:, None] * width


def _distinct_positives(saliency: torch.Tensor, entries: tuple, valid: torch.Tensor) -> _Positives:
    """Group the positive pixels (count > 0) of each valid row by saliency value: one entry per value.

    ``entries``: (rows, pixels, counts) of the non-zero fixation counts.
    """
    rows, pixels, counts = entries
    all_counts = per_row_sum(counts, rows, len(saliency))
    keep = valid[rows] & (counts > 0)
    rows, counts = rows[keep], counts[keep]
    values = saliency[rows, pixels[keep]]
    order = torch.argsort(values, stable=True)
    order = order[torch.argsort(rows[order], stable=True)]  # by row, then by value
    rows, values, counts = rows[order], values[order], counts[order]
    starts = torch.ones_like(rows, dtype=torch.bool)
    starts[1:] = (rows[1:] != rows[:-1]) | (values[1:] != values[:-1])
    group = starts.cumsum(0) - 1
    group_rows = rows[starts]
    per_row = torch.bincount(group_rows, minlength=len(saliency))
    rank = torch.arange(len(group_rows), device=saliency.device) - (per_row.cumsum(0) - per_row)[group_rows]
    width = max(int(per_row.max()) if len(per_row) else 0, 1)

    def padded(fill, entries: torch.Tensor) -> torch.Tensor:
        return torch.full((len(saliency), width), fill, dtype=entries.dtype, device=saliency.device).index_put_((group_rows, rank), entries)

    def group_sum(per_pixel: torch.Tensor) -> torch.Tensor:
        return padded(0, torch.zeros(len(group_rows), dtype=saliency.dtype, device=saliency.device).index_add_(0, group, per_pixel))

    return _Positives(
        values=padded(math.inf, values[starts]),
        pixel_counts=group_sum(torch.ones_like(counts)),
        fixation_counts=group_sum(counts),
        all_counts=all_counts,
    )


def _resolve_shared_bins(codes, saliency, bins, below, per_bin, positives: _Positives) -> None:
    """Overwrite the -1 codes of pixels sharing a bin with positive values: compare exactly.

    A loop over the few distinct positive values one bin holds (usually one), over all such
    pixels at once.
    """
    rows, pixels = torch.nonzero(codes < 0, as_tuple=True)  # often spread over most lines: no sparse search
    value, pixel_bin = saliency[rows, pixels], bins[rows, pixels]
    j, in_bin = below[rows, pixel_bin], per_bin[rows, pixel_bin]
    last = positives.values.shape[1] - 1
    at_or_below = torch.zeros_like(j)
    for offset in range(int(in_bin.max()) if len(in_bin) else 0):
        candidate = positives.values[rows, (j + offset).clamp_(max=last)]
        at_or_below += (offset < in_bin) & (candidate <= value)
    j += at_or_below
    tied = (j > 0) & (positives.values[rows, (j - 1).clamp(min=0)] == value)
    codes[rows, pixels] = 2 * j + tied


def _code_histogram(codes: torch.Tensor, weights: torch.Tensor, positives: _Positives) -> torch.Tensor:
    """[B, 2 (K+1)] total weight of the pixels of each code (one scatter-add: cheaper than a gather)."""
    width = 2 * (positives.values.shape[1] + 1)
    return torch.zeros(len(codes), width, dtype=weights.dtype, device=codes.device).scatter_add_(1, codes, weights)


def _credit_table(positives: _Positives, weights: torch.Tensor, half_always: bool) -> torch.Tensor:
    """[B, 2 (K+1)] credit of code 2 j + tie: A(j) = weight above, plus g_j / 2 if tied (or always)."""
    at_j = F.pad(weights, (1, 0))  # g_j, g_0 = 0
    above = weights.sum(dim=1, keepdim=True) - at_j.cumsum(dim=1)
    half = 0.5 * at_j
    untied = above + half if half_always else above
    return torch.stack((untied, above + half), dim=2).flatten(1)
