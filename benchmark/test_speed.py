"""Speed of the hot paths (pytest-benchmark; not run by the test suite).

    python -m pytest benchmark --benchmark-only --benchmark-columns=mean,stddev,rounds

Each attribution method on a batch of 8 images through unet_gaze at the embedded recipe's
input size (random weights), and each registered metric on 256 maps of 224 x 224 in one batch
(benchmark/test_scoring.py times the chunked ``score_maps`` against the references).
"""

import pytest
import torch

from gazebench.methods.base import image_seed
from gazebench.metrics.base import GazeTargets
from gazebench.metrics.centre_bias import gaussian_centre_bias
from gazebench.models.unet_gaze import build_adapter, load_recipe
from gazebench.registry import METHODS, METRICS

GRID = 224


@pytest.fixture(scope="module")
def adapter():
    torch.manual_seed(0)
    return build_adapter(("Normal", "CHF", "pneumonia"), **load_recipe("embedded")["model"]).eval()


@pytest.mark.parametrize("name", METHODS.names())
def test_method_batch_of_8(benchmark, adapter, name):
    images = torch.rand(8, 1, GRID, GRID)
    targets = torch.arange(8) % 3
    seeds = [image_seed(0, str(i)) for i in range(8)]
    method = METHODS.get(name)()
    maps = benchmark.pedantic(method, args=(adapter, images, targets, seeds, GRID), rounds=3, iterations=1)
    assert maps.shape == (8, GRID, GRID)


@pytest.mark.parametrize("name", METRICS.names())
def test_metric_on_256_maps(benchmark, name):
    generator = torch.Generator().manual_seed(0)
    maps = torch.rand(256, GRID, GRID, generator=generator)
    density = torch.rand(256, GRID, GRID, generator=generator)
    density = density / density.sum(dim=(1, 2), keepdim=True)
    fixations = (torch.rand(256, GRID, GRID, generator=generator) > 0.999).float()
    targets = GazeTargets(
        density=density,
        fixations=fixations,
        centre_bias=gaussian_centre_bias(GRID, GRID),
        negatives=fixations.sum(dim=0, keepdim=True) - fixations,
        mask=torch.rand(256, GRID, GRID, generator=generator) > 0.8,
    )
    values = benchmark.pedantic(METRICS.get(name)(), args=(maps, targets), rounds=3, iterations=1)
    assert values.shape == (256,)


def test_scoring_a_batch_of_8_with_every_metric(benchmark):
    """What the engine does per batch and method: every metric plus the region shares, for 8 maps.

    Compare with ``test_method_batch_of_8``: scoring must never cost more than computing the maps.
    """
    from gazebench.metrics.regions import region_shares
    from gazebench.metrics.scoring import score_maps

    generator = torch.Generator().manual_seed(0)
    maps = torch.nn.functional.avg_pool2d(torch.rand(8, 1, GRID, GRID, generator=generator), 9, 1, 4)[:, 0]
    density = torch.nn.functional.avg_pool2d(torch.rand(8, 1, GRID, GRID, generator=generator) ** 4, 15, 1, 7)[:, 0]
    density = density / density.sum(dim=(1, 2), keepdim=True)
    fixations = (torch.rand(8, GRID, GRID, generator=generator) > 0.9995).float()
    targets = GazeTargets(density=density, fixations=fixations, centre_bias=gaussian_centre_bias(GRID, GRID), negatives=fixations.sum(dim=0, keepdim=True) - fixations, mask=torch.rand(8, GRID, GRID, generator=generator) > 0.8)
    regions = {name: torch.rand(8, GRID, GRID, generator=generator) > 0.7 for name in ("aortic_knob", "left_lung", "mediastinum", "right_lung")}
    metrics = {name: METRICS.get(name)() for name in METRICS.fixed_names()}

    def score():
        return score_maps(maps, targets, metrics), region_shares(maps, regions)

    values, _ = benchmark.pedantic(score, rounds=5, iterations=1, warmup_rounds=1)  # numba compiles or loads its kernels once per process
    assert set(values) == set(metrics)
