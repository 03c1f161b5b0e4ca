"""Fused per-image kernels for scoring on the CPU, compiled with numba.

The torch implementations in ``map_metrics``, ``ssim`` and ``auc`` are written as whole-batch
tensor passes, which suits an accelerator; on a CPU each pass streams the batch through memory,
and SSIM's windowed filtering and the AUCs' per-pixel table look-ups are many passes.  The
kernels here do the same arithmetic image by image, each image's work staying in the core's
cache, in parallel over images (``torch.get_num_threads()`` threads, so ``OMP_NUM_THREADS``
governs both).
Metrics call them on CPU tensors when ``enabled()``; the torch code stays the implementation on
every other device and the reference the tests hold these kernels to.

Compiled on first use and cached on disk (numba's ``cache=True``): the first call in a fresh
environment costs a few seconds per kernel and input dtype.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import numpy as np
import torch

from gazebench.metrics.ops import is_one_map

_ENABLED = os.environ.get("GAZEBENCH_CPU_KERNELS", "1") != "0"


def enabled() -> bool:
    """Whether CPU tensors are scored with these kernels (environment ``GAZEBENCH_CPU_KERNELS=0`` turns them off)."""
    return _ENABLED


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Score CPU tensors with the torch implementations inside the block (tests compare the two)."""
    global _ENABLED
    before, _ENABLED = _ENABLED, False
    try:
        yield
    finally:
        _ENABLED = before


def applies(*tensors: torch.Tensor) -> bool:
    """Whether the kernels should handle these tensors: enabled, all on the CPU, floating point."""
    return _ENABLED and all(t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64) for t in tensors)


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    """A C-contiguous NumPy view (a copy only when the tensor is not contiguous)."""
    return tensor.detach().contiguous().numpy()


def _threads() -> None:
    """Run numba's parallel loops on as many threads as torch uses."""
    import numba

    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))


def ssim_means(x: torch.Tensor, y: torch.Tensor, affine: torch.Tensor, window: torch.Tensor, c1: float, c2_terms: tuple[float, float], valid: torch.Tensor) -> torch.Tensor:
    """Mean SSIM over the valid region of each pair of [B, H, W] maps -> [B] float64 (NaN where not ``valid``).

    ``affine`` [B, 6] float64: per map (scale_x, shift_x, mean_x, scale_y, shift_y, mean_y); the
    kernel stores ``scale * x + shift`` (the centred, optionally min-maxed map) in float32 and
    adds ``mean`` back to the local means.  ``c2_terms``: (C2 / n, C2 / (2 n)) with n the
    covariance normalisation.  The arithmetic of ``ssim.SSIM`` (see there), image by image.
    """
    from gazebench.metrics import _numba_kernels as kernels

    _threads()
    out = np.empty(x.shape[0], dtype=np.float64)
    kernels.ssim_means(_numpy(x), _numpy(y), _numpy(affine.to(torch.float64)), _numpy(window.to(torch.float32)), float(c1), float(c2_terms[0]), float(c2_terms[1]), _numpy(valid), out)
    return torch.from_numpy(out)


def code_histograms(
    saliency: torch.Tensor, low: torch.Tensor, boost: torch.Tensor, scale: torch.Tensor, values: torch.Tensor, negatives: torch.Tensor | None, valid: torch.Tensor, bins: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per map of [B, P], the pixel count and the ``negatives`` weight of each AUC code 2 j + tie.

    ``values`` [B, K]: each map's distinct positive saliency values, ascending, padded with +inf;
    ``low``: the maps' minimum; ``boost``, ``scale``: their value bins' (``auc.bin_scales``);
    ``bins``: how many.  Returns [B, 2 (K + 1)] float64 tables (the second None without
    ``negatives``); zero on rows that are not ``valid``.
    """
    from gazebench.metrics import _numba_kernels as kernels

    _threads()
    shape = (saliency.shape[0], 2 * (values.shape[1] + 1))
    counts = np.zeros(shape, dtype=np.float64)
    weights = np.zeros(shape if negatives is not None else (0, shape[1]), dtype=np.float64)
    negatives_array = _numpy(negatives) if negatives is not None else np.zeros((0, 0), dtype=np.float64)
    per_map = (_numpy(t.to(torch.float64)) for t in (low, boost, scale, values))
    kernels.code_histograms(_numpy(saliency), *per_map, negatives_array, _numpy(valid), bins, counts, weights)
    return torch.from_numpy(counts), (torch.from_numpy(weights) if negatives is not None else None)


def shifted_l1_distances(x: torch.Tensor, y: torch.Tensor, x_low: torch.Tensor, y_low: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """[B] sums over pixels of |(x - x_low) - (y - y_low) ratio| for [B, P] ``x`` and ``y`` (in
    float64, one pass, no shifted copies); ``x`` may be one map broadcast to the batch (stride 0)."""
    from gazebench.metrics import _numba_kernels as kernels

    _threads()
    x = x[:1] if is_one_map(x) else x
    out = np.empty(y.shape[0], dtype=np.float64)
    arrays = (_numpy(t.to(torch.float64)) for t in (x_low.expand(y.shape[0]), y_low, ratio))
    kernels.shifted_l1_distances(_numpy(x), _numpy(y), *arrays, out)
    return torch.from_numpy(out)
