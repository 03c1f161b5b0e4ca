"""The fused CPU kernels against the torch code they replace on the CPU, and their switches."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from gazebench.metrics import cpu_kernels
from gazebench.metrics.auc import AUCJudd, AUCShuffled
from gazebench.metrics.base import NEEDS, GazeTargets
from gazebench.metrics.scoring import score_maps
from gazebench.metrics.ssim import SSIM
from gazebench.registry import METRICS
from tests.metrics.reference import REFERENCES, auc_judd_reference, auc_shuffled_reference, minmax, random_arrays

KERNEL_METRICS = ("ssim", "sim", "sim_cb", "auc_judd", "auc_shuffled")  # the metrics with a CPU kernel


def targets_of(arrays: dict, dtype: torch.dtype) -> GazeTargets:
    return GazeTargets(**{need: torch.as_tensor(arrays[need], dtype=torch.bool if need == "mask" else dtype) for need in NEEDS})


def both_paths(metrics: dict, maps: torch.Tensor, targets: GazeTargets) -> tuple[dict, dict]:
    kernels = score_maps(maps, targets, metrics)
    with cpu_kernels.disabled():
        torch_only = score_maps(maps, targets, metrics)
    return kernels, torch_only


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape, levels", [((5, 24, 24), None), ((3, 40, 31), 7), ((6, 16, 16), 3)])
def test_kernels_equal_the_torch_code(dtype, shape, levels):
    arrays = random_arrays(shape, seed=4, levels=levels)
    arrays["maps"][1] = 0.25  # constant: NaN on both paths
    arrays["maps"][2, 3, 5] = np.nan
    maps = torch.as_tensor(arrays["maps"], dtype=dtype)
    metrics = {name: METRICS.get(name)() for name in sorted(REFERENCES)}
    kernels, torch_only = both_paths(metrics, maps, targets_of(arrays, dtype))
    for name in metrics:
        # SSIM filters in float32 on both paths, in a different order: ~1e-7 apart; the rest ~1e-12
        tolerance = 1e-6 if name == "ssim" else 1e-10
        np.testing.assert_allclose(kernels[name], torch_only[name], rtol=tolerance, atol=tolerance, err_msg=name)
        assert torch.isnan(kernels[name][1]) == torch.isnan(torch_only[name][1])


@pytest.mark.parametrize("settings", [{}, {"window": "uniform"}, {"sigma": 1.0}, {"sigma": 2.5}, {"minmax": False}])
def test_ssim_kernel_matches_skimage_for_every_window(settings):
    """11 taps (default) and 7 (uniform) are unrolled in the kernel; 9 (sigma 1) and 19 (sigma 2.5) take its loop."""
    rng = np.random.default_rng(5)
    maps, density = rng.random((2, 3, 30, 28)) ** 2
    metric = SSIM(**settings)
    assert cpu_kernels.applies(torch.as_tensor(maps))
    values = metric.compute(torch.as_tensor(maps), GazeTargets(density=torch.as_tensor(density))).numpy()
    scale = minmax if metric.settings["minmax"] else (lambda image: image)
    keywords = {"data_range": 1.0}
    if metric.settings["window"] == "gaussian":
        keywords |= {"gaussian_weights": True, "sigma": metric.settings["sigma"], "use_sample_covariance": False}
    reference = [structural_similarity(scale(m), scale(d), **keywords) for m, d in zip(maps, density)]
    np.testing.assert_allclose(values, reference, rtol=1e-5, atol=1e-5)


def test_auc_of_maps_with_a_range_below_1e_300_matches_the_reference():
    """The value-bin scale (bins / range) would overflow: both paths scale s - min up first."""
    rng = np.random.default_rng(6)
    maps = rng.random((3, 12, 12)) * 1e-310  # subnormal values
    maps[1] = rng.random((12, 12)) * 1e-302
    fixations = rng.choice([0.0, 0.0, 0.0, 1.0, 2.0], size=maps.shape)
    negatives = rng.choice([0.0, 1.0], size=maps.shape)
    targets = GazeTargets(fixations=torch.as_tensor(fixations), negatives=torch.as_tensor(negatives))
    judd_reference = [auc_judd_reference(m, f) for m, f in zip(maps, fixations)]
    shuffled_reference = [auc_shuffled_reference(m, f, n) for m, f, n in zip(maps, fixations, negatives)]
    for disabled in (False, True):
        with cpu_kernels.disabled() if disabled else contextlib.nullcontext():
            np.testing.assert_allclose(AUCJudd().compute(torch.as_tensor(maps), targets), judd_reference, atol=1e-12)
            np.testing.assert_allclose(AUCShuffled().compute(torch.as_tensor(maps), targets), shuffled_reference, atol=1e-12)


def test_sim_kernel_with_the_centre_bias_broadcast_to_the_batch():
    """sim_cb scores one map (stride 0 over the batch) against every density: no copy, same values."""
    arrays = random_arrays((4, 20, 20), seed=7)
    metrics = {"sim_cb": METRICS.get("sim_cb")(), "sim": METRICS.get("sim")()}
    kernels, torch_only = both_paths(metrics, torch.as_tensor(arrays["maps"]), targets_of(arrays, torch.float64))
    np.testing.assert_allclose(kernels["sim_cb"], torch_only["sim_cb"], rtol=1e-12, atol=1e-12)


def test_applies_only_to_floating_cpu_tensors_while_enabled():
    assert cpu_kernels.applies(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.float64))
    assert not cpu_kernels.applies(torch.zeros(2, 3, dtype=torch.float16))
    assert not cpu_kernels.applies(torch.zeros(2, 3, dtype=torch.int64))
    assert not cpu_kernels.applies(torch.zeros(2, 3, device="meta"))
    with cpu_kernels.disabled():
        assert not cpu_kernels.enabled()
        assert not cpu_kernels.applies(torch.zeros(2, 3))
    assert cpu_kernels.enabled()


def test_kernels_run_on_as_many_threads_as_torch():
    import numba

    arrays = random_arrays((4, 16, 16), seed=8)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        score_maps(torch.as_tensor(arrays["maps"]), targets_of(arrays, torch.float64), {"ssim": SSIM()})
        assert numba.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_environment_variable_turns_the_kernels_off():
    code = "from gazebench.metrics import cpu_kernels; print(cpu_kernels.enabled())"
    for value, expected in (("0", "False"), ("1", "True")):
        result = subprocess.run([sys.executable, "-c", code], env=os.environ | {"GAZEBENCH_CPU_KERNELS": value}, capture_output=True, text=True, check=True)
        assert result.stdout.strip() == expected
