"""Map metrics against gaze: NSS, CC, KL, SIM, information gain and SSIM, batched in torch.

Definitions follow the MIT saliency benchmark (REFERENCES.md section 3); SSIM follows Wang et
al. 2004 with scikit-image's ``structural_similarity`` as the oracle.  Every metric takes maps,
gaze densities and fixation-count maps ``[B, H, W]`` and returns ``[B]`` values in the dtype of
``maps``; the arithmetic runs in float64 on the inputs' device (float32 on Apple ``mps``, which
has no float64; SSIM filters in float32, see its docstring).  A sample whose value is undefined
-- non-finite pixels, a constant or all-zero map, an all-zero density, no fixations -- gets NaN;
other samples of the batch are unaffected.

On CPU tensors SSIM and SIM run through fused per-image kernels (``cpu_kernels``, compiled with
numba), which the tests hold to the torch code below; the torch code runs on every other device.
Speed on CPU also comes from touching each pixel few times: reductions instead of temporaries where
the formula allows, dot products through BLAS on short lines (``_row_dot``), fixated pixels found
line by line (``sparse_nonzero``) and gathered, and maps whose rows are all one map (the
centre-bias map broadcast to the batch) reduced once.  When ``score_maps`` scores a chunk with
several metrics, the targets carry a memo and what several metrics derive from the same tensor
(ranges, sums, fixation lists) is computed once (``memoised``).  Means, norms and sums of
``x - min`` come from plain sums (no centred or shifted copies) where the cancellation that
invites is bounded (CANCELLATION_BOUND), else from the copies.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache
from typing import ClassVar, TypeVar

import torch
import torch.nn.functional as F

from gazebench.metrics import cpu_kernels
from gazebench.metrics.base import GazeTargets, Metric
from gazebench.registry import METRICS

EPS = 2.2204e-16  # MATLAB's eps, as in the MIT saliency benchmark code
SSIM_K1, SSIM_K2 = 0.01, 0.03  # Wang et al. 2004 stabilising constants
GAUSSIAN_TRUNCATE = 3.5  # skimage: an 11-tap window for sigma 1.5
UNIFORM_WINDOW = 7  # skimage's default window size
DOT_LINES = (32, 256)  # dot products cut rows into lines of 32 to 256 pixels (BLAS is slow past 256)
SEARCH_LINES = (16, 64)  # sparse searches skip empty lines of 16 to 64 pixels
CANCELLATION_BOUND = 1e4  # sums of x - min taken as sum(x) - P min while P |min| is at most this times the result
SPLIT_KL_BOUND = 1e-12  # KL's eps small enough to split its log (see KL): the split is off by at most this
SSIM_STACK_BYTES = 7 << 20  # SSIM filters its moments in batches of maps of about this many bytes on CPU (8 maps of 224 x 224)
TILE_BYTES = 1 << 22  # elementwise chains run over bands of about this many bytes (measured: 2-4 MiB best with 2 threads)

Value = TypeVar("Value")


def memoised(targets: GazeTargets | None, name: str, tensors: torch.Tensor | tuple[torch.Tensor, ...], compute: Callable[[], Value]) -> Value:
    """``compute()``, remembered for the chunk when ``targets`` carries a ``memo`` dict (score_maps).

    Keyed on ``name`` and the memory, layout and dtype of the tensor(s) it is computed from:
    views of the same data share the entry, and the entry keeps the tensors alive so that their
    addresses are not reused.  The value is shared by every caller: never modify it in place.
    """
    memo = getattr(targets, "memo", None)
    if memo is None:
        return compute()
    tensors = tensors if isinstance(tensors, tuple) else (tensors,)
    key = (name, *((t.data_ptr(), tuple(t.shape), t.stride(), t.dtype, str(t.device)) for t in tensors))
    if key not in memo:
        memo[key] = (tensors, compute())
    return memo[key][1]


def _working_dtype(device: torch.device) -> torch.dtype:
    """float64 for accuracy, except on ``mps`` which has no float64."""
    return torch.float32 if device.type == "mps" else torch.float64


def _flat(maps: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[B, H, W] -> [B, H*W] in the working dtype (may share memory with ``maps``)."""
    return maps.reshape(maps.shape[0], -1).to(dtype)


