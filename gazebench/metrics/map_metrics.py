"""Map metrics against gaze: NSS, CC, KL, SIM and information gain, batched in torch.

Definitions follow the MIT saliency benchmark (REFERENCES.md section 3).  Every metric takes
maps, gaze densities and fixation-count maps ``[B, H, W]`` and returns ``[B]`` values in the
dtype of ``maps``; the arithmetic runs in float64 on the inputs' device (float32 on Apple
``mps``, which has no float64).  A sample whose value is undefined -- non-finite pixels, a
constant or all-zero map, an all-zero density, no fixations -- gets NaN; other samples of the
batch are unaffected.  All five are scale-invariant, over the whole float range: a map or
density whose largest |value| is far from 1 (beyond 2^+-256 in float64) is first multiplied by an
exact power of two (``ops.shared_rescaled``), so that no square or sum overflows or underflows.
SSIM, under the same conventions, is in ``ssim``.

On CPU tensors SIM runs through a fused per-image kernel (``cpu_kernels``, compiled with numba),
which the tests hold to the torch code below; the torch code runs on every other device.  The
speed machinery the metrics share -- dot products through BLAS, sparse fixation lists, maps
broadcast to the batch reduced once, intermediates memoised for the chunk, sums without centred
or shifted copies where the cancellation is bounded -- is in ``ops`` (see its docstring).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch

from gazebench.metrics import cpu_kernels
from gazebench.metrics.base import GazeTargets, Metric
from gazebench.metrics.ops import (
    EPS,
    centre_bias_like,
    check_shapes,
    finite_non_constant,
    fixation_entries,
    flat_maps,
    is_distribution,
    is_one_map,
    little_cancellation,
    memoised,
    nan_where_invalid,
    per_map,
    per_row_sum,
    row_dot,
    shared_centred,
    shared_mean_and_norm,
    shared_range,
    shared_rescaled,
    shared_shifted,
    shared_shifted_total,
    shared_sum,
    working_dtype,
)
from gazebench.registry import METRICS

SPLIT_KL_BOUND = 1e-12  # KL's eps small enough to split its log (see KL): the split is off by at most this


@METRICS.register("nss")
class NSS(Metric):
    """Normalized Scanpath Saliency: the z-scored map averaged over fixations.

    Each map is z-scored over its pixels with the population std (divisor H*W, no epsilon), then
    averaged over fixated pixels weighted by their fixation count: a pixel fixated twice counts
    twice, so the value is the mean z-score over fixations, not over fixated pixels.  NaN for a
    constant (or all-zero) map, non-finite pixels or counts, or no fixations.
    """

    name = "nss"
    needs = ("fixations",)
    higher_is_better = True
    value_range = (-math.inf, math.inf)

    def compute(self, maps, targets):
        check_shapes(maps, targets.fixations)
        dtype = working_dtype(maps.device)
        saliency = shared_rescaled(targets, flat_maps(maps, dtype))
        rows, pixels, counts = fixation_entries(targets.fixations, dtype, targets)
        moments = shared_mean_and_norm(targets, saliency)
        if moments is not None:
            mean, norm = moments
            at_fixations = saliency[rows, pixels] - mean[rows]
        else:
            centred, norm = shared_centred(targets, saliency)
            at_fixations = centred[rows, pixels]
        std = norm / math.sqrt(saliency.shape[1])
        n_fixations = per_row_sum(counts, rows, len(maps))
        values = per_row_sum(counts * at_fixations, rows, len(maps)) / (std * n_fixations)
        valid = finite_non_constant(*shared_range(targets, saliency)) & torch.isfinite(n_fixations) & (n_fixations > 0)
        return nan_where_invalid(values, valid, maps)


@METRICS.register("cc")
class CC(Metric):
    """Pearson correlation coefficient between the map and the gaze density.

    Both maps are centred on their pixel mean; no epsilon.  The value is clamped to [-1, 1] to
    absorb rounding.  NaN when either map is constant (an all-zero map or density included) or
    holds non-finite pixels.
    """

    name = "cc"
    needs = ("density",)
    higher_is_better = True
    value_range = (-1.0, 1.0)

    def compute(self, maps, targets):
        density = targets.density
        check_shapes(maps, density)
        dtype = working_dtype(maps.device)
        saliency, gaze = (shared_rescaled(targets, flat_maps(image, dtype)) for image in (maps, density))
        saliency_moments, gaze_moments = shared_mean_and_norm(targets, saliency), shared_mean_and_norm(targets, gaze)
        if saliency_moments is not None and gaze_moments is not None:
            (saliency_mean, saliency_norm), (gaze_mean, gaze_norm) = saliency_moments, gaze_moments
            covariance = row_dot(saliency, gaze) - saliency.shape[1] * saliency_mean * gaze_mean
        else:
            (saliency_c, saliency_norm), (gaze_c, gaze_norm) = shared_centred(targets, saliency), shared_centred(targets, gaze)
            covariance = row_dot(saliency_c, gaze_c)
        values = (covariance / (saliency_norm * gaze_norm)).clamp(-1.0, 1.0)
        valid = finite_non_constant(*shared_range(targets, saliency)) & finite_non_constant(*shared_range(targets, gaze))
        return nan_where_invalid(values, valid, maps)


@METRICS.register("kl")
class KL(Metric):
    """KL divergence of the gaze density G from the saliency map S (lower is better).

    Both are divided by their sum (no epsilon), then ``sum(G * log(eps + G / (S + eps)))`` with
    ``eps`` = 2.2204e-16 (setting ``eps``), as in the MIT saliency benchmark.  NaN when either
    map has non-finite or negative pixels (it is not a distribution) or sums to zero.

    For one map shared by the batch (``kl_cb``'s centre bias), in float64 and for a tiny ``eps``
    (``eps * (1 + H W eps)`` at most SPLIT_KL_BOUND), it is computed as ``sum G log G - sum G
    log(S + eps)`` (0 log 0 = 0), which differs by at most that bound: per pixel
    ``G log(1 + eps / r) <= G eps / r = eps (S + eps)`` with ``r = G / (S + eps)``.  The map's
    logs are then taken once and the second sum is one matrix-vector product; the first, one
    log per density pixel, is memoised for the chunk.  (For a map per sample the split would
    take two logs per pixel instead of one.)
    """

    name = "kl"
    needs = ("density",)
    higher_is_better = False
    value_range = (0.0, math.inf)
    default_settings: ClassVar[dict] = {"eps": EPS}

    def compute(self, maps, targets):
        density = targets.density
        check_shapes(maps, density)
        dtype = working_dtype(maps.device)
        eps = self.settings["eps"]
        saliency, gaze = (shared_rescaled(targets, flat_maps(image, dtype)) for image in (maps, density))
        saliency_sum, gaze_sum = shared_sum(targets, saliency), shared_sum(targets, gaze)
        if is_one_map(saliency) and saliency.dtype == torch.float64 and eps * (1 + saliency.shape[1] * eps) <= SPLIT_KL_BOUND:
            # sum G log G - sum G log(S + eps), with log(S + eps) = log(s + eps * s_sum) - log(s_sum)
            gaze_entropy = memoised(targets, "g log g", gaze, lambda: _sum_x_log_x(gaze, gaze_sum))
            log_saliency = per_map(saliency, lambda rows: torch.add(rows, (eps * saliency_sum[: len(rows)])[:, None]).log_())
            values = (gaze_entropy - row_dot(gaze, log_saliency)) / gaze_sum - torch.log(gaze_sum) + torch.log(saliency_sum)
        else:
            # gaze_sum * (S + eps), S = saliency / saliency_sum: one pass, a new tensor
            log_ratio = torch.addcmul((gaze_sum * eps)[:, None], saliency, (gaze_sum / saliency_sum)[:, None])
            eps_tensor = torch.full((), eps, dtype=dtype, device=saliency.device)
            torch.addcdiv(eps_tensor, gaze, log_ratio, out=log_ratio).log_()  # log(eps + G / (S + eps)), G = gaze / gaze_sum
            values = row_dot(gaze, log_ratio) / gaze_sum
        valid = is_distribution(shared_range(targets, saliency)[0], saliency_sum) & is_distribution(shared_range(targets, gaze)[0], gaze_sum)
        return nan_where_invalid(values, valid, maps)


def _sum_x_log_x(flat: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """[B] sums of x log x over the rows of [B, P] (0 log 0 = 0), given the rows' sums ``total``.

    As ``x . log(x + tiny)`` (tiny: the dtype's smallest normal number; ``log`` is several times
    slower on exact zeros), which is off by at most P tiny; when that is not below 1e-15 of a
    row's sum, ``xlogy``.
    """
    tiny = torch.finfo(flat.dtype).tiny
    if bool((total * 1e-15 > flat.shape[1] * tiny).all()):
        return row_dot(flat, torch.add(flat, tiny).log_())
    return torch.xlogy(flat, flat).sum(dim=1)


@METRICS.register("sim")
class SIM(Metric):
    """Similarity (histogram intersection) of the map and the gaze density, in [0, 1].

    Each is min-maxed to [0, 1] and divided by its sum -- together ``(x - min) / sum(x - min)``,
    no epsilon -- then ``SIM = sum(min(S, G))``: 1 for identical maps, 0 for disjoint ones.  As
    both sum to 1 it is computed as ``1 - sum|S - G| / 2``, clamped to [0, 1] to absorb rounding.
    NaN for non-finite pixels or a constant map or density (an all-zero one included).  On CPU
    tensors the sum of ``|S - G|`` is one fused pass (``cpu_kernels.shifted_l1_distances``).
    """

    name = "sim"
    needs = ("density",)
    higher_is_better = True
    value_range = (0.0, 1.0)

    def compute(self, maps, targets):
        density = targets.density
        check_shapes(maps, density)
        dtype = working_dtype(maps.device)
        saliency, gaze = (shared_rescaled(targets, flat_maps(image, dtype)) for image in (maps, density))
        (saliency_low, saliency_high), (gaze_low, gaze_high) = shared_range(targets, saliency), shared_range(targets, gaze)
        valid = finite_non_constant(saliency_low, saliency_high) & finite_non_constant(gaze_low, gaze_high)
        saliency_total, gaze_total = shared_shifted_total(targets, saliency), shared_shifted_total(targets, gaze)
        # With S = s' / Ts, G = g' / Tg (s' = s - min, ...): sum|S - G| = sum|s' - g' Ts / Tg| / Ts
        ratio = saliency_total / gaze_total
        if cpu_kernels.applies(saliency, gaze):
            distance = cpu_kernels.shifted_l1_distances(saliency, gaze, saliency_low, gaze_low, ratio)
            values = 1 - distance / (2 * saliency_total)
            return nan_where_invalid(values.clamp(0.0, 1.0), valid, maps)
        if little_cancellation(saliency_low, saliency_total, saliency.shape[1]) and little_cancellation(gaze_low, gaze_total, gaze.shape[1]):
            # s' - g' Ts / Tg = s - g Ts / Tg - (min s - min g Ts / Tg): one pass, no shifted copies
            difference = torch.addcmul(saliency, gaze, ratio[:, None], value=-1).sub_((saliency_low - gaze_low * ratio)[:, None])
        else:
            difference = torch.addcmul(shared_shifted(targets, saliency)[0], shared_shifted(targets, gaze)[0], ratio[:, None], value=-1)
        values = 1 - torch.linalg.vector_norm(difference, ord=1, dim=1) / (2 * saliency_total)
        return nan_where_invalid(values.clamp(0.0, 1.0), valid, maps)


@METRICS.register("info_gain")
class InfoGain(Metric):
    """Information gain of the map over the centre-bias map B, in bits per fixation.

    The map S and B (``targets.centre_bias``, one [H, W] map for the batch) are each min-maxed
    and divided by their sum -- together ``(x - min) / sum(x - min)``, no epsilon -- and
    ``IG = mean over fixations of log2(eps + S) - log2(eps + B)`` with ``eps`` = 2.2204e-16
    (setting ``eps``), as in the MIT saliency benchmark.  Fixations are weighted by their count,
    as in NSS; only fixated pixels are normalised and logged.  0 when S is B.  NaN for
    non-finite pixels or a constant map (S or B), or no fixations.
    """

    name = "info_gain"
    needs = ("fixations", "centre_bias")
    higher_is_better = True
    value_range = (-math.inf, math.inf)
    default_settings: ClassVar[dict] = {"eps": EPS}

    def compute(self, maps, targets):
        check_shapes(maps, targets.fixations)
        dtype = working_dtype(maps.device)
        saliency = shared_rescaled(targets, flat_maps(maps, dtype))
        baseline = shared_rescaled(targets, flat_maps(centre_bias_like(maps, targets.centre_bias), dtype))
        rows, pixels, counts = fixation_entries(targets.fixations, dtype, targets)
        eps = self.settings["eps"]
        gain = _normalised_at(targets, saliency, rows, pixels).add_(eps).log2_()
        gain -= _normalised_at(targets, baseline, rows, pixels).add_(eps).log2_()
        n_fixations = per_row_sum(counts, rows, len(maps))
        values = per_row_sum(gain.mul_(counts), rows, len(maps)) / n_fixations
        valid = finite_non_constant(*shared_range(targets, saliency)) & finite_non_constant(*shared_range(targets, baseline))
        return nan_where_invalid(values, valid & torch.isfinite(n_fixations) & (n_fixations > 0), maps)


def _normalised_at(targets: GazeTargets, flat: torch.Tensor, rows: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """(x - min) / sum(x - min) of the rows of [B, P], only at the pixels (rows, pixels): a new tensor."""
    low, total = shared_range(targets, flat)[0], shared_shifted_total(targets, flat)
    return (flat[rows, pixels] - low[rows]) / total[rows]
