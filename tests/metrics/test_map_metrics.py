"""The batched map metrics against NumPy/scikit-image references, hand cases and properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from gazebench.metrics.base import GazeTargets
from gazebench.metrics.map_metrics import CC, KL, NSS, SSIM, gaussian_window
from gazebench.registry import METRICS
from tests.metrics.reference import cc_reference, kl_reference, nss_reference, ssim_reference

SHAPES = [(3, 16, 16), (2, 20, 33), (4, 32, 24)]
TOLERANCE = dict(rtol=1e-5, atol=1e-5)


def random_inputs(shape, seed=0):
    """Non-negative maps, densities summing to 1 and fixation counts (some pixels fixated twice)."""
    rng = np.random.default_rng(seed)
    maps = rng.random(shape) ** 2
    density = rng.random(shape) ** 3
    density /= density.sum(axis=(1, 2), keepdims=True)
    fixations = rng.choice([0, 0, 0, 0, 0, 0, 1, 2], size=shape).astype(float)
    fixations[:, 0, 0] = 1  # at least one fixation per map
    return maps, density, fixations


def compute(metric, maps, density=None, fixations=None):
    """Run a metric on NumPy arrays (float32, as the engine passes them) -> NumPy [B]."""
    maps = torch.as_tensor(np.asarray(maps, dtype=np.float32))
    density = maps if density is None else torch.as_tensor(np.asarray(density, dtype=np.float32))
    fixations = torch.zeros_like(maps) if fixations is None else torch.as_tensor(np.asarray(fixations, dtype=np.float32))
    return metric.compute(maps, GazeTargets(density=density, fixations=fixations)).numpy()


def as_float32(array):
    """The float32 values the metric sees, back in float64 for the references."""
    return np.asarray(array, dtype=np.float32).astype(np.float64)


@pytest.mark.parametrize("shape", SHAPES)
def test_nss_cc_kl_match_numpy_references(shape):
    maps, density, fixations = (as_float32(a) for a in random_inputs(shape))
    expected = {
        "nss": [nss_reference(m, f) for m, f in zip(maps, fixations)],
        "cc": [cc_reference(m, d) for m, d in zip(maps, density)],
        "kl": [kl_reference(m, d) for m, d in zip(maps, density)],
    }
    for name, reference in expected.items():
        values = compute(METRICS.get(name)(), maps, density, fixations)
        np.testing.assert_allclose(values, reference, **TOLERANCE, err_msg=name)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("window", ["gaussian", "uniform"])
def test_ssim_matches_skimage(shape, window):
    maps, density, _ = (as_float32(a) for a in random_inputs(shape, seed=1))
    values = compute(SSIM(window=window), maps, density)
    reference = [ssim_reference(m, d, window) for m, d in zip(maps, density)]
    np.testing.assert_allclose(values, reference, **TOLERANCE)


def test_ssim_uniform_and_gaussian_windows_differ():
    maps, density, _ = random_inputs((2, 24, 24), seed=2)
    assert not np.allclose(compute(SSIM(), maps, density), compute(SSIM(window="uniform"), maps, density))


def test_gaussian_window_has_scipy_taps():
    window = gaussian_window(1.5)
    assert window.numel() == 11  # radius int(3.5 * 1.5 + 0.5) = 5
    assert window.sum().item() == pytest.approx(1.0)
    assert window[5] == window.max() and torch.equal(window, window.flip(0))


def test_nss_hand_computed():
    # S: 3 at the centre, 0 elsewhere: mean 1/3, population std sqrt(1 - 1/9) = 2*sqrt(2)/3.
    # z(centre) = (3 - 1/3) / (2 sqrt(2)/3) = 2 sqrt(2); z(corner) = -(1/3) / (2 sqrt(2)/3) = -1/(2 sqrt(2)).
    saliency = np.zeros((1, 3, 3))
    saliency[0, 1, 1] = 3
    once_at_centre = np.zeros((1, 3, 3))
    once_at_centre[0, 1, 1] = 1
    assert compute(NSS(), saliency, fixations=once_at_centre)[0] == pytest.approx(2 * math.sqrt(2), rel=1e-6)
    # Two fixations at the centre, one at a corner: (2 * 2 sqrt(2) - 1/(2 sqrt(2))) / 3 = 5 / (2 sqrt(2)).
    counts = np.zeros((1, 3, 3))
    counts[0, 1, 1], counts[0, 0, 0] = 2, 1
    assert compute(NSS(), saliency, fixations=counts)[0] == pytest.approx(5 / (2 * math.sqrt(2)), rel=1e-6)


def test_cc_hand_computed():
    # S = 1..4, G = [0, 0, 1, 1]: deviations (-1.5, -.5, .5, 1.5) and (-.5, -.5, .5, .5);
    # covariance sum 2, squared sums 5 and 1 -> CC = 2 / sqrt(5).  G = [1, 0, 0, 1] gives 0.
    saliency = np.array([[[1.0, 2.0], [3.0, 4.0]]] * 2)
    density = np.array([[[0.0, 0.0], [0.5, 0.5]], [[0.5, 0.0], [0.0, 0.5]]])
    np.testing.assert_allclose(compute(CC(), saliency, density), [2 / math.sqrt(5), 0.0], atol=1e-6)


def test_kl_hand_computed():
    # Uniform S (each pixel 1/4) and all gaze on one pixel: KL = 1 * log(1 / (1/4)) = log 4.
    saliency = np.ones((1, 2, 2))
    density = np.array([[[1.0, 0.0], [0.0, 0.0]]])
    assert compute(KL(), saliency, density)[0] == pytest.approx(math.log(4), rel=1e-6)


def test_ssim_hand_computed_on_constant_maps_without_minmax():
    # Constant maps a = 1, b = 0.5 (11x11: one full Gaussian window): variances and covariance 0,
    # SSIM = (2ab + C1) / (a^2 + b^2 + C1) with C1 = 1e-4 -> 1.0001 / 1.2501.
    saliency, density = np.ones((1, 11, 11)), np.full((1, 11, 11), 0.5)
    assert compute(SSIM(minmax=False), saliency, density)[0] == pytest.approx(1.0001 / 1.2501, rel=1e-6)


def test_identical_maps():
    maps, density, _ = random_inputs((3, 16, 16))
    np.testing.assert_allclose(compute(KL(), density, density), 0.0, atol=1e-6)
    np.testing.assert_allclose(compute(CC(), density, density), 1.0, atol=1e-6)
    np.testing.assert_allclose(compute(SSIM(), density, density), 1.0, atol=1e-6)
    assert (compute(KL(), maps, density) > 0).all()


def test_cc_is_one_for_positive_affine_rescale_of_density():
    _, density, _ = random_inputs((3, 16, 16))
    np.testing.assert_allclose(compute(CC(), 3.0 * density + 2.0, density), 1.0, atol=1e-6)
    np.testing.assert_allclose(compute(CC(), -density, density), -1.0, atol=1e-6)


def test_nss_is_invariant_to_positive_affine_rescale():
    maps, _, fixations = random_inputs((3, 16, 16))
    np.testing.assert_allclose(
        compute(NSS(), 5.0 * maps + 7.0, fixations=fixations), compute(NSS(), maps, fixations=fixations), **TOLERANCE
    )


finite_maps = arrays(
    np.float64, (2, 8, 8), elements=st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, width=32)
)


@settings(max_examples=50, deadline=None)
@given(finite_maps, finite_maps)
def test_cc_lies_in_unit_interval(maps, density):
    values = compute(CC(), maps, density)
    defined = values[~np.isnan(values)]
    assert ((defined >= -1.0) & (defined <= 1.0)).all()


@settings(max_examples=50, deadline=None)
@given(finite_maps, st.floats(0.1, 10.0), st.floats(-100.0, 100.0))
def test_nss_and_cc_affine_invariance_property(maps, scale, shift):
    maps = maps + np.arange(64).reshape(8, 8)  # non-constant whatever hypothesis draws
    _, density, fixations = random_inputs((2, 8, 8))
    rescaled = scale * maps + shift
    for metric, kwargs in ((NSS(), dict(fixations=fixations)), (CC(), dict(density=density))):
        np.testing.assert_allclose(compute(metric, rescaled, **kwargs), compute(metric, maps, **kwargs), rtol=1e-4, atol=1e-4)


def degenerate_batch():
    """Sample 0 is valid; 1 constant map; 2 zero map; 3 NaN pixel; 4 inf pixel."""
    maps, density, fixations = random_inputs((5, 16, 16))
    maps[1] = 0.7
    maps[2] = 0.0
    maps[3, 4, 4] = np.nan
    maps[4, 2, 9] = np.inf
    return maps, density, fixations


@pytest.mark.parametrize("name", ["nss", "cc", "kl", "ssim"])
def test_degenerate_maps_give_nan_and_leave_others_alone(name):
    maps, density, fixations = degenerate_batch()
    values = compute(METRICS.get(name)(), maps, density, fixations)
    assert np.isfinite(values[0])
    assert np.isnan(values[2:]).all()
    if name == "kl":  # a constant saliency map is the uniform distribution: KL is defined
        assert np.isfinite(values[1])
    else:
        assert np.isnan(values[1])


@pytest.mark.parametrize("name", ["nss", "cc", "ssim"])
def test_constant_float64_map_is_nan_although_its_rounded_std_is_not_zero(name):
    # 256 pixels of 0.3 in float64: the computed mean is off by 5.6e-17, so the std is not 0.
    maps, density, fixations = (torch.as_tensor(a) for a in random_inputs((1, 16, 16)))
    maps = torch.full_like(maps, 0.3)
    assert maps.std(correction=0) > 0
    assert torch.isnan(METRICS.get(name)().compute(maps, GazeTargets(density, fixations))).all()


@pytest.mark.parametrize("name", ["cc", "kl", "ssim"])
def test_all_zero_density_gives_nan(name):
    maps, density, _ = random_inputs((2, 16, 16))
    density[1] = 0.0
    values = compute(METRICS.get(name)(), maps, density)
    assert np.isfinite(values[0]) and np.isnan(values[1])


def test_nss_without_fixations_gives_nan():
    maps, _, fixations = random_inputs((2, 16, 16))
    fixations[1] = 0.0
    values = compute(NSS(), maps, fixations=fixations)
    assert np.isfinite(values[0]) and np.isnan(values[1])


def test_kl_rejects_negative_maps():
    maps, density, _ = random_inputs((1, 16, 16))
    maps[0, 0, 0] = -0.1
    assert np.isnan(compute(KL(), maps, density)).all()


@pytest.mark.parametrize("name", ["nss", "cc", "kl", "ssim"])
def test_batch_equals_one_map_at_a_time(name):
    maps, density, fixations = random_inputs((4, 16, 16), seed=3)
    metric = METRICS.get(name)()
    batched = compute(metric, maps, density, fixations)
    single = [compute(metric, maps[i : i + 1], density[i : i + 1], fixations[i : i + 1])[0] for i in range(4)]
    np.testing.assert_allclose(batched, single, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_output_dtype_follows_maps(dtype):
    maps, density, fixations = (torch.as_tensor(a, dtype=dtype) for a in random_inputs((2, 16, 16)))
    for name in METRICS.names():
        values = METRICS.get(name)().compute(maps, GazeTargets(density, fixations))
        assert values.dtype == dtype and values.shape == (2,)


def test_declared_metadata():
    expected = {"nss": (("fixations",), True), "cc": (("density",), True), "kl": (("density",), False), "ssim": (("density",), True)}
    for name, (needs, higher_is_better) in expected.items():
        metric = METRICS.get(name)
        assert (metric.name, metric.needs, metric.higher_is_better) == (name, needs, higher_is_better)
    assert SSIM().settings == {"window": "gaussian", "sigma": 1.5, "data_range": 1.0, "minmax": True}
    assert KL().settings == {"eps": 2.2204e-16}


def test_bad_settings_and_shapes_raise():
    with pytest.raises(ValueError, match="unknown settings"):
        SSIM(gaussian=True)
    with pytest.raises(ValueError, match="window"):
        SSIM(window="box")
    with pytest.raises(ValueError, match="smaller than"):
        compute(SSIM(), *random_inputs((1, 8, 8))[:2])
    with pytest.raises(ValueError, match="one shape"):
        CC().compute(torch.zeros(1, 4, 4), GazeTargets(torch.zeros(1, 4, 5), torch.zeros(1, 4, 4)))


@pytest.mark.parametrize("name", ["nss", "cc", "kl", "ssim"])
def test_inputs_are_not_modified(name):
    inputs = [torch.as_tensor(a) for a in random_inputs((2, 16, 16))]  # float64: no copy on entry
    copies = [tensor.clone() for tensor in inputs]
    METRICS.get(name)().compute(inputs[0], GazeTargets(*inputs[1:]))
    for tensor, copy in zip(inputs, copies):
        assert torch.equal(tensor, copy)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["nss", "cc", "kl", "ssim"])
def test_cuda_matches_cpu(name):
    maps, density, fixations = degenerate_batch()
    inputs = [torch.as_tensor(a, dtype=torch.float32) for a in (maps, density, fixations)]
    metric = METRICS.get(name)()
    on_gpu = metric.compute(inputs[0].cuda(), GazeTargets(inputs[1].cuda(), inputs[2].cuda()))
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), metric.compute(inputs[0], GazeTargets(*inputs[1:])), rtol=1e-5, atol=1e-6, equal_nan=True)
