"""Localisation metrics: Otsu-IoU and hit rate against a mask (CheXlocalize / SHAMSUL protocol).

The map is scored against ``targets.mask`` (a lesion, evidence or region mask ``[B, H, W]``):

- ``iou``: the map is min-maxed to [0, 1], binarised with Otsu's threshold (foreground = pixels
  strictly above it, scikit-image's convention), and compared with the mask by intersection
  over union.
- ``hit_rate``: 1.0 when the map's maximum lies inside the mask, else 0.0 (a pointing game).

Both give NaN for an empty mask (never a hit: Quantus 0.6 scores an empty mask as a hit, we do
not), and for a map that is constant (all-zero included) or holds non-finite pixels.  The
results are those of float64 arithmetic on the maps' device (float32 on ``mps``); the Otsu
masks and IoU counts get there through float32 candidates and an exact float64 recheck of
the few pixels near a bin boundary (``MinMaxCodes``), not a float64 copy.  CheXlocalize itself
quantises the map to uint8 and uses OpenCV's Otsu; gazebench uses scikit-image's 256-bin
floating-point Otsu (``threshold_otsu``), which ``otsu_thresholds`` reproduces exactly.
"""

from __future__ import annotations

import math

import torch

from gazebench.metrics.base import Metric
from gazebench.metrics.ops import check_shapes, flat_maps, map_range, nan_where_invalid, shared_rescaled, working_dtype
from gazebench.registry import METRICS

OTSU_BINS = 256  # scikit-image's default ``nbins``


def otsu_thresholds(maps: torch.Tensor, nbins: int = OTSU_BINS) -> torch.Tensor:
    """Otsu's threshold of each map ``[B, H, W]`` -> ``[B]`` float64, equal to ``skimage.filters.threshold_otsu``.

    Per map, as scikit-image 0.2x does it on the map in float64: a histogram of ``nbins`` equal
    bins over [min, max] with ``numpy.histogram``'s edges and bin assignment; for every split
    after bin ``k`` the between-class variance ``w1 * w2 * (m1 - m2)^2`` (class weights are pixel
    counts, their product rounded to float32 as skimage does; class means use the bin centres);
    the threshold is the centre of the first bin that maximises it.  Bins that hold no pixel are
    skipped: their variance equals the previous bin's, so skimage's first argmax never picks
    them, and skipping them keeps the choice independent of the cumulative sums' rounding order
    (GPUs).  Exact on CPU for maps of fewer than 2**24 pixels.  A constant map's threshold is its
    value (as skimage's); a map with a non-finite pixel gets NaN.
    """
    flat = flat_maps(maps, working_dtype(maps.device))
    low, high = map_range(flat)
    finite = torch.isfinite(low) & torch.isfinite(high)
    spread = finite & (high > low)
    # maps without spread get a harmless stand-in (all zero on [0, 1]); their value is replaced below
    stand_in = torch.where(spread[:, None], flat, torch.zeros((), dtype=flat.dtype, device=flat.device))
    counts, centres = numpy_histogram(stand_in, torch.where(spread, low, 0.0), torch.where(spread, high, 1.0), nbins)
    thresholds = centres.gather(1, _otsu_bin(counts, centres)[:, None]).squeeze(1)
    constant_value = torch.where(finite, low, torch.full_like(low, math.nan))
    return torch.where(spread, thresholds, constant_value)


