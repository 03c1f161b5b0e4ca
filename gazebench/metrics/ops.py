"""Public helpers of the metrics: shapes, working dtypes, shared intermediates, ranks.

The metric modules (``map_metrics``, ``ssim``, ``auc``, ``localisation``, ``centre_bias``,
``regions``), ``scoring`` and ``cpu_kernels`` take their common pieces from here: the working
dtype (float64 on the inputs' device, float32 on Apple ``mps``, which has no float64),
``[B, H, W]`` maps as ``[B, H*W]`` rows (``flat_maps``), maps of extreme scale brought near 1 by
an exact power of two (``shared_rescaled``), the shape check, per-map ranges and the
finite / non-constant test, NaN for the samples whose value is undefined (``nan_where_invalid``),
and ``average_ranks``.

Speed on CPU comes from touching each pixel few times: reductions instead of temporaries where
the formula allows, dot products through BLAS on short lines (``row_dot``), fixated pixels found
line by line (``sparse_nonzero``) and gathered, and maps whose rows are all one map (the
centre-bias map broadcast to the batch, ``is_one_map``) reduced once (``per_map``).  When
``score_maps`` scores a chunk with several metrics, the targets carry a memo and what several
metrics derive from the same tensor (ranges, sums, fixation lists) is computed once
(``memoised``, the ``shared_*`` helpers).  Means, norms and sums of ``x - min`` come from plain
sums (no centred or shifted copies) where the cancellation that invites is bounded
(CANCELLATION_BOUND), else from the copies.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache
from typing import TypeVar

import torch

from gazebench.metrics.base import GazeTargets

EPS = 2.2204e-16  # MATLAB's eps, as in the MIT saliency benchmark code
DOT_LINES = (32, 256)  # dot products cut rows into lines of 32 to 256 pixels (BLAS is slow past 256)
SEARCH_LINES = (16, 64)  # sparse searches skip empty lines of 16 to 64 pixels
CANCELLATION_BOUND = 1e4  # sums of x - min taken as sum(x) - P min while P |min| is at most this times the result

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


def working_dtype(device: torch.device) -> torch.dtype:
    """float64 for accuracy, except on ``mps`` which has no float64."""
    return torch.float32 if device.type == "mps" else torch.float64


def flat_maps(maps: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[B, H, W] -> [B, H*W] in the working dtype (may share memory with ``maps``)."""
    return maps.reshape(maps.shape[0], -1).to(dtype)


def check_shapes(maps: torch.Tensor, other: torch.Tensor) -> None:
    if maps.dim() != 3 or maps.shape != other.shape:
        raise ValueError(f"expected two [B, H, W] tensors of one shape, got {tuple(maps.shape)} and {tuple(other.shape)}")


def is_one_map(flat: torch.Tensor) -> bool:
    """Whether every row of [B, P] is the same memory (a map broadcast to the batch)."""
    return flat.shape[0] > 1 and flat.stride(0) == 0


