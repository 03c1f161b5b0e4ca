"""Centre bias: the baseline map B and the centre-bias-corrected metrics.

Gaze piles up at the image centre whatever the image shows, so a map can agree with gaze just by
being central.  B is the training split's mean gaze density (``mean_density``) or, without a
training split, a centred Gaussian (``gaussian_centre_bias``).  ``cc_cb``, ``nss_cb``, ``sim_cb``
and ``kl_cb`` report the base metric of the map minus the base metric of B (the same B for every
map of the batch) against the same targets: above 0 (below 0 for KL) means better than the
centre bias alone.
"""

from __future__ import annotations

import torch

from gazebench.metrics.base import Metric
from gazebench.metrics.map_metrics import CC, KL, NSS, SIM
from gazebench.metrics.ops import centre_bias_like, working_dtype
from gazebench.metrics.scoring import metric_values
from gazebench.registry import METRICS


def gaussian_centre_bias(height: int, width: int, sigma_fraction: float = 0.25, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """[H, W] isotropic Gaussian at the image centre, sigma = sigma_fraction * min(H, W), summing to 1.

    Pixel (i, j) sits at its centre; the image centre is ((H - 1) / 2, (W - 1) / 2).
    """
    if sigma_fraction <= 0:
        raise ValueError(f"sigma_fraction must be positive, got {sigma_fraction}")
    sigma = sigma_fraction * min(height, width)
    rows = torch.arange(height, dtype=torch.float64) - (height - 1) / 2
    cols = torch.arange(width, dtype=torch.float64) - (width - 1) / 2
    density = torch.exp(-0.5 * (rows[:, None] ** 2 + cols[None, :] ** 2) / sigma**2)
    return (density / density.sum()).to(dtype)


def mean_density(densities: torch.Tensor) -> torch.Tensor:
    """[N, H, W] gaze densities -> their mean [H, W], the centre bias of a training split.

    Each density is divided by its sum (they should already sum to 1), in float64; all-zero
    densities (images without gaze) and non-finite ones are skipped.  The result sums to 1, in
    the input's dtype.
    Raises ValueError when no density is left.
    """
    if densities.dim() != 3:
        raise ValueError(f"expected densities [N, H, W], got shape {tuple(densities.shape)}")
    dtype = working_dtype(densities.device)
    totals = densities.sum(dim=(1, 2), dtype=dtype)
    usable = torch.isfinite(totals) & (totals > 0) & torch.isfinite(densities).flatten(1).all(dim=1)
    if not usable.any():
        raise ValueError("mean_density: no density with gaze (every one is all zero or non-finite)")
    kept = densities[usable].flatten(1).to(dtype)
    mean = (kept / totals[usable, None]).mean(dim=0)
    return (mean / mean.sum()).reshape(densities.shape[1:]).to(densities.dtype)


class CentreBiasCorrected(Metric):
    """Base metric of the map minus base metric of the centre-bias map B, against the same targets.

    Subclasses (one per base, from ``_corrected``) set ``base``; settings are the base's.  Within
    ``score_maps`` the base metric's values on the maps are computed once for both metrics.
    """

    base: type[Metric]

    def compute(self, maps, targets):
        metric = self.base(**self.settings)
        return metric_values(metric, maps, targets) - metric.compute(centre_bias_like(maps, targets.centre_bias), targets)


def _corrected(base: type[Metric]) -> type[Metric]:
    """Register ``<base>_cb``: same direction as the base, range the difference of two values."""
    low, high = base.value_range
    attributes = {
        "name": f"{base.name}_cb",
        "base": base,
        "needs": (*base.needs, "centre_bias"),
        "higher_is_better": base.higher_is_better,
        "value_range": (low - high, high - low),
        "default_settings": dict(base.default_settings),
        "__doc__": f"{base.name} of the map minus {base.name} of the centre-bias map (see CentreBiasCorrected and {base.__name__}).",
    }
    return METRICS.register(attributes["name"])(type(f"{base.__name__}CentreBiasCorrected", (CentreBiasCorrected,), attributes))


CCCentreBiasCorrected = _corrected(CC)
NSSCentreBiasCorrected = _corrected(NSS)
SIMCentreBiasCorrected = _corrected(SIM)
KLCentreBiasCorrected = _corrected(KL)
