"""Map metrics against gaze: NSS, CC, KL and SSIM, batched in torch.

Definitions follow the MIT saliency benchmark (REFERENCES.md section 3); SSIM follows Wang et
al. 2004 with scikit-image's ``structural_similarity`` as the oracle.  Every metric takes maps,
gaze densities and fixation-count maps ``[B, H, W]`` and returns ``[B]`` values in the dtype of
``maps``; the arithmetic runs in float64 on the inputs' device (float32 on Apple ``mps``, which
has no float64).  A sample whose value is undefined -- non-finite pixels, a constant or all-zero
map, an all-zero density, no fixations -- gets NaN; other samples of the batch are unaffected.
"""

from __future__ import annotations

import math

import torch

from gazebench.metrics.base import Metric
from gazebench.registry import METRICS

EPS = 2.2204e-16  # MATLAB's eps, as in the MIT saliency benchmark code
SSIM_K1, SSIM_K2 = 0.01, 0.03  # Wang et al. 2004 stabilising constants
GAUSSIAN_TRUNCATE = 3.5  # skimage: an 11-tap window for sigma 1.5
UNIFORM_WINDOW = 7  # skimage's default window size


def _working_dtype(device: torch.device) -> torch.dtype:
    """float64 for accuracy, except on ``mps`` which has no float64."""
    return torch.float32 if device.type == "mps" else torch.float64