def numpy_histogram(flat: torch.Tensor, low: torch.Tensor, high: torch.Tensor, nbins: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row ``numpy.histogram(row, bins=nbins)`` of [B, P] over [low, high] -> (counts [B, nbins] int64, centres [B, nbins]).

    Edges as ``numpy.linspace`` builds them (``k * (high - low) / nbins + low``, the last edge
    exactly ``high``); a value goes to bin ``trunc((x - low) / (high - low) * nbins)``, then one
    bin down if it lies below that bin's left edge and one up if it reaches the right edge
    (except in the last bin, which is closed), exactly numpy's correction for rounding.
    """
    batch = flat.shape[0]
    width = high - low
    steps = torch.arange(nbins + 1, dtype=flat.dtype, device=flat.device)
    edges = steps[None, :] * (width / nbins)[:, None] + low[:, None]
    edges[:, -1] = high
    index = ((flat - low[:, None]) / width[:, None] * nbins).long().clamp_(0, nbins - 1)
    index -= (flat < edges.gather(1, index)).long()
    index += ((flat >= edges.gather(1, index + 1)) & (index != nbins - 1)).long()
    offsets = torch.arange(batch, device=flat.device)[:, None] * nbins
    counts = torch.bincount((index + offsets).flatten(), minlength=batch * nbins).view(batch, nbins)
    centres = (edges[:, :-1] + edges[:, 1:]) / 2.0
    return counts, centres


def _otsu_bin(counts: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Index [B] of the first bin after which a split maximises the between-class variance (skimage's formula)."""
    moments = counts.to(centres.dtype) * centres
    weight_low = counts.cumsum(1)
    weight_high = counts.flip(1).cumsum(1).flip(1)
    mean_low = moments.cumsum(1) / weight_low
    mean_high = (moments.flip(1).cumsum(1) / counts.flip(1).cumsum(1)).flip(1)
    weight_product = (weight_low[:, :-1].float() * weight_high[:, 1:].float()).to(centres.dtype)  # float32, as skimage
    variance = weight_product * (mean_low[:, :-1] - mean_high[:, 1:]).square()
    occupied = counts[:, :-1] > 0
    occupied[:, 0] = True
    variance = torch.where(occupied, variance, torch.full_like(variance, -math.inf))
    return variance.argmax(dim=1)


def otsu_masks(maps: torch.Tensor, nbins: int = OTSU_BINS) -> tuple[torch.Tensor, torch.Tensor]:
    """Binarise each map with Otsu -> (masks ``[B, H, W]`` bool, valid ``[B]`` bool).

    Each map is min-maxed to [0, 1] by (x - min) / (max - min) (no epsilon), in float64; the mask
    holds the pixels strictly above ``otsu_thresholds`` of the min-maxed map (skimage's
    ``image > threshold_otsu(image)``).  It is never empty for a valid map: the maximum (1.0)
    lies above every candidate threshold.  ``valid`` is False for a constant (all-zero
    included) or non-finite map; its mask is all False.  Computed from exact half-bin codes
    (``MinMaxCodes``) for ``nbins`` a power of two up to 512, else through a float64 copy.
    """
    if not _codes_apply(nbins):
        return _otsu_masks_float64(maps, nbins)
    codes = MinMaxCodes(maps, None, nbins)
    split = _otsu_bin(codes.otsu_counts(), codes.centres())
    masks = codes.above_half_bin(2 * split + 1)
    return masks.view(maps.shape), codes.valid


def _otsu_masks_float64(maps: torch.Tensor, nbins: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``otsu_masks`` the plain way: a min-maxed float64 copy, ``otsu_thresholds`` of it, one comparison."""
    flat = flat_maps(maps, working_dtype(maps.device))
    low, high = map_range(flat)
    valid = torch.isfinite(low) & torch.isfinite(high) & (high > low)
    scaled = (flat - low[:, None]) / (high - low)[:, None]
    thresholds = otsu_thresholds(scaled.view(maps.shape), nbins)
    masks = (scaled > thresholds[:, None]) & valid[:, None]
    return masks.view(maps.shape), valid


FRACTION_BITS = 12  # a float32 candidate carries 2**12 steps per half bin; one step either side of a boundary is rechecked
SAFE_SPREAD = (2.0**-100, 2.0**100)  # max - min of a map binned through float32 candidates; others are all rechecked
CHUNK_PIXELS = 1 << 20  # ``iou`` scores a batch this many pixels at a time: bounded work buffers, fewer cache misses and page faults


def _codes_apply(nbins: int) -> bool:
    """Whether ``nbins`` suits ``MinMaxCodes``: a power of two (exact edges k / nbins) and small enough for its margin."""
    return 2 <= nbins <= 512 and nbins & (nbins - 1) == 0


class MinMaxCodes:
    """Exact half-bin codes of the min-maxed maps, counted per map and per target class, without a float64 copy.

    For ``nbins = N`` a power of two, ``numpy.histogram``'s edges over the min-maxed map (min 0,
    max 1 exactly) are exactly ``k / N`` and the bin centres ``(2k + 1) / 2N``; with
    ``v = 2N * s`` (``s`` the float64 min-maxed pixel, as the reference computes it) a pixel's
    code is ``2v`` when ``v`` is an integer, else ``2 floor(v) + 1``, in 0..4N.  The code decides
    everything: the Otsu bin is ``min(code // 4, N - 1)`` and the pixel lies strictly above
    centre ``(2k + 1) / 2N`` exactly when ``code > 4k + 2``.

    Candidates, float32 passes: ``q = trunc(fl32(fl32(x - min) * fl32(2**12 * 2N / (max - min))))``
    (float64 maps subtract in float64 first), i.e. ``v`` in steps of 2**-12.  Error margin: the
    three float32 roundings are relative errors of at most u = 2**-24 each, the float64 ones
    (``max - min``, the division, a float64 map's subtraction, and the reference's own three)
    add 6 * 2**-53, so ``|q / 2**12 - v| <= v * 3.01 u <= 2N * 3.01 u <= 3.01 * 2**-14`` for
    N <= 512.  ``SAFE_SPREAD`` keeps every float32 value finite and the scale below 2**110 per
    unit of ``v``, so a subnormal ``x - min``, even flushed to zero (absolute error 2**-126),
    adds at most 2**-16: the total stays below one step, 2**-12.  Hence when ``q mod 2**12``
    lies in 1..2**12 - 2 (``q / 2**12`` at least one step from both integers around it), ``v``
    lies strictly between ``q >> 12`` and ``(q >> 12) + 1`` and the code is ``2 (q >> 12) + 1``.
    The other pixels (about 2 in 4096 for smooth maps, all of a map quantised onto bin edges,
    all of a map whose spread is outside ``SAFE_SPREAD``) are recomputed in float64 exactly as
    the reference does.  So the counts equal ``numpy.histogram``'s on the float64 min-maxed map.
    Invalid (constant or non-finite) maps get a harmless stand-in and ``valid`` False.  On
    ``mps`` (no float64) the exact arithmetic is float32.
    """

    def __init__(self, maps: torch.Tensor, inside: torch.Tensor | None, nbins: int):
        self.nbins, self.batch = nbins, maps.shape[0]
        exact_dtype = working_dtype(maps.device)
        flat = maps.reshape(self.batch, -1)
        flat = flat if flat.dtype == torch.float32 else flat.to(exact_dtype)
        low, high = map_range(flat)
        self.low, self.spread = low.to(exact_dtype), high.to(exact_dtype) - low.to(exact_dtype)
        self.valid = torch.isfinite(self.low) & torch.isfinite(self.spread) & (self.spread > 0)
        self.candidates = self._candidates(flat, low)
        scratch = torch.empty_like(self.candidates)
        self.uncertain = self._uncertain_positions(scratch)
        self.exact = self._exact_codes(flat, exact_dtype)
        self.counts = self._count(scratch, inside)

    def _candidates(self, flat: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        """[B, P] int32 ``q`` (see the class); rows outside ``SAFE_SPREAD`` get 0 (all rechecked), invalid rows a mid-step stand-in."""
        safe = self.valid & (self.spread >= SAFE_SPREAD[0]) & (self.spread <= SAFE_SPREAD[1])
        steps = float((2 * self.nbins) << FRACTION_BITS)
        scale = (steps / torch.where(safe, self.spread, torch.ones_like(self.spread))).float()
        work = torch.sub(flat, low[:, None]) if flat.dtype == torch.float32 else (flat - low[:, None]).float()
        work.mul_(scale[:, None])
        candidates = work.view(torch.int32)
        candidates.copy_(work)  # truncation into the same memory: one buffer, elementwise in place
        candidates.index_fill_(0, (~self.valid).nonzero().squeeze(1), 1 << (FRACTION_BITS - 1))  # touches those rows only
        candidates.index_fill_(0, (self.valid & ~safe).nonzero().squeeze(1), 0)
        return candidates

    def _uncertain_positions(self, scratch: torch.Tensor) -> torch.Tensor:
        """Flat positions (ascending) of the candidates within one step of a half-bin boundary: ``(q + 1) & (2**12 - 2) == 0``."""
        torch.add(self.candidates, 1, out=scratch)
        scratch.bitwise_and_((1 << FRACTION_BITS) - 2)
        numel = scratch.numel()
        flags = torch.empty(numel + (-numel) % 8, dtype=torch.bool, device=scratch.device)
        flags[numel:] = False
        torch.eq(scratch.view(-1), 0, out=flags[:numel])
        words = flags.view(torch.int64).nonzero().squeeze(1)  # 8 flags a word: nonzero on an eighth of the data
        positions = (words[:, None] * 8 + torch.arange(8, device=words.device)).view(-1)
        return positions[flags[positions]]

    def _exact_codes(self, flat: torch.Tensor, exact_dtype: torch.dtype) -> torch.Tensor:
        """Codes [K] of the uncertain pixels from the reference's own arithmetic: v = (x - min) / (max - min) * 2N."""
        rows = self.uncertain // flat.shape[1]
        scaled = (flat.reshape(-1)[self.uncertain].to(exact_dtype) - self.low[rows]) / self.spread[rows]
        half_bins = scaled * (2 * self.nbins)
        floor = half_bins.floor()
        return torch.where(half_bins == floor, 2 * floor, 2 * floor + 1).long()

    def _count(self, scratch: torch.Tensor, inside: torch.Tensor | None) -> torch.Tensor:
        """[B, 2, 4N + 1] int64: pixels per code, outside (0) and inside (1) the target mask."""
        slots = 2 * self.nbins + 1  # q >> 12 lies in 0..2N
        torch.bitwise_right_shift(self.candidates, FRACTION_BITS, out=scratch)
        inside_flat = None if inside is None else inside.reshape(self.batch, -1).view(torch.uint8)
        if inside_flat is not None:
            scratch.add_(inside_flat, alpha=slots)
        scratch.add_(torch.arange(self.batch, dtype=scratch.dtype, device=scratch.device)[:, None] * (2 * slots))
        certain = torch.bincount(scratch.view(-1), minlength=self.batch * 2 * slots)
        certain.index_add_(0, scratch.view(-1)[self.uncertain].long(), torch.full_like(self.uncertain, -1))
        width = 4 * self.nbins + 1
        classes = 0 if inside_flat is None else inside_flat.reshape(-1)[self.uncertain].long()
        exact_slots = (self.uncertain // scratch.shape[1]) * (2 * width) + classes * width + self.exact
        counts = torch.bincount(exact_slots, minlength=self.batch * 2 * width).view(self.batch, 2, width)
        counts[..., 1:-1:2] += certain.view(self.batch, 2, slots)[..., :-1]
        return counts

    def otsu_counts(self) -> torch.Tensor:
        """[B, N] int64 ``numpy.histogram`` counts of the min-maxed maps: code // 4, the last edge (code 4N) in the last bin."""
        both = self.counts.sum(dim=1)
        counts = both[:, :-1].reshape(self.batch, self.nbins, 4).sum(dim=2)
        counts[:, -1] += both[:, -1]
        return counts

    def centres(self) -> torch.Tensor:
        """[B, N] bin centres (2k + 1) / 2N, exact."""
        centres = (2 * torch.arange(self.nbins, dtype=working_dtype(self.counts.device), device=self.counts.device) + 1) / (2 * self.nbins)
        return centres.expand(self.batch, -1)

    def counts_above(self, half_bin: torch.Tensor) -> torch.Tensor:
        """[B, 2] pixels per class strictly above half-bin boundary ``half_bin`` [B] (code > 2 * half_bin)."""
        tail = self.counts.flip(2).cumsum(2).flip(2)
        return tail.gather(2, (2 * half_bin + 1)[:, None, None].expand(-1, 2, 1)).squeeze(2)

    def above_half_bin(self, half_bin: torch.Tensor) -> torch.Tensor:
        """[B, P] bool: pixels strictly above half-bin boundary ``half_bin`` [B]; all False in invalid maps."""
        above = self.candidates >= (half_bin.to(self.candidates.dtype) << FRACTION_BITS)[:, None]
        rows = self.uncertain // above.shape[1]
        above.view(-1)[self.uncertain] = self.exact > 2 * half_bin[rows]
        above.index_fill_(0, (~self.valid).nonzero().squeeze(1), False)
        return above


def _mask_rows(maps: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The target mask as [B, P] bool (non-zero = inside; a bool mask is a view, not a copy) and whether each row holds a pixel."""
    check_shapes(maps, mask)
    inside = mask.reshape(mask.shape[0], -1)
    inside = inside if inside.dtype == torch.bool else inside != 0
    return inside, inside.view(torch.uint8).amax(dim=1) > 0


@METRICS.register("iou")
class OtsuIoU(Metric):
    """Intersection over union of the map's Otsu mask with the target mask (CheXlocalize).

    Steps: min-max the map to [0, 1]; threshold it with Otsu (``otsu_masks``: 256 bins,
    foreground = strictly above the threshold); IoU = |Otsu mask AND mask| / |Otsu mask OR mask|.
    NaN when the mask is empty, or the map is constant (all-zero included) or non-finite.  A
    float64 map far from 1 is first rescaled by an exact power of two (``ops.shared_rescaled``):
    max - min then cannot overflow, and min-maxing leaves the value unchanged.
    """

    name = "iou"
    needs = ("mask",)
    higher_is_better = True
    value_range = (0.0, 1.0)

    def compute(self, maps, targets):
        inside, _ = _mask_rows(maps, targets.mask)
        if maps.dtype == torch.float64:  # max - min can overflow: maps far from 1 are rescaled (exactly) first
            maps = shared_rescaled(targets, flat_maps(maps, torch.float64)).view(maps.shape)
        rows = max(1, CHUNK_PIXELS // inside.shape[1])
        return torch.cat([self._iou(maps[start : start + rows], inside[start : start + rows]) for start in range(0, maps.shape[0], rows)])

    @staticmethod
    def _iou(maps: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
        """[B] IoU of maps [B, H, W] with target rows inside [B, P] bool (NaN where invalid)."""
        codes = MinMaxCodes(maps, inside, OTSU_BINS)
        split = _otsu_bin(codes.otsu_counts(), codes.centres())
        outside_above, inside_above = codes.counts_above(2 * split + 1).unbind(1)
        target_size = codes.counts[:, 1].sum(dim=1)
        dtype = working_dtype(maps.device)
        iou = inside_above.to(dtype) / (outside_above + target_size).to(dtype)
        return nan_where_invalid(iou, codes.valid & (target_size > 0), maps)


@METRICS.register("hit_rate")
class HitRate(Metric):
    """Pointing game: 1.0 when the map's maximum lies inside the mask, else 0.0.

    The maximum is the first maximal pixel in row-major order (``argmax``, as CheXlocalize's
    ``np.argmax``): a tie is decided by one fixed pixel, so a flat plateau of maxima earns no
    more hits than a single peak (a rule of "any maximal pixel inside" would reward saturated
    maps for their size).  No min-max is needed (it keeps the argmax).  NaN, never a hit, when
    the mask is empty; NaN for a constant (all-zero included) or non-finite map.
    """

    name = "hit_rate"
    needs = ("mask",)
    higher_is_better = True
    value_range = (0.0, 1.0)

    def compute(self, maps, targets):
        target, has_target = _mask_rows(maps, targets.mask)
        flat = maps.reshape(maps.shape[0], -1)
        flat = flat if flat.is_floating_point() else flat.to(working_dtype(maps.device))  # order-preserving, no copy for floats
        high, peak = flat.max(dim=1, keepdim=True)  # the first maximal pixel, as documented for torch.max
        low = flat.amin(dim=1)
        valid = torch.isfinite(low) & torch.isfinite(high[:, 0]) & (high[:, 0] > low) & has_target
        hits = target.gather(1, peak).squeeze(1).to(working_dtype(maps.device))
        return nan_where_invalid(hits, valid, maps)
