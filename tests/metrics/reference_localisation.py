"""Slow, obvious references for the localisation metrics and region shares, one image at a time.

Used only by tests.  Inputs are 2-D float64 NumPy arrays; degenerate inputs give NaN here too,
so that the batched code can be compared row by row, NaN positions included.
"""

from __future__ import annotations

import numpy as np
from skimage.filters import threshold_otsu


def is_degenerate(saliency: np.ndarray) -> bool:
    """Non-finite pixels, or a single value (all-zero included)."""
    return not np.all(np.isfinite(saliency)) or saliency.max() == saliency.min()


def minmax_reference(saliency: np.ndarray) -> np.ndarray:
    """(x - min) / (max - min) in float64, no epsilon."""
    return (saliency - saliency.min()) / (saliency.max() - saliency.min())


def otsu_mask_reference(saliency: np.ndarray, nbins: int = 256) -> np.ndarray:
    """Min-max to [0, 1], then scikit-image's Otsu: foreground = strictly above the threshold."""
    scaled = minmax_reference(saliency)
    return scaled > threshold_otsu(scaled, nbins=nbins)


def iou_reference(saliency: np.ndarray, mask: np.ndarray) -> float:
    """|Otsu mask & mask| / |Otsu mask | mask|; NaN for an empty mask or a degenerate map."""
    if not mask.any() or is_degenerate(saliency):
        return float("nan")
    predicted = otsu_mask_reference(saliency)
    return float(np.logical_and(predicted, mask).sum() / np.logical_or(predicted, mask).sum())


def hit_reference(saliency: np.ndarray, mask: np.ndarray) -> float:
    """1.0 when NumPy's (first, row-major) argmax lies in the mask; NaN for an empty mask or a degenerate map."""
    if not mask.any() or is_degenerate(saliency):
        return float("nan")
    row, col = np.unravel_index(np.argmax(saliency), saliency.shape)
    return float(mask[row, col])


def region_shares_reference(saliency: np.ndarray, regions: dict[str, np.ndarray]) -> list[float]:
    """Per region in sorted-name order: mass inside / total mass, by a loop over pixels' masks."""
    total = saliency.sum()
    usable = np.all(np.isfinite(saliency)) and saliency.min() >= 0 and total > 0
    shares = []
    for name in sorted(regions):
        region = regions[name]
        shares.append(float(saliency[region].sum() / total) if usable and region.any() else float("nan"))
    return shares