def _check_shapes(maps: torch.Tensor, other: torch.Tensor) -> None:
    if maps.dim() != 3 or maps.shape != other.shape:
        raise ValueError(f"expected two [B, H, W] tensors of one shape, got {tuple(maps.shape)} and {tuple(other.shape)}")


def _one_map(flat: torch.Tensor) -> bool:
    """Whether every row of [B, P] is the same memory (a map broadcast to the batch)."""
    return flat.shape[0] > 1 and flat.stride(0) == 0


def _per_map(flat: torch.Tensor, reduce: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``reduce`` of [B, P] -> [B, ...], computed once when every row is one map."""
    if _one_map(flat):
        once = reduce(flat[:1])
        return once.expand(flat.shape[0], *once.shape[1:])
    return reduce(flat)


def _range(flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-map (min, max) [B]; both NaN when a pixel is NaN, so they also flag non-finite maps."""
    return _per_map(flat, lambda rows: rows.amin(dim=1)), _per_map(flat, lambda rows: rows.amax(dim=1))


def shared_range(targets: GazeTargets, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``_range``, memoised for the chunk."""
    return memoised(targets, "range", flat, lambda: _range(flat))


def _finite_non_constant_range(low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """[B] bool from the per-map (min, max): every pixel finite and at least two values (exact,
    not through a rounded std)."""
    return torch.isfinite(low) & torch.isfinite(high) & (high > low)


@lru_cache(maxsize=64)
def _line_length(n_pixels: int, lengths: tuple[int, int]) -> int:
    """The longest divisor of ``n_pixels`` within ``lengths`` (shortest, longest), else ``n_pixels``."""
    shortest, longest = lengths
    return next((length for length in range(min(longest, n_pixels), shortest - 1, -1) if n_pixels % length == 0), n_pixels)


def _row_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[B, P] . [B, P] -> [B] through BLAS: a batch of short line-by-line dot products, summed.

    (One [1, P] x [P, 1] product per row is several times slower on CPU.)  When one side is one
    map broadcast to the batch, a single matrix-vector product.
    """
    if _one_map(a) or _one_map(b):
        return b @ a[0] if _one_map(a) else a @ b[0]
    rows, n_pixels = a.shape
    line = _line_length(n_pixels, DOT_LINES)
    dots = torch.bmm(a.reshape(-1, 1, line), b.reshape(-1, line, 1))
    return dots.view(rows, -1).sum(dim=1)


def _centred(flat: torch.Tensor) -> torch.Tensor:
    """A new [B, P] tensor: each row minus its mean."""
    return flat - flat.mean(dim=1, keepdim=True)


def shared_centred(targets: GazeTargets, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, P] rows centred on their mean and [B] their Euclidean norms, memoised for the chunk."""

    def centred_and_norm():
        centred = _per_map(flat, _centred)
        return centred, _per_map(centred, lambda rows: torch.linalg.vector_norm(rows, dim=1))

    return memoised(targets, "centred", flat, centred_and_norm)


def shared_mean_and_norm(targets: GazeTargets | None, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """[B] means and [B] Euclidean norms of the centred rows of [B, P] from sums, without a centred copy.

    The centred sum of squares is ``sum(x^2) - sum(x) mean``; with ``P mean^2`` at most
    CANCELLATION_BOUND times it (mean / std <= 100), it, and a covariance taken the same way,
    loses at most ~CANCELLATION_BOUND roundings (~2e-12 in float64, relative to the norms).  None
    when a row fails that (or is non-finite), or in float32 (``mps``): callers then use
    ``shared_centred``.  Memoised for the chunk.
    """

    def mean_and_norm():
        total = shared_sum(targets, flat)
        mean = total / flat.shape[1]
        centred_squares = _per_map(flat, lambda rows: torch.linalg.vector_norm(rows, dim=1).square_()) - total * mean
        if flat.dtype != torch.float64 or not bool((flat.shape[1] * mean * mean <= CANCELLATION_BOUND * centred_squares).all()):
            return None
        return mean, centred_squares.sqrt()

    return memoised(targets, "mean and norm", flat, mean_and_norm)


def _result(values: torch.Tensor, valid: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """NaN where ``valid`` is False, cast to the dtype of ``like`` (float32 for integer maps)."""
    values = torch.where(valid, values, torch.full_like(values, math.nan))
    return values.to(like.dtype if like.is_floating_point() else torch.float32)


def _per_row_sum(values: torch.Tensor, rows: torch.Tensor, n_rows: int) -> torch.Tensor:
    """[n_rows] sums of ``values`` grouped by their row index (``rows`` sorted, as nonzero gives them).

    Through a padded [n_rows, max per row] table rather than ``index_add_``, whose CUDA atomics
    would add in a varying order: the same inputs give the same bits on every device.
    """
    per_row = torch.bincount(rows, minlength=n_rows)
    width = max(int(per_row.max()) if len(rows) else 0, 1)
    rank = torch.arange(len(rows), device=rows.device) - (per_row.cumsum(0) - per_row)[rows]
    return values.new_zeros(n_rows, width).index_put_((rows, rank), values).sum(dim=1)


def sparse_nonzero(flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, pixel) index pairs of the non-zero entries of [B, P] (NaN counts as non-zero).

    Row-major order, like ``torch.nonzero``, but fast when the entries are few: one reduction
    per short line of pixels finds the lines that hold any, and only those are searched.
    """
    n_pixels = flat.shape[1]
    line = _line_length(n_pixels, SEARCH_LINES)
    lines = flat.reshape(-1, line)
    holding = (lines.amax(dim=1) != 0) | (lines.amin(dim=1) != 0)  # amax propagates NaN
    line_index = torch.nonzero(holding).view(-1)
    in_line, column = torch.nonzero(lines[line_index], as_tuple=True)
    flat_index = line_index[in_line] * line + column
    return flat_index // n_pixels, flat_index % n_pixels


def fixation_entries(fixations: torch.Tensor, dtype: torch.dtype, targets: GazeTargets | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The fixated pixels of [B, H, W] counts: row, flat pixel index and count (in ``dtype``) of each.

    Memoised for the chunk when ``targets`` carries a memo.
    """

    def entries():
        flat = fixations.reshape(fixations.shape[0], -1)
        rows, pixels = sparse_nonzero(flat)
        return rows, pixels, flat[rows, pixels].to(dtype)

    return memoised(targets, f"fixations {dtype}", fixations, entries)


def centre_bias_like(maps: torch.Tensor, centre_bias: torch.Tensor) -> torch.Tensor:
    """The one [H, W] centre-bias map as a [B, H, W] view (no copy) on the maps' device and dtype."""
    if centre_bias.shape != maps.shape[1:]:
        raise ValueError(f"centre bias of shape {tuple(centre_bias.shape)} does not fit maps of shape {tuple(maps.shape)}")
    dtype = maps.dtype if maps.is_floating_point() else torch.float32
    return centre_bias.to(device=maps.device, dtype=dtype).expand(maps.shape)


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
        _check_shapes(maps, targets.fixations)
        dtype = _working_dtype(maps.device)
        saliency = _flat(maps, dtype)
        rows, pixels, counts = fixation_entries(targets.fixations, dtype, targets)
        moments = shared_mean_and_norm(targets, saliency)
        if moments is not None:
            mean, norm = moments
            at_fixations = saliency[rows, pixels] - mean[rows]
        else:
            centred, norm = shared_centred(targets, saliency)
            at_fixations = centred[rows, pixels]
        std = norm / math.sqrt(saliency.shape[1])
        n_fixations = _per_row_sum(counts, rows, len(maps))
        values = _per_row_sum(counts * at_fixations, rows, len(maps)) / (std * n_fixations)
        valid = _finite_non_constant_range(*shared_range(targets, saliency)) & torch.isfinite(n_fixations) & (n_fixations > 0)
        return _result(values, valid, maps)


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
        _check_shapes(maps, density)
        dtype = _working_dtype(maps.device)
        saliency, gaze = _flat(maps, dtype), _flat(density, dtype)
        saliency_moments, gaze_moments = shared_mean_and_norm(targets, saliency), shared_mean_and_norm(targets, gaze)
        if saliency_moments is not None and gaze_moments is not None:
            (saliency_mean, saliency_norm), (gaze_mean, gaze_norm) = saliency_moments, gaze_moments
            covariance = _row_dot(saliency, gaze) - saliency.shape[1] * saliency_mean * gaze_mean
        else:
            (saliency_c, saliency_norm), (gaze_c, gaze_norm) = shared_centred(targets, saliency), shared_centred(targets, gaze)
            covariance = _row_dot(saliency_c, gaze_c)
        values = (covariance / (saliency_norm * gaze_norm)).clamp(-1.0, 1.0)
        valid = _finite_non_constant_range(*shared_range(targets, saliency)) & _finite_non_constant_range(*shared_range(targets, gaze))
        return _result(values, valid, maps)


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
        _check_shapes(maps, density)
        dtype = _working_dtype(maps.device)
        eps = self.settings["eps"]
        saliency, gaze = _flat(maps, dtype), _flat(density, dtype)
        saliency_sum, gaze_sum = shared_sum(targets, saliency), shared_sum(targets, gaze)
        if _one_map(saliency) and saliency.dtype == torch.float64 and eps * (1 + saliency.shape[1] * eps) <= SPLIT_KL_BOUND:
            # sum G log G - sum G log(S + eps), with log(S + eps) = log(s + eps * s_sum) - log(s_sum)
            gaze_entropy = memoised(targets, "g log g", gaze, lambda: _sum_x_log_x(gaze, gaze_sum))
            log_saliency = _per_map(saliency, lambda rows: torch.add(rows, (eps * saliency_sum[: len(rows)])[:, None]).log_())
            values = (gaze_entropy - _row_dot(gaze, log_saliency)) / gaze_sum - torch.log(gaze_sum) + torch.log(saliency_sum)
        else:
            # gaze_sum * (S + eps), S = saliency / saliency_sum: one pass, a new tensor
            log_ratio = torch.addcmul((gaze_sum * eps)[:, None], saliency, (gaze_sum / saliency_sum)[:, None])
            eps_tensor = torch.full((), eps, dtype=dtype, device=saliency.device)
            torch.addcdiv(eps_tensor, gaze, log_ratio, out=log_ratio).log_()  # log(eps + G / (S + eps)), G = gaze / gaze_sum
            values = _row_dot(gaze, log_ratio) / gaze_sum
        valid = _is_distribution(shared_range(targets, saliency)[0], saliency_sum) & _is_distribution(shared_range(targets, gaze)[0], gaze_sum)
        return _result(values, valid, maps)


def _sum_x_log_x(flat: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """[B] sums of x log x over the rows of [B, P] (0 log 0 = 0), given the rows' sums ``total``.

    As ``x . log(x + tiny)`` (tiny: the dtype's smallest normal number; ``log`` is several times
    slower on exact zeros), which is off by at most P tiny; when that is not below 1e-15 of a
    row's sum, ``xlogy``.
    """
    tiny = torch.finfo(flat.dtype).tiny
    if bool((total * 1e-15 > flat.shape[1] * tiny).all()):
        return _row_dot(flat, torch.add(flat, tiny).log_())
    return torch.xlogy(flat, flat).sum(dim=1)


def shared_sum(targets: GazeTargets | None, flat: torch.Tensor) -> torch.Tensor:
    """[B] sums of the rows of [B, P] (once for a map shared by the batch), memoised for the chunk."""
    return memoised(targets, "sum", flat, lambda: _per_map(flat, lambda rows: rows.sum(dim=1)))


def _is_distribution(flat_or_low: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """[B] bool: finite, non-negative pixels with a positive finite sum (NaN or inf makes the sum so).

    ``flat_or_low``: the [B, P] maps or their [B] minimums.
    """
    low = flat_or_low.amin(dim=1) if flat_or_low.dim() == 2 else flat_or_low
    return (low >= 0) & torch.isfinite(total) & (total > 0)


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
        _check_shapes(maps, density)
        dtype = _working_dtype(maps.device)
        saliency, gaze = _flat(maps, dtype), _flat(density, dtype)
        (saliency_low, saliency_high), (gaze_low, gaze_high) = shared_range(targets, saliency), shared_range(targets, gaze)
        valid = _finite_non_constant_range(saliency_low, saliency_high) & _finite_non_constant_range(gaze_low, gaze_high)
        saliency_total, gaze_total = shared_shifted_total(targets, saliency), shared_shifted_total(targets, gaze)
        # With S = s' / Ts, G = g' / Tg (s' = s - min, ...): sum|S - G| = sum|s' - g' Ts / Tg| / Ts
        ratio = saliency_total / gaze_total
        if cpu_kernels.applies(saliency, gaze):
            distance = cpu_kernels.shifted_l1_distances(saliency, gaze, saliency_low, gaze_low, ratio)
            values = 1 - distance / (2 * saliency_total)
            return _result(values.clamp(0.0, 1.0), valid, maps)
        if _little_cancellation(saliency_low, saliency_total, saliency.shape[1]) and _little_cancellation(gaze_low, gaze_total, gaze.shape[1]):
            # s' - g' Ts / Tg = s - g Ts / Tg - (min s - min g Ts / Tg): one pass, no shifted copies
            difference = torch.addcmul(saliency, gaze, ratio[:, None], value=-1).sub_((saliency_low - gaze_low * ratio)[:, None])
        else:
            difference = torch.addcmul(shared_shifted(targets, saliency)[0], shared_shifted(targets, gaze)[0], ratio[:, None], value=-1)
        values = 1 - torch.linalg.vector_norm(difference, ord=1, dim=1) / (2 * saliency_total)
        return _result(values.clamp(0.0, 1.0), valid, maps)


def _little_cancellation(low: torch.Tensor, total: torch.Tensor, n_pixels: int) -> bool:
    """Whether every row's ``n_pixels |min|`` is at most CANCELLATION_BOUND times its ``sum(x - min)``.

    Then ``sum(x) - n_pixels min`` and sums over ``x - min`` computed from ``x`` without the
    shifted copy lose at most ~CANCELLATION_BOUND float64 roundings relative to the total
    (~2e-12); False for NaN and in float32 (``mps``).
    """
    return low.dtype == torch.float64 and bool((n_pixels * low.abs() <= CANCELLATION_BOUND * total).all())


def shared_shifted_total(targets: GazeTargets, flat: torch.Tensor) -> torch.Tensor:
    """[B] sums of the rows of [B, P] minus their min, memoised for the chunk.

    ``sum(x) - P min`` (from the shared sums and ranges) when that cancels little
    (``_little_cancellation``), else summed over the shifted rows (``shared_shifted``).
    """

    def total():
        low = shared_range(targets, flat)[0]
        fast = shared_sum(targets, flat) - flat.shape[1] * low
        return fast if _little_cancellation(low, fast, flat.shape[1]) else shared_shifted(targets, flat)[1]

    return memoised(targets, "shifted total", flat, total)


def shared_shifted(targets: GazeTargets, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, P] rows minus their min and [B] their sums (no cancellation), memoised for the chunk."""

    def shifted_and_total():
        low = shared_range(targets, flat)[0]
        shifted = _per_map(flat, lambda rows: rows - low[: len(rows), None])
        return shifted, _per_map(shifted, lambda rows: rows.sum(dim=1))

    return memoised(targets, "shifted", flat, shifted_and_total)


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
        _check_shapes(maps, targets.fixations)
        dtype = _working_dtype(maps.device)
        saliency = _flat(maps, dtype)
        baseline = _flat(centre_bias_like(maps, targets.centre_bias), dtype)
        rows, pixels, counts = fixation_entries(targets.fixations, dtype, targets)
        eps = self.settings["eps"]
        gain = _normalised_at(targets, saliency, rows, pixels).add_(eps).log2_()
        gain -= _normalised_at(targets, baseline, rows, pixels).add_(eps).log2_()
        n_fixations = _per_row_sum(counts, rows, len(maps))
        values = _per_row_sum(gain.mul_(counts), rows, len(maps)) / n_fixations
        valid = _finite_non_constant_range(*shared_range(targets, saliency)) & _finite_non_constant_range(*shared_range(targets, baseline))
        return _result(values, valid & torch.isfinite(n_fixations) & (n_fixations > 0), maps)


def _normalised_at(targets: GazeTargets, flat: torch.Tensor, rows: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """(x - min) / sum(x - min) of the rows of [B, P], only at the pixels (rows, pixels): a new tensor."""
    low, total = shared_range(targets, flat)[0], shared_shifted_total(targets, flat)
    return (flat[rows, pixels] - low[rows]) / total[rows]


@METRICS.register("ssim")
class SSIM(Metric):
    """Mean structural similarity between the map and the gaze density (Wang et al. 2004).

    With ``minmax`` (default) both maps are first scaled to [0, 1] by (x - min) / (max - min), no
    epsilon.  Local statistics come from a separable window: ``window="gaussian"`` (default) is
    a Gaussian of std ``sigma`` truncated at 3.5 sigma (11 taps for 1.5) with population
    covariance; ``window="uniform"`` is skimage's default 7x7 box with sample covariance
    (x 49/48).  C1 = (0.01 R)^2, C2 = (0.03 R)^2 with R = ``data_range``.  The SSIM map is
    averaged over the pixels at least one window radius from the border, exactly the region
    skimage keeps after its crop, so the filter's border mode never matters and the filtering is
    a 'valid' convolution.  Matches ``skimage.metrics.structural_similarity(s, g,
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0)`` on the
    min-maxed maps (``structural_similarity(s, g, data_range=1.0)`` for the uniform window)
    to ~1e-7: the filtering and the per-pixel formula run in float32 (on CPU tensors a fused
    per-image kernel, ``cpu_kernels.ssim_means``; elsewhere a depthwise convolution) on maps first
    centred on their mean in float64, which keeps the float32 moments small; the mean over pixels
    is accumulated in float64.
    NaN for non-finite pixels, an all-zero map or density, and, with ``minmax``, a constant one.
    """

    name = "ssim"
    needs = ("density",)
    higher_is_better = True
    value_range = (-1.0, 1.0)
    default_settings: ClassVar[dict] = {"window": "gaussian", "sigma": 1.5, "data_range": 1.0, "minmax": True}

    def __init__(self, **settings):
        super().__init__(**settings)
        if self.settings["window"] not in ("gaussian", "uniform"):
            raise ValueError(f"ssim: window must be 'gaussian' or 'uniform', got {self.settings['window']!r}")

    def compute(self, maps, targets):
        density = targets.density
        _check_shapes(maps, density)
        window, covariance_norm = self._window(torch.float32, maps.device)
        size = window.numel()
        if min(maps.shape[1:]) < size:
            raise ValueError(f"ssim: maps of {maps.shape[1]}x{maps.shape[2]} are smaller than the {size}x{size} window")
        dtype = _working_dtype(maps.device)
        images = [_flat(image, dtype) for image in (maps, density)]
        ranges = [shared_range(targets, image) for image in images]
        valid = _ssim_defined(*ranges[0], self.settings["minmax"]) & _ssim_defined(*ranges[1], self.settings["minmax"])
        means = [shared_sum(targets, image) / image.shape[1] for image in images]
        c2 = (SSIM_K2 * self.settings["data_range"]) ** 2 / covariance_norm
        affine = [_centring(low, high, mean, self.settings["minmax"]) for (low, high), mean in zip(ranges, means)]
        if cpu_kernels.applies(maps, density):
            c1 = (SSIM_K1 * self.settings["data_range"]) ** 2
            table = torch.stack([column for slot in affine for column in slot], dim=1)
            values = cpu_kernels.ssim_means(maps, density, table, window, c1, (c2, c2 / 2), valid)
            return _result(values, valid, maps)
        values = torch.empty(len(maps), dtype=dtype, device=maps.device)
        for part in _ssim_batches(len(maps), maps.shape[1] * maps.shape[2], maps.device):
            pick = [image[part] for image in images], [tuple(column[part] for column in slot) for slot in affine]
            moments, offsets = _moment_stack(*pick, maps.shape[1:], c2)
            values[part] = _mean_ssim(_filter_valid(moments, window), offsets, self.settings["data_range"])
        return _result(values, valid, maps)

    def _window(self, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, float]:
        """The 1-D window (sums to 1) and the covariance normalisation skimage pairs with it."""
        if self.settings["window"] == "uniform":
            size = UNIFORM_WINDOW
            return torch.full((size,), 1.0 / size, dtype=dtype, device=device), size**2 / (size**2 - 1)
        return gaussian_window(self.settings["sigma"], dtype, device), 1.0


def gaussian_window(sigma: float, dtype=torch.float64, device=None) -> torch.Tensor:
    """scipy.ndimage's 1-D Gaussian kernel: radius int(3.5 sigma + 0.5), normalised to sum 1."""
    radius = int(GAUSSIAN_TRUNCATE * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64, device=device)
    weights = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return (weights / weights.sum()).to(dtype)


def _ssim_defined(low: torch.Tensor, high: torch.Tensor, minmax: bool) -> torch.Tensor:
    """[B] bool from each map's (min, max): finite and not all zero; with ``minmax`` also not constant."""
    finite = torch.isfinite(low) & torch.isfinite(high)
    return finite & (high > low) if minmax else finite & ((low != 0) | (high != 0))


def _row_bands(n_rows: int, bytes_per_row: int) -> list[slice]:
    """Bands of rows of about TILE_BYTES each: elementwise chains over one band stay in the cache.

    (A chain of in-place passes over a whole chunk streams it through memory once per pass; over
    a band that fits the cache it costs a fraction, which outweighs the extra Python calls.)
    """
    rows = max(1, TILE_BYTES // max(bytes_per_row, 1))
    return [slice(start, min(start + rows, n_rows)) for start in range(0, n_rows, rows)]


def _ssim_batches(n_maps: int, n_pixels: int, device: torch.device) -> list[slice]:
    """SSIM's batches of maps: on CPU of about SSIM_STACK_BYTES of float32 moments each (measured
    ~1.5x faster than twice as many: the stack stays near the caches), elsewhere all at once."""
    per_batch = max(1, SSIM_STACK_BYTES // (16 * n_pixels)) if device.type == "cpu" else max(n_maps, 1)
    return [slice(start, min(start + per_batch, n_maps)) for start in range(0, n_maps, per_batch)]


def _centring(low: torch.Tensor, high: torch.Tensor, image_mean: torch.Tensor, minmax: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[B] (scale, shift, mean) of the affine map ``scale * x + shift`` that min-maxes the maps (if
    ``minmax``) and centres them on their mean, and that mean (of the min-maxed maps), in float64.

    Centring keeps SSIM's float32 moments small; the means go back into the local means.
    """
    if not minmax:
        return torch.ones_like(low), -image_mean, image_mean
    scale = 1 / (high - low)
    mean = (image_mean - low) * scale
    return scale, -mean - low * scale, mean


def _moment_stack(images: list[torch.Tensor], affine: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], size: tuple[int, int], c2: float) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 [1, 4B, H, W] (channels last) holding x, y, x*x + y*y + c2, x*y + c2/2, moment-major; and [2, B] offsets.

    x and y ([B, H*W]) are mapped by their ``affine`` (``_centring``: min-maxed if asked, centred
    on their mean) in float64 before the cast; the offsets (their means) go back into the local
    means in ``_mean_ssim``.  x*x and y*y are only ever needed summed.  The constants ``c2`` (C2
    over the covariance normalisation) survive the filtering (the window sums to 1), which spares
    two passes over the filtered moments.  One buffer so that one depthwise convolution filters
    all four; filled band by band of rows, the affine map computed in float64 and rounded once on
    store.
    """
    batch, (height, width) = images[0].shape[0], size
    stack = torch.empty((1, height, width, 4 * batch), dtype=torch.float32, device=images[0].device).permute(0, 3, 1, 2)
    planes = stack[0].unflatten(0, (4, batch))  # [4, B, H, W] views
    constants = torch.tensor([c2, c2 / 2], dtype=torch.float32, device=stack.device)
    coefficients = [(scale[:, None, None], shift[:, None, None]) for scale, shift, _ in affine]
    for band in _row_bands(height, width * batch * (4 * 4 + 2 * 8)):  # float32 stack row and float64 source rows
        for slot, (scale, shift) in enumerate(coefficients):
            torch.addcmul(shift, images[slot].view(batch, height, width)[:, band], scale, out=planes[slot, :, band])
        x, y = planes[0, :, band], planes[1, :, band]
        torch.addcmul(constants[0], x, x, out=planes[2, :, band]).addcmul_(y, y)
        torch.addcmul(constants[1], x, y, out=planes[3, :, band])
    return stack, torch.stack([mean for _, _, mean in affine])


def _filter_valid(stack: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Separable 'valid' filtering of [1, C, H, W] -> [C, H-K+1, W-K+1] with a 1-D window.

    Two depthwise float32 convolutions on channels-last data: oneDNN's fast path on CPU.
    """
    channels, size = stack.shape[1], window.numel()
    along_width = window.view(1, 1, 1, size).expand(channels, 1, 1, size)
    along_height = window.view(1, 1, size, 1).expand(channels, 1, size, 1)
    filtered = F.conv2d(stack, along_width.contiguous(), groups=channels)
    return F.conv2d(filtered, along_height.contiguous(), groups=channels)[0]


def _mean_ssim(filtered: torch.Tensor, offsets: torch.Tensor, data_range: float) -> torch.Tensor:
    """Mean of the SSIM map over the valid region, from the filtered [4B, H', W'] moments -> [B] float64.

    Band by band of rows (``_row_bands``), summed in float64.
    """
    height, width = filtered.shape[1:]
    bands = _row_bands(height, width * filtered.shape[0] * filtered.element_size())
    total = sum(_ssim_sum(filtered[:, band], offsets, data_range) for band in bands)
    return total / (height * width)


def _ssim_sum(filtered: torch.Tensor, offsets: torch.Tensor, data_range: float) -> torch.Tensor:
    """Sum of the SSIM map over filtered [4B, h, w] moments -> [B] float64 (overwrites the moments).

    The moments are of the centred maps: variances and covariance are shift-free, the local
    means get their offsets back.  SSIM = (2 mx my + C1)(2 n cov + C2) / ((mx^2 + my^2 + C1)(n var + C2))
    with n the covariance normalisation, computed as 4 (mx my + C1/2)(cov + C2/(2n)) /
    ((mx^2 + my^2 + C1)(var + C2/n)): fewer in-place float32 passes over the moments.  The
    C2/n terms are already in the moments (``_moment_stack``).
    """
    batch = offsets.shape[1]
    moments = filtered.unflatten(0, (4, batch))
    means, mean_squares, mean_xy = moments[:2], moments[2], moments[3]
    mean_x, mean_y = means
    c1 = (SSIM_K1 * data_range) ** 2
    covariance = mean_xy.addcmul_(mean_x, mean_y, value=-1)  # + C2/(2n), added in _moment_stack
    variance_sum = mean_squares.addcmul_(mean_x, mean_x, value=-1).addcmul_(mean_y, mean_y, value=-1)  # + C2/n
    means.add_(offsets.to(means.dtype)[:, :, None, None])
    numerator = torch.addcmul(torch.full((), c1 / 2, dtype=means.dtype, device=means.device), mean_x, mean_y).mul_(covariance)
    denominator = torch.addcmul(torch.full((), c1, dtype=means.dtype, device=means.device), mean_x, mean_x).addcmul_(mean_y, mean_y).mul_(variance_sum)
    return 4 * numerator.div_(denominator).sum(dim=(1, 2), dtype=_working_dtype(means.device))
