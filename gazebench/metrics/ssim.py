"""SSIM between maps and gaze densities (Wang et al. 2004), batched in torch.

scikit-image's ``structural_similarity`` is the oracle.  As the metrics of ``map_metrics``, SSIM
takes maps and gaze densities ``[B, H, W]`` and returns ``[B]`` values in the dtype of ``maps``,
NaN for a sample whose value is undefined (other samples of the batch are unaffected); its
filtering and per-pixel formula run in float32, the rest in float64 on the inputs' device
(float32 on Apple ``mps``), see ``SSIM``.

On CPU tensors SSIM runs through a fused per-image kernel (``cpu_kernels.ssim_means``, compiled
with numba), which the tests hold to the torch code below; the torch code -- one depthwise
convolution over a stack of the four moments, in batches of maps (SSIM_STACK_BYTES) and bands of
rows (TILE_BYTES) that stay near the caches -- runs on every other device.  Ranges and sums of
the maps come from ``ops`` (memoised for the chunk within ``score_maps``).
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F

from gazebench.metrics import cpu_kernels
from gazebench.metrics.base import Metric
from gazebench.metrics.ops import check_shapes, flat_maps, nan_where_invalid, shared_range, shared_sum, working_dtype
from gazebench.registry import METRICS

SSIM_K1, SSIM_K2 = 0.01, 0.03  # Wang et al. 2004 stabilising constants
GAUSSIAN_TRUNCATE = 3.5  # skimage: an 11-tap window for sigma 1.5
UNIFORM_WINDOW = 7  # skimage's default window size
SSIM_STACK_BYTES = 7 << 20  # SSIM filters its moments in batches of maps of about this many bytes on CPU (8 maps of 224 x 224)
TILE_BYTES = 1 << 22  # elementwise chains run over bands of about this many bytes (measured: 2-4 MiB best with 2 threads)


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
    to within 1e-6 in absolute value (measured: at most 5e-7 over random, squared-random and
    smooth maps of 24-448 px for both windows, sigma 1-2.5, with and without ``minmax``, on both
    paths; typically 1e-8-1e-7; smooth maps, whose local variances are small next to C2, are the
    worst; tests/metrics/test_ssim_agreement.py).  The
    float32 filtering sets this limit: the filtering and the per-pixel formula run in float32 (on
    CPU tensors a fused per-image kernel, ``cpu_kernels.ssim_means``; elsewhere a depthwise
    convolution) on maps first centred on their mean in float64, which keeps the float32 moments
    small, with float32 taps that sum to exactly 1 (``summing_to_one``); the mean over pixels is
    accumulated in float64.
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
        check_shapes(maps, density)
        window, covariance_norm = self._window(torch.float32, maps.device)
        size = window.numel()
        if min(maps.shape[1:]) < size:
            raise ValueError(f"ssim: maps of {maps.shape[1]}x{maps.shape[2]} are smaller than the {size}x{size} window")
        dtype = working_dtype(maps.device)
        images = [flat_maps(image, dtype) for image in (maps, density)]
        ranges = [shared_range(targets, image) for image in images]
        valid = _ssim_defined(*ranges[0], self.settings["minmax"]) & _ssim_defined(*ranges[1], self.settings["minmax"])
        means = [shared_sum(targets, image) / image.shape[1] for image in images]
        c2 = (SSIM_K2 * self.settings["data_range"]) ** 2 / covariance_norm
        affine = [_centring(low, high, mean, self.settings["minmax"]) for (low, high), mean in zip(ranges, means)]
        if cpu_kernels.applies(maps, density):
            c1 = (SSIM_K1 * self.settings["data_range"]) ** 2
            table = torch.stack([column for slot in affine for column in slot], dim=1)
            values = cpu_kernels.ssim_means(maps, density, table, window, c1, (c2, c2 / 2), valid)
            return nan_where_invalid(values, valid, maps)
        values = torch.empty(len(maps), dtype=dtype, device=maps.device)
        for part in _ssim_batches(len(maps), maps.shape[1] * maps.shape[2], maps.device):
            pick = [image[part] for image in images], [tuple(column[part] for column in slot) for slot in affine]
            moments, offsets = _moment_stack(*pick, maps.shape[1:], c2)
            values[part] = _mean_ssim(_filter_valid(moments, window), offsets, self.settings["data_range"])
        return nan_where_invalid(values, valid, maps)

    def _window(self, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, float]:
        """The 1-D window (sums to 1 as nearly as ``dtype`` allows, ``summing_to_one``) and the covariance
        normalisation skimage pairs with it."""
        if self.settings["window"] == "uniform":
            size = UNIFORM_WINDOW
            return summing_to_one(torch.full((size,), 1.0 / size, dtype=torch.float64), dtype, device), size**2 / (size**2 - 1)
        return summing_to_one(gaussian_window(self.settings["sigma"]), dtype, device), 1.0


def gaussian_window(sigma: float, dtype=torch.float64, device=None) -> torch.Tensor:
    """scipy.ndimage's 1-D Gaussian kernel: radius int(3.5 sigma + 0.5), normalised to sum 1."""
    radius = int(GAUSSIAN_TRUNCATE * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64, device=device)
    weights = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return (weights / weights.sum()).to(dtype)


def summing_to_one(weights: torch.Tensor, dtype: torch.dtype, device: torch.device | None = None) -> torch.Tensor:
    """A symmetric float64 window (sums to 1) rounded to ``dtype``, its end taps and then its centre tap
    set so that the taps sum to 1 as nearly as ``dtype`` allows (the window stays symmetric).

    A window summing to 1 + e biases every local variance E[x^2] - E[x]^2 by about e E[x]^2,
    which C2 (9e-4) does not hide: the box's taps 1/7 rounded to float32 sum to 1 + 4.5e-8, and
    SSIM with them was up to 1e-5 from skimage on smooth maps; corrected, they sum to exactly 1.
    """
    taps = weights.to(dtype)
    end, centre = len(taps) - 1, len(taps) // 2
    if end > centre:
        taps[0] = taps[end] = ((1 - taps[1:end].double().sum()) / 2).to(dtype)
    taps[centre] = (1 - (taps.double().sum() - taps[centre].double())).to(dtype)
    return taps.to(device)


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
    return 4 * numerator.div_(denominator).sum(dim=(1, 2), dtype=working_dtype(means.device))
