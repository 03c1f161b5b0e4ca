"""Scale-invariant metrics stay scale-invariant over the whole float range: a map (or a gaze
density) multiplied by any power of two scores as the map itself, never -inf, 0 or 1 from an
overflowed or underflowed square or sum."""

import numpy as np
import pytest
import torch

from gazebench.metrics.base import GazeTargets, feedable_metrics
from gazebench.metrics.centre_bias import gaussian_centre_bias
from gazebench.metrics.ops import shared_rescaled
from gazebench.metrics.scoring import score_maps
from gazebench.registry import METRICS

N, SIZE = 4, 16
QUANTUM = 2.0**-20  # inputs are multiples of it: every power-of-two scaling below is exact
EXPONENTS = (-1040, -600, 600, 1000, 1023)  # a map times 2^1023 reaches the largest float64
SSIM_LIMIT = 1000  # metrics/ssim.py gives NaN beyond: it is held to |exponent| <= this here


def quantised(values: np.ndarray) -> np.ndarray:
    return np.floor(values / QUANTUM) * QUANTUM


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(7)
    fixations = torch.from_numpy((rng.random((N, SIZE, SIZE)) > 0.9).astype(np.float64))
    fixations[:, 0, 0] = 1
    targets = {
        "fixations": fixations,
        "negatives": fixations.sum(dim=0, keepdim=True) - fixations,
        "centre_bias": gaussian_centre_bias(SIZE, SIZE, dtype=torch.float64),
        "mask": torch.from_numpy(rng.random((N, SIZE, SIZE)) < 0.3),
    }
    maps = {"non-negative": quantised(rng.random((N, SIZE, SIZE)) ** 2), "signed": quantised(rng.random((N, SIZE, SIZE)) - 0.5)}
    return maps, quantised(rng.random((N, SIZE, SIZE)) ** 3), targets


def scores(maps: np.ndarray, density: np.ndarray, targets: dict) -> dict[str, np.ndarray]:
    metrics, _ = feedable_metrics(METRICS.fixed_names(), {"density", *targets})
    with np.errstate(all="ignore"):
        values = score_maps(torch.from_numpy(maps), GazeTargets(density=torch.from_numpy(density), **targets), metrics)
    return {name: value.numpy() for name, value in values.items()}


def assert_same_scores(scaled: dict, plain: dict, exponent: int) -> None:
    for name, expected in plain.items():
        if name == "ssim" and abs(exponent) > SSIM_LIMIT:
            continue
        np.testing.assert_allclose(scaled[name], expected, rtol=1e-12, atol=1e-14, err_msg=f"{name} at 2^{exponent}")


@pytest.mark.parametrize("exponent", EXPONENTS)
def test_maps_of_any_scale_score_as_the_maps(scoring_path, inputs, exponent):
    all_maps, density, targets = inputs
    for maps in all_maps.values():
        assert_same_scores(scores(np.ldexp(maps, exponent), density, targets), scores(maps, density, targets), exponent)
    float32 = all_maps["non-negative"].astype(np.float32)  # a model's maps: float32, scored in float64
    for exponent32 in (-120, 100):
        assert_same_scores(scores(np.ldexp(float32, exponent32), density, targets), scores(float32, density, targets), exponent32)


@pytest.mark.parametrize("exponent", EXPONENTS)
def test_gaze_densities_of_any_scale_score_as_the_densities(scoring_path, inputs, exponent):
    all_maps, density, targets = inputs
    maps = all_maps["non-negative"]
    assert_same_scores(scores(maps, np.ldexp(density, exponent), targets), scores(maps, density, targets), exponent)


@pytest.mark.parametrize("dtype, bound", [(torch.float64, 256), (torch.float32, 32)])
def test_rows_far_from_one_are_rescaled_by_an_exact_power_of_two(dtype, bound):
    """The rescaling itself, in float32 too (the working dtype on mps): a row whose largest |value|
    is 0.75 * 2^e is brought back to 0.75 when |e| > bound, else left alone; zero and NaN rows too."""
    row = torch.tensor([0.75, -0.25, 0.5, 0.0], dtype=dtype)
    exponents = [-bound - 1, -bound, 0, bound, bound + 1]
    flat = torch.stack([torch.ldexp(row, torch.tensor(e)) for e in exponents] + [torch.zeros_like(row), torch.full_like(row, np.nan)])
    expected = torch.stack([row if abs(e) > bound else flat[i] for i, e in enumerate(exponents)] + [flat[5], flat[6]])
    torch.testing.assert_close(shared_rescaled(None, flat), expected, rtol=0, atol=0, equal_nan=True)
    subnormal = torch.tensor([[2.0**-1074, 3 * 2.0**-1074]], dtype=torch.float64)
    torch.testing.assert_close(shared_rescaled(None, subnormal), torch.tensor([[0.25, 0.75]], dtype=torch.float64), rtol=0, atol=0)
