"""Scoring speed: every map metric on 1,000 maps of 224 x 224, engine against references.

    python -m pytest benchmark/test_scoring.py --benchmark-only --benchmark-columns=mean,stddev,rounds

(pytest-benchmark; not run by the test suite.)  The engine is ``score_maps`` (its default chunk,
float32 maps in, the CPU kernels on; one warm-up round, so numba's one-time compilation or cache
load is not timed).  The references are what a researcher would write: a loop over images calling
the per-image NumPy transcriptions of tests/metrics/reference.py (SSIM: scikit-image's
``structural_similarity`` on min-maxed maps; AUC-Judd: the plain threshold loop; shuffled AUC:
NumPy comparisons of the positive and negative fixation lists), on float64 arrays prepared
outside the timing.  Both run on all 1,000 maps; the references once (each takes seconds).  Each group
(one metric, or ``all``) holds the engine and the reference.  Inputs are realistic: smooth
non-negative maps, 10-40 fixations per image near the centre, gaze densities (fixations blurred,
summing to 1), the centre bias as their mean and, for the shuffled AUC, the other images'
fixations.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gazebench.metrics.base import GazeTargets
from gazebench.metrics.centre_bias import mean_density
from gazebench.metrics.scoring import score_maps
from gazebench.metrics.ssim import gaussian_window
from gazebench.registry import METRICS
from tests.metrics.reference import reference_scores

N_MAPS = 1000
GRID = 224
MAP_METRICS = ("ssim", "kl", "nss", "cc", "sim", "auc_judd", "auc_shuffled", "info_gain", "cc_cb", "nss_cb", "sim_cb", "kl_cb")


def _blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of [N, H, W] (zero padding)."""
    window = gaussian_window(sigma, torch.float32)
    radius = len(window) // 2
    blurred = F.conv2d(images[:, None], window.view(1, 1, -1, 1), padding=(radius, 0))
    return F.conv2d(blurred, window.view(1, 1, 1, -1), padding=(0, radius))[:, 0]


def realistic_inputs(n: int = N_MAPS, grid: int = GRID, seed: int = 0) -> tuple[torch.Tensor, GazeTargets]:
    """Smooth non-negative float32 maps and every target field, as a run would produce them."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 1, grid // 16, grid // 16, generator=generator) ** 3
    maps = F.interpolate(coarse, size=(grid, grid), mode="bicubic", align_corners=False)[:, 0].clamp_(min=0)
    fixations = torch.zeros(n, grid * grid)
    n_fixations = torch.randint(10, 41, (n,), generator=generator)
    rows = torch.repeat_interleave(torch.arange(n), n_fixations)
    where = (grid / 2 + grid / 6 * torch.randn(len(rows), 2, generator=generator)).round_().clamp_(0, grid - 1).long()
    fixations.index_put_((rows, where[:, 0] * grid + where[:, 1]), torch.ones(len(rows)), accumulate=True)
    fixations = fixations.view(n, grid, grid)
    density = _blur(fixations, sigma=grid / 28)
    density /= density.sum(dim=(1, 2), keepdim=True)
    negatives = fixations.sum(dim=0, keepdim=True) - fixations
    return maps, GazeTargets(density=density, fixations=fixations, centre_bias=mean_density(density), negatives=negatives)


@pytest.fixture(scope="module")
def inputs():
    return realistic_inputs()


@pytest.fixture(scope="module")
def arrays(inputs):
    """The same inputs as float64 NumPy arrays, prepared outside the timing."""
    maps, targets = inputs
    fields = {"maps": maps} | {need: getattr(targets, need) for need in ("density", "fixations", "negatives", "centre_bias")}
    return {key: tensor.numpy().astype(np.float64) for key, tensor in fields.items()}


@pytest.mark.parametrize("name", MAP_METRICS)
def test_engine(benchmark, inputs, name):
    benchmark.group = name
    maps, targets = inputs
    scores = benchmark.pedantic(score_maps, args=(maps, targets, {name: METRICS.get(name)()}), rounds=3, iterations=1, warmup_rounds=1)
    assert torch.isfinite(scores[name]).all()


@pytest.mark.parametrize("name", MAP_METRICS)
def test_reference(benchmark, arrays, inputs, name):
    benchmark.group = name
    scores = benchmark.pedantic(reference_scores, args=(name, arrays), rounds=1, iterations=1)
    engine = score_maps(*inputs, {name: METRICS.get(name)()})[name]
    np.testing.assert_allclose(engine, scores, rtol=1e-5, atol=1e-5)


def test_engine_all(benchmark, inputs):
    benchmark.group = "all"
    maps, targets = inputs
    metrics = {name: METRICS.get(name)() for name in MAP_METRICS}
    scores = benchmark.pedantic(score_maps, args=(maps, targets, metrics), rounds=3, iterations=1, warmup_rounds=1)
    assert all(torch.isfinite(values).all() for values in scores.values())


def test_reference_all(benchmark, arrays):
    benchmark.group = "all"
    benchmark.pedantic(lambda: {name: reference_scores(name, arrays) for name in MAP_METRICS}, rounds=1, iterations=1)


def test_engine_all_torch_code(benchmark, inputs):
    """The engine with the CPU kernels off: the torch code every other device runs, here on the CPU."""
    from gazebench.metrics import cpu_kernels

    benchmark.group = "all"
    maps, targets = inputs
    metrics = {name: METRICS.get(name)() for name in MAP_METRICS}
    with cpu_kernels.disabled():
        benchmark.pedantic(score_maps, args=(maps, targets, metrics), rounds=3, iterations=1, warmup_rounds=1)