def _flat(maps: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[B, H, W] -> [B, H*W] in the working dtype (may share memory with ``maps``)."""
    return maps.reshape(maps.shape[0], -1).to(dtype)


def _check_shapes(maps: torch.Tensor, other: torch.Tensor) -> None:
    if maps.dim() != 3 or maps.shape != other.shape:
        raise ValueError(f"expected two [B, H, W] tensors of one shape, got {tuple(maps.shape)} and {tuple(other.shape)}")


def _range(flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-map (min, max) [B]; both NaN when a pixel is NaN, so they also flag non-finite maps."""
    return flat.amin(dim=1), flat.amax(dim=1)


def _finite_non_constant(flat: torch.Tensor) -> torch.Tensor:
    """[B] bool: every pixel finite and at least two values (exact, not through a rounded std)."""
    low, high = _range(flat)
    return torch.isfinite(low) & torch.isfinite(high) & (high > low)


def _row_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[B, P] . [B, P] -> [B] through BLAS (no [B, P] temporary)."""
    return (a.unsqueeze(1) @ b.unsqueeze(2)).view(-1)


def _centred(flat: torch.Tensor) -> torch.Tensor:
    """A new [B, P] tensor: each row minus its mean."""
    return flat - flat.mean(dim=1, keepdim=True)


def _result(values: torch.Tensor, valid: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """NaN where ``valid`` is False, cast to the dtype of ``like`` (float32 for integer maps)."""
    values = torch.where(valid, values, torch.full_like(values, math.nan))
    return values.to(like.dtype if like.is_floating_point() else torch.float32)


@METRICS.register("nss")
class NSS(Metric):
    """Normalized Scanpath Saliency: the z-scored map averaged over fixations.

    Each map is z-scored over its pixels with the population std (divisor H*W, no epsilon), then
    averaged over fixated pixels weighted by their fixation count: a pixel fixated twice counts
    twice, so the value is the mean z-score over fixations, not over fixated pixels.  NaN for a
    constant (or all-zero) map, non-finite pixels, or no fixations.
    """

    name = "nss"
    needs = ("fixations",)
    higher_is_better = True
    value_range = (-math.inf, math.inf)

    def compute(self, maps, targets):
        _check_shapes(maps, targets.fixations)
        dtype = _working_dtype(maps.device)
        saliency, counts = _flat(maps, dtype), _flat(targets.fixations, dtype)
        centred = _centred(saliency)
        std = torch.sqrt(_row_dot(centred, centred) / saliency.shape[1])
        n_fixations = counts.sum(dim=1)
        values = _row_dot(centred, counts) / (std * n_fixations)
        valid = _finite_non_constant(saliency) & torch.isfinite(n_fixations) & (n_fixations > 0)
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
        saliency_c, gaze_c = _centred(saliency), _centred(gaze)
        scale = torch.sqrt(_row_dot(saliency_c, saliency_c) * _row_dot(gaze_c, gaze_c))
        values = (_row_dot(saliency_c, gaze_c) / scale).clamp(-1.0, 1.0)
        valid = _finite_non_constant(saliency) & _finite_non_constant(gaze)
        return _result(values, valid, maps)


@METRICS.register("kl")
class KL(Metric):
    """KL divergence of the gaze density G from the saliency map S (lower is better).

    Both are divided by their sum (no epsilon), then ``sum(G * log(eps + G / (S + eps)))`` with
    ``eps`` = 2.2204e-16 (setting ``eps``), as in the MIT saliency benchmark.  NaN when either
    map has non-finite or negative pixels (it is not a distribution) or sums to zero.
    """

    name = "kl"
    needs = ("density",)
    higher_is_better = False
    value_range = (0.0, math.inf)
    default_settings = {"eps": EPS}

    def compute(self, maps, targets):
        density = targets.density
        _check_shapes(maps, density)
        dtype = _working_dtype(maps.device)
        eps = self.settings["eps"]
        saliency, gaze = _flat(maps, dtype), _flat(density, dtype)
        saliency_sum, gaze_sum = saliency.sum(dim=1), gaze.sum(dim=1)
        gaze = gaze / gaze_sum[:, None]
        log_ratio = (saliency / saliency_sum[:, None]).add_(eps)  # S + eps, a new tensor
        torch.div(gaze, log_ratio, out=log_ratio).add_(eps).log_()  # log(eps + G / (S + eps))
        values = _row_dot(gaze, log_ratio)
        valid = _is_distribution(saliency, saliency_sum) & _is_distribution(gaze, gaze_sum)
        return _result(values, valid, maps)


def _is_distribution(flat: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """[B] bool: finite, non-negative pixels with a positive sum (NaN makes ``amin`` NaN)."""
    low, high = _range(flat)
    return (low >= 0) & torch.isfinite(high) & (total > 0)


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
    min-maxed maps (``structural_similarity(s, g, data_range=1.0)`` for the uniform window).
    NaN for non-finite pixels, an all-zero map or density, and, with ``minmax``, a constant one.
    """

    name = "ssim"
    needs = ("density",)
    higher_is_better = True
    value_range = (-1.0, 1.0)
    default_settings = {"window": "gaussian", "sigma": 1.5, "data_range": 1.0, "minmax": True}

    def __init__(self, **settings):
        super().__init__(**settings)
        if self.settings["window"] not in ("gaussian", "uniform"):
            raise ValueError(f"ssim: window must be 'gaussian' or 'uniform', got {self.settings['window']!r}")

    def compute(self, maps, targets):
        density = targets.density
        _check_shapes(maps, density)
        dtype = _working_dtype(maps.device)
        moments = _moment_stack(maps.to(dtype), density.to(dtype), self.settings["minmax"])
        valid = _ssim_defined(moments[:, 0]) & _ssim_defined(moments[:, 1])
        window, covariance_norm = self._window(dtype, maps.device)
        values = _mean_ssim(moments, window, covariance_norm, self.settings["data_range"])
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
    offsets = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    weights = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return weights / weights.sum()


def _moment_stack(x: torch.Tensor, y: torch.Tensor, minmax: bool) -> torch.Tensor:
    """[B, 5, H, W] buffer holding x, y, x*x, y*y, x*y (x, y min-maxed to [0, 1] if asked).

    One buffer so that the window filters all five at once; with ``minmax`` a constant map
    becomes NaN (0 / 0), which ``_ssim_defined`` turns into a NaN value.
    """
    stack = torch.empty((x.shape[0], 5, *x.shape[1:]), dtype=x.dtype, device=x.device)
    for slot, image in enumerate((x, y)):
        stack[:, slot] = image
        if minmax:
            low = image.amin(dim=(1, 2), keepdim=True)
            high = image.amax(dim=(1, 2), keepdim=True)
            stack[:, slot].sub_(low).div_(high - low)
    torch.mul(stack[:, 0], stack[:, 0], out=stack[:, 2])
    torch.mul(stack[:, 1], stack[:, 1], out=stack[:, 3])
    torch.mul(stack[:, 0], stack[:, 1], out=stack[:, 4])
    return stack


def _ssim_defined(maps: torch.Tensor) -> torch.Tensor:
    """[B] bool: finite and not all zero (a min-maxed constant map is all NaN, so not finite)."""
    low, high = _range(maps.flatten(1))
    return torch.isfinite(low) & torch.isfinite(high) & ((low != 0) | (high != 0))


def _band_matrix(length: int, window: torch.Tensor) -> torch.Tensor:
    """[length, length-K+1] matrix whose column j holds ``window`` at rows j..j+K-1."""
    size = window.numel()
    offsets = torch.arange(length, device=window.device)[:, None] - torch.arange(length - size + 1, device=window.device)
    inside = (offsets >= 0) & (offsets < size)
    return torch.where(inside, window[offsets.clamp(0, size - 1)], torch.zeros((), dtype=window.dtype, device=window.device))


def _filter_valid(stack: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Separable 'valid' filtering of [..., H, W] -> [..., H-K+1, W-K+1] with a 1-D window.

    The two 1-D passes are products with banded matrices: identical sums to a 'valid'
    convolution, but BLAS matmul runs several times faster than float64 ``conv2d`` on CPU.
    """
    height, width = stack.shape[-2:]
    size = window.numel()
    if height < size or width < size:
        raise ValueError(f"ssim: maps of {height}x{width} are smaller than the {size}x{size} window")
    return _band_matrix(height, window).T @ (stack @ _band_matrix(width, window))


def _mean_ssim(moments: torch.Tensor, window: torch.Tensor, covariance_norm: float, data_range: float) -> torch.Tensor:
    """Mean of the SSIM map over the valid (cropped) region, from the [B, 5, H, W] moment stack -> [B].

    In-place arithmetic on the filtered moments keeps memory at one [B, 5, H', W'] tensor.
    """
    mean_x, mean_y, mean_xx, mean_yy, mean_xy = _filter_valid(moments, window).unbind(dim=1)
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    mean_product = mean_x * mean_y
    mean_square_sum = mean_x.square().add_(mean_y.square())
    covariance = mean_xy.sub_(mean_product).mul_(covariance_norm)
    variance_sum = mean_xx.add_(mean_yy).sub_(mean_square_sum).mul_(covariance_norm)
    numerator = mean_product.mul_(2).add_(c1).mul_(covariance.mul_(2).add_(c2))
    denominator = mean_square_sum.add_(c1).mul_(variance_sum.add_(c2))
    return numerator.div_(denominator).mean(dim=(1, 2))
