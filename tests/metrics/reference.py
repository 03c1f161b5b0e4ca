"""Slow, obvious NumPy transcriptions of the published metric formulas, one image at a time.

Used only by tests, as the reference the batched torch metrics must match.  Inputs are 2-D
float64 arrays of valid (non-degenerate) maps.
"""

from __future__ import annotations

import numpy as np
from skimage.metrics import structural_similarity

EPS = 2.2204e-16


def nss_reference(saliency: np.ndarray, fixation_counts: np.ndarray) -> float:
    """Mean z-score (population std) over the list of fixations, one entry per fixation."""
    z_scored = (saliency - saliency.mean()) / saliency.std()
    rows, cols = np.nonzero(fixation_counts)
    fixations = []
    for row, col in zip(rows, cols):
        fixations += [(row, col)] * int(fixation_counts[row, col])
    return float(np.mean([z_scored[row, col] for row, col in fixations]))


def cc_reference(saliency: np.ndarray, density: np.ndarray) -> float:
    """Pearson correlation of the two maps' pixels."""
    return float(np.corrcoef(saliency.ravel(), density.ravel())[0, 1])


def kl_reference(saliency: np.ndarray, density: np.ndarray, eps: float = EPS) -> float:
    """MIT benchmark KL: normalise both to sum 1, sum(G * log(eps + G / (S + eps)))."""
    s = saliency / saliency.sum()
    g = density / density.sum()
    return float(np.sum(g * np.log(eps + g / (s + eps))))


def minmax(image: np.ndarray) -> np.ndarray:
    return (image - image.min()) / (image.max() - image.min())


def ssim_reference(saliency: np.ndarray, density: np.ndarray, window: str = "gaussian") -> float:
    """scikit-image's SSIM on the min-maxed maps, under gazebench's documented settings."""
    if window == "gaussian":
        return float(structural_similarity(
            minmax(saliency), minmax(density),
            gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0,
        ))
    return float(structural_similarity(minmax(saliency), minmax(density), data_range=1.0))
