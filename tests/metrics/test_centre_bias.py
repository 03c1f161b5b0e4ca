"""Centre-bias maps (Gaussian, training-split mean) and the centre-bias-corrected metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gazebench.metrics.base import GazeTargets
from gazebench.metrics.centre_bias import gaussian_centre_bias, mean_density
from gazebench.registry import METRICS
from tests.metrics.reference import random_arrays

CORRECTED = ("cc_cb", "nss_cb", "sim_cb", "kl_cb")


def test_gaussian_centre_bias_is_a_centred_gaussian_summing_to_one():
    bias = gaussian_centre_bias(21, 31, sigma_fraction=0.25).double()
    assert bias.shape == (21, 31) and bias.dtype == torch.float64
    assert bias.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert divmod(int(bias.argmax()), 31) == (10, 15)
    sigma = 0.25 * 21
    # isotropic: one pixel 3 rows away and one 3 columns away weigh exp(-9 / (2 sigma^2)) of the peak
    for row, col in ((13, 15), (10, 18), (7, 15)):
        assert (bias[row, col] / bias[10, 15]).item() == pytest.approx(math.exp(-9 / (2 * sigma**2)), rel=1e-5)
    assert torch.equal(bias, bias.flip(0)) and torch.equal(bias, bias.flip(1))


def test_gaussian_centre_bias_of_even_sizes_peaks_between_pixels_and_defaults_to_float32():
    bias = gaussian_centre_bias(4, 4)
    assert bias.dtype == torch.float32
    assert torch.allclose(bias[1:3, 1:3], bias[1, 1].expand(2, 2)) and bias[1, 1] > bias[0, 0]
    with pytest.raises(ValueError, match="sigma_fraction"):
        gaussian_centre_bias(4, 4, sigma_fraction=0)


def test_mean_density_averages_normalised_densities_and_skips_empty_ones():
    first = torch.zeros(3, 3)
    first[0, 0] = 1.0
    second = torch.zeros(3, 3)
    second[2, 2] = 4.0  # not summing to 1: normalised first
    broken = torch.full((3, 3), math.nan)
    mean = mean_density(torch.stack([first, torch.zeros(3, 3), second, broken]))
    expected = torch.zeros(3, 3)
    expected[0, 0] = expected[2, 2] = 0.5
    assert mean.dtype == torch.float32
    torch.testing.assert_close(mean, expected)


def test_mean_density_without_gaze_raises():
    with pytest.raises(ValueError, match="no density with gaze"):
        mean_density(torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match=r"\[N, H, W\]"):
        mean_density(torch.zeros(4, 4))


def targets_of(arrays: dict) -> GazeTargets:
    as_tensor = {key: torch.as_tensor(value, dtype=torch.float32) for key, value in arrays.items() if key != "mask"}
    return GazeTargets(as_tensor["density"], as_tensor["fixations"], as_tensor["centre_bias"], as_tensor["negatives"])


@pytest.mark.parametrize("name", CORRECTED)
def test_corrected_metric_is_base_of_map_minus_base_of_centre_bias(name):
    arrays = random_arrays((3, 12, 12), seed=5)
    targets = targets_of(arrays)
    maps = torch.as_tensor(arrays["maps"], dtype=torch.float32)
    base = METRICS.get(name.removesuffix("_cb"))()
    expected = base.compute(maps, targets) - base.compute(targets.centre_bias.expand_as(maps).contiguous(), targets)
    torch.testing.assert_close(METRICS.get(name)().compute(maps, targets), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", CORRECTED)
def test_centre_bias_map_scores_zero_against_itself(name):
    arrays = random_arrays((2, 12, 12), seed=6)
    targets = targets_of(arrays)
    centre_bias_maps = targets.centre_bias.expand(2, 12, 12)
    np.testing.assert_allclose(METRICS.get(name)().compute(centre_bias_maps, targets).numpy(), 0.0, atol=1e-6)


def test_settings_reach_the_base_metric():
    arrays = random_arrays((2, 12, 12), seed=7)
    targets = targets_of(arrays)
    maps = torch.as_tensor(arrays["maps"], dtype=torch.float32)
    default, large_eps = METRICS.get("kl_cb")(), METRICS.get("kl_cb")(eps=1e-2)
    assert large_eps.settings == {"eps": 1e-2}
    assert not torch.allclose(default.compute(maps, targets), large_eps.compute(maps, targets))
    with pytest.raises(ValueError, match="unknown settings"):
        METRICS.get("cc_cb")(eps=1e-2)


def test_centre_bias_of_the_wrong_size_raises():
    arrays = random_arrays((2, 12, 12), seed=8)
    targets = targets_of(arrays)
    targets.centre_bias = gaussian_centre_bias(10, 12)
    with pytest.raises(ValueError, match="does not fit"):
        METRICS.get("cc_cb")().compute(torch.as_tensor(arrays["maps"], dtype=torch.float32), targets)
