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