def per_map(flat: torch.Tensor, reduce: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``reduce`` of [B, P] -> [B, ...], computed once when every row is one map."""
    if is_one_map(flat):
        once = reduce(flat[:1])
        return once.expand(flat.shape[0], *once.shape[1:])
    return reduce(flat)


def map_range(flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-map (min, max) [B]; both NaN when a pixel is NaN, so they also flag non-finite maps."""
    return per_map(flat, lambda rows: rows.amin(dim=1)), per_map(flat, lambda rows: rows.amax(dim=1))


def shared_range(targets: GazeTargets, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``map_range``, memoised for the chunk."""
    return memoised(targets, "range", flat, lambda: map_range(flat))


def shared_rescaled(targets: GazeTargets | None, flat: torch.Tensor) -> torch.Tensor:
    """The rows of [B, P], each whose largest |value| lies outside [2^-E, 2^E] multiplied by the power
    of two that brings it into [0.5, 1); ``flat`` itself when every row lies inside (the usual case).

    E is a quarter of the dtype's exponent range (256 in float64, 32 in float32), so that the
    squares and sums of the scale-invariant metrics (NSS, CC, KL, SIM, information gain) neither
    overflow nor underflow, whatever the maps' scale: a map times 1e-200 scores as the map.
    Multiplying by a power of two is exact, but for pixels that become subnormal (below
    2^-1022 of a map's largest value), too small to move those metrics.  The factor is applied
    in two halves (2^-e alone can overflow for a subnormal map).  Non-finite and all-zero rows are
    left as they are (their values are NaN anyway).  Memoised for the chunk.
    """

    def rescaled():
        low, high = shared_range(targets, flat)
        magnitude = torch.maximum(low.abs(), high.abs())
        exponent = torch.frexp(magnitude).exponent
        outside = torch.isfinite(magnitude) & (magnitude > 0) & (exponent.abs() > math.frexp(torch.finfo(flat.dtype).max)[1] // 4)
        if not bool(outside.any()):
            return flat
        shift = torch.where(outside, -exponent, 0)
        halves = [torch.ldexp(torch.ones_like(magnitude), part)[:, None] for part in (shift // 2, shift - shift // 2)]
        return per_map(flat, lambda rows: rows * halves[0][: len(rows)] * halves[1][: len(rows)])

    return memoised(targets, "rescaled", flat, rescaled)


def finite_non_constant(low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """[B] bool from the per-map (min, max): every pixel finite and at least two values (exact,
    not through a rounded std)."""
    return torch.isfinite(low) & torch.isfinite(high) & (high > low)


@lru_cache(maxsize=64)
def _line_length(n_pixels: int, lengths: tuple[int, int]) -> int:
    """The longest divisor of ``n_pixels`` within ``lengths`` (shortest, longest), else ``n_pixels``."""
    shortest, longest = lengths
    return next((length for length in range(min(longest, n_pixels), shortest - 1, -1) if n_pixels % length == 0), n_pixels)


def row_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[B, P] . [B, P] -> [B] through BLAS: a batch of short line-by-line dot products, summed.

    (One [1, P] x [P, 1] product per row is several times slower on CPU.)  When one side is one
    map broadcast to the batch, a single matrix-vector product.
    """
    if is_one_map(a) or is_one_map(b):
        return b @ a[0] if is_one_map(a) else a @ b[0]
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
        centred = per_map(flat, _centred)
        return centred, per_map(centred, lambda rows: torch.linalg.vector_norm(rows, dim=1))

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
        centred_squares = per_map(flat, lambda rows: torch.linalg.vector_norm(rows, dim=1).square_()) - total * mean
        if flat.dtype != torch.float64 or not bool((flat.shape[1] * mean * mean <= CANCELLATION_BOUND * centred_squares).all()):
            return None
        return mean, centred_squares.sqrt()

    return memoised(targets, "mean and norm", flat, mean_and_norm)


def shared_sum(targets: GazeTargets | None, flat: torch.Tensor) -> torch.Tensor:
    """[B] sums of the rows of [B, P] (once for a map shared by the batch), memoised for the chunk."""
    return memoised(targets, "sum", flat, lambda: per_map(flat, lambda rows: rows.sum(dim=1)))


def little_cancellation(low: torch.Tensor, total: torch.Tensor, n_pixels: int) -> bool:
    """Whether every row's ``n_pixels |min|`` is at most CANCELLATION_BOUND times its ``sum(x - min)``.

    Then ``sum(x) - n_pixels min`` and sums over ``x - min`` computed from ``x`` without the
    shifted copy lose at most ~CANCELLATION_BOUND float64 roundings relative to the total
    (~2e-12); False for NaN and in float32 (``mps``).
    """
    return low.dtype == torch.float64 and bool((n_pixels * low.abs() <= CANCELLATION_BOUND * total).all())


def shared_shifted_total(targets: GazeTargets, flat: torch.Tensor) -> torch.Tensor:
    """[B] sums of the rows of [B, P] minus their min, memoised for the chunk.

    ``sum(x) - P min`` (from the shared sums and ranges) when that cancels little
    (``little_cancellation``), else summed over the shifted rows (``shared_shifted``).
    """

    def total():
        low = shared_range(targets, flat)[0]
        fast = shared_sum(targets, flat) - flat.shape[1] * low
        return fast if little_cancellation(low, fast, flat.shape[1]) else shared_shifted(targets, flat)[1]

    return memoised(targets, "shifted total", flat, total)


def shared_shifted(targets: GazeTargets, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, P] rows minus their min and [B] their sums (no cancellation), memoised for the chunk."""

    def shifted_and_total():
        low = shared_range(targets, flat)[0]
        shifted = per_map(flat, lambda rows: rows - low[: len(rows), None])
        return shifted, per_map(shifted, lambda rows: rows.sum(dim=1))

    return memoised(targets, "shifted", flat, shifted_and_total)


def nan_where_invalid(values: torch.Tensor, valid: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """NaN where ``valid`` is False, cast to the dtype of ``like`` (float32 for integer maps)."""
    values = torch.where(valid, values, torch.full_like(values, math.nan))
    return values.to(like.dtype if like.is_floating_point() else torch.float32)


def per_row_sum(values: torch.Tensor, rows: torch.Tensor, n_rows: int) -> torch.Tensor:
    """[n_rows] sums of ``values`` grouped by their row index (``rows`` sorted, as nonzero gives them).

    Through a padded [n_rows, max per row] table rather than ``index_add_``, whose CUDA atomics
    would add in a varying order: the same inputs give the same bits on every device.
    """
    per_row = torch.bincount(rows, minlength=n_rows)
    width = max(int(per_row.max()) if len(rows) else 0, 1)
    rank = torch.arange(len(rows), device=rows.device) - (per_row.cumsum(0) - per_row)[rows]
    return values.new_zeros(n_rows, width).index_put_((rows, rank), values).sum(dim=1)


def is_distribution(flat_or_low: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """[B] bool: finite, non-negative pixels with a positive finite sum (NaN or inf makes the sum so).

    ``flat_or_low``: the [B, P] maps or their [B] minimums.
    """
    low = flat_or_low.amin(dim=1) if flat_or_low.dim() == 2 else flat_or_low
    return (low >= 0) & torch.isfinite(total) & (total > 0)


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


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """[B, N] -> float64 ranks 1..N along dim 1; tied values share their mean rank (scipy's 'average').

    A 1-D tensor [N] gives its ranks [N].
    """
    if values.dim() == 1:
        return average_ranks(values[None])[0]
    sorted_values, order = values.sort(dim=1)
    count = values.shape[1]
    positions = torch.arange(count, device=values.device).expand_as(order)
    starts = torch.ones_like(order, dtype=torch.bool)
    starts[:, 1:] = sorted_values[:, 1:] != sorted_values[:, :-1]
    ends = torch.ones_like(starts)
    ends[:, :-1] = starts[:, 1:]
    first = torch.where(starts, positions, 0).cummax(dim=1).values
    last = torch.where(ends, positions, count - 1).flip(1).cummin(dim=1).values.flip(1)
    tied_ranks = (first + last).double() / 2 + 1
    return torch.empty_like(tied_ranks).scatter_(1, order, tied_ranks)
