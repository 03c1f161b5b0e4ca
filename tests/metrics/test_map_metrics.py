"""The batched map metrics against NumPy/scikit-image references, hand cases and properties.

The tests over every registered metric (references, degenerate samples, batching, dtypes,
inputs left alone) supply each metric the target fields it needs; the AUCs, the centre-bias
metrics and ``score_maps`` have hand cases of their own in test_auc.py, test_centre_bias.py and
test_scoring.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays as array_strategy

from gazebench.metrics.base import NEEDS, GazeTargets
from gazebench.metrics.centre_bias import gaussian_centre_bias
from gazebench.metrics.map_metrics import (
    CC,
    KL,
    NSS,
    SIM,
    InfoGain,
)
from gazebench.metrics.ssim import SSIM, gaussian_window
from gazebench.registry import METRICS
from tests.metrics.reference import (
    REFERENCES,
    kl_reference,
    random_arrays,
    reference_scores,
    ssim_reference,
)

pytestmark = pytest.mark.usefixtures("scoring_path")  # each test on the CPU kernels and on the torch code

SHAPES = [(3, 16, 16), (2, 20, 33), (4, 32, 24)]
TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}
MAP_METRICS = sorted(REFERENCES)  # every metric with a NumPy reference: all but the localisation ones


def random_inputs(shape, seed=0):
    """Non-negative maps, densities summing to 1 and fixation counts (some pixels fixated twice)."""
    rng = np.random.default_rng(seed)
    maps = rng.random(shape) ** 2
    density = rng.random(shape) ** 3
    density /= density.sum(axis=(1, 2), keepdims=True)
    fixations = rng.choice([0, 0, 0, 0, 0, 0, 1, 2], size=shape).astype(float)
    fixations[:, 0, 0] = 1  # at least one fixation per map
    return maps, density, fixations


def compute(metric, maps, density=None, fixations=None, centre_bias=None, negatives=None):
    """Run a metric on NumPy arrays (float32, as the engine passes them) -> NumPy [B]."""
    def as_tensor(array):
        return torch.as_tensor(np.asarray(array, dtype=np.float32))

    maps = as_tensor(maps)
    density = maps if density is None else as_tensor(density)
    fixations = torch.zeros_like(maps) if fixations is None else as_tensor(fixations)
    centre_bias = gaussian_centre_bias(*maps.shape[1:]) if centre_bias is None else as_tensor(centre_bias)
    negatives = torch.ones_like(maps) if negatives is None else as_tensor(negatives)
    return metric.compute(maps, GazeTargets(density, fixations, centre_bias, negatives)).numpy()


def all_targets(inputs: dict, dtype=torch.float32) -> GazeTargets:
    """Every GazeTargets field from ``random_arrays`` output (the mask stays bool)."""
    return GazeTargets(**{need: torch.as_tensor(inputs[need], dtype=torch.bool if need == "mask" else dtype) for need in NEEDS})


def compute_all(metric, inputs: dict, dtype=torch.float32) -> np.ndarray:
    """A metric on ``random_arrays`` output, maps and targets in ``dtype`` -> NumPy [B]."""
    return metric.compute(torch.as_tensor(inputs["maps"], dtype=dtype), all_targets(inputs, dtype)).numpy()


def as_float32(array):
    """The float32 values the metric sees, back in float64 for the references."""
    return np.asarray(array, dtype=np.float32).astype(np.float64)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("levels", [None, 5], ids=["continuous", "5 levels"])
def test_every_metric_matches_its_numpy_reference(shape, levels):
    inputs = random_arrays(shape, seed=sum(shape), levels=levels)
    for name in MAP_METRICS:
        values = compute_all(METRICS.get(name)(), inputs)
        np.testing.assert_allclose(values, reference_scores(name, inputs), **TOLERANCE, err_msg=name)


@pytest.mark.parametrize("offset", [10.0, 1e3, 1e7], ids=["sums", "centred copies", "centred and shifted copies"])
def test_metrics_of_maps_far_from_zero_match_their_references(offset):
    # Far from zero, sums of x - min or x - mean taken as sum(x) - P min or sum(x^2) - P mean^2 cancel:
    # beyond a bound (here from mean / std > 100 on, then P min > 1e4 sum(x - min)) the metrics use shifted or centred copies.
    inputs = random_arrays((3, 20, 33), seed=1)
    inputs = {**inputs, "maps": inputs["maps"] + offset, "density": inputs["density"] + offset / 2, "centre_bias": inputs["centre_bias"] + offset}
    for name in ("sim", "sim_cb", "info_gain", "kl", "kl_cb", "cc", "cc_cb", "nss", "nss_cb"):
        values = compute_all(METRICS.get(name)(), inputs, torch.float64)
        np.testing.assert_allclose(values, reference_scores(name, inputs), rtol=1e-9, atol=1e-9, err_msg=name)


@pytest.mark.parametrize("eps", [1e-10, 1e-3], ids=["log split", "log of the ratio"])
@pytest.mark.parametrize("shared_map", [False, True], ids=["a map per sample", "one map for the batch"])
def test_kl_with_its_eps_setting_matches_the_reference(eps, shared_map):
    # One map shared by the batch (kl_cb's centre bias) with a tiny eps takes the split sum G log G - sum G log(S + eps).
    inputs = random_arrays((3, 20, 33), seed=2)
    inputs["density"][:, :5] = 0  # pixels without gaze: 0 log 0 = 0
    maps = np.broadcast_to(inputs["maps"][:1], inputs["maps"].shape) if shared_map else inputs["maps"]
    saliency = torch.as_tensor(inputs["maps"][:1]).expand(3, -1, -1) if shared_map else torch.as_tensor(maps)
    values = KL(eps=eps).compute(saliency, GazeTargets(density=torch.as_tensor(inputs["density"]))).numpy()
    expected = [kl_reference(one_map, density, eps) for one_map, density in zip(maps, inputs["density"])]
    np.testing.assert_allclose(values, expected, rtol=1e-9, atol=1e-12)


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


finite_maps = array_strategy(
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
    for metric, kwargs in ((NSS(), {"fixations": fixations}), (CC(), {"density": density})):
        np.testing.assert_allclose(compute(metric, rescaled, **kwargs), compute(metric, maps, **kwargs), rtol=1e-4, atol=1e-4)


@settings(max_examples=30, deadline=None)
@given(array_strategy(np.float64, (2, 8, 8), elements=st.floats(0, 1e3, width=32)), array_strategy(np.float64, (2, 8, 8), elements=st.floats(0, 1e3, width=32)))
def test_sim_lies_in_unit_interval_and_kl_is_non_negative(maps, density):
    sim, kl, kl_same = compute(SIM(), maps, density), compute(KL(), maps, density), compute(KL(), density, density)
    assert ((sim[~np.isnan(sim)] >= 0) & (sim[~np.isnan(sim)] <= 1)).all()
    assert (kl[~np.isnan(kl)] >= -1e-6).all()
    np.testing.assert_allclose(kl_same[~np.isnan(kl_same)], 0.0, atol=1e-6)


def test_sim_hand_computed():
    # S = [0, 1, 2, 3] -> [0, 1, 2, 3] / 6; G = [3, 0, 0, 3] -> [1, 0, 0, 1] / 2: min = [0, 0, 0, 1/2] -> 1/2.
    saliency = np.array([[[0.0, 1.0], [2.0, 3.0]]])
    density = np.array([[[3.0, 0.0], [0.0, 3.0]]])
    assert compute(SIM(), saliency, density)[0] == pytest.approx(0.5, abs=1e-7)
    assert compute(SIM(), saliency, saliency)[0] == pytest.approx(1.0, abs=1e-7)


def test_info_gain_hand_computed():
    # S min-maxed and normalised: [0, 1, 2, 3] / 6; B = [1, 2, 2, 3] -> [0, 1, 1, 2] / 4.  Fixations at
    # pixel 1 (twice) and pixel 3: IG = (2 log2((1/6) / (1/4)) + log2((3/6) / (2/4))) / 3 = 2/3 log2(2/3).
    saliency = np.array([[[0.0, 1.0], [2.0, 3.0]]])
    centre_bias = np.array([[1.0, 2.0], [2.0, 3.0]]) / 8
    fixations = np.array([[[0.0, 2.0], [0.0, 1.0]]])
    expected = 2 / 3 * math.log2(2 / 3)
    assert compute(InfoGain(), saliency, fixations=fixations, centre_bias=centre_bias)[0] == pytest.approx(expected, rel=1e-6)


@settings(max_examples=20, deadline=None)
@given(array_strategy(np.float64, (8, 8), elements=st.floats(0, 1e3, width=32)))
def test_info_gain_of_the_centre_bias_against_itself_is_zero(centre_bias):
    fixations = np.ones((1, 8, 8))
    value = compute(InfoGain(), centre_bias[None], fixations=fixations, centre_bias=centre_bias)[0]
    assert np.isnan(value) or value == pytest.approx(0.0, abs=1e-9)


def degenerate_arrays():
    """Sample 0 is valid; 1 constant map; 2 zero map; 3 NaN pixel; 4 inf pixel; 5 no fixations;
    6 all-zero density; 7 no negatives."""
    inputs = random_arrays((8, 16, 16), seed=4)
    inputs["maps"][1] = 0.7
    inputs["maps"][2] = 0.0
    inputs["maps"][3, 4, 4] = np.nan
    inputs["maps"][4, 2, 9] = np.inf
    inputs["fixations"][5] = 0.0
    inputs["density"][6] = 0.0
    inputs["negatives"][7] = 0.0
    return inputs


def undefined_samples(name: str) -> set[int]:
    """Which samples of ``degenerate_arrays`` a metric cannot score."""
    needs = set(METRICS.get(name).needs)
    undefined = {2, 3, 4}
    if name not in ("kl", "kl_cb"):  # a constant saliency map is the uniform distribution: KL is defined
        undefined.add(1)
    if "fixations" in needs:
        undefined.add(5)
    if "density" in needs:
        undefined.add(6)
    if "negatives" in needs:
        undefined.add(7)
    return undefined


@pytest.mark.parametrize("name", MAP_METRICS)
def test_degenerate_samples_give_nan_and_leave_others_alone(name):
    inputs = degenerate_arrays()
    values = compute_all(METRICS.get(name)(), inputs)
    undefined = undefined_samples(name)
    assert np.isnan(values[sorted(undefined)]).all(), values
    defined = [index for index in range(len(values)) if index not in undefined]
    assert np.isfinite(values[defined]).all(), values
    clean = {key: value[defined] if value.ndim == 3 else value for key, value in inputs.items()}
    np.testing.assert_allclose(values[defined], compute_all(METRICS.get(name)(), clean), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", ["nss", "cc", "ssim", "sim", "info_gain", "auc_judd", "auc_shuffled"])
def test_constant_float64_map_is_nan_although_its_rounded_std_is_not_zero(name):
    # 256 pixels of 0.3 in float64: the computed mean is off by 5.6e-17, so the std is not 0.
    inputs = random_arrays((1, 16, 16))
    maps = torch.full((1, 16, 16), 0.3, dtype=torch.float64)
    assert maps.std(correction=0) > 0
    assert torch.isnan(METRICS.get(name)().compute(maps, all_targets(inputs, torch.float64))).all()


def test_kl_rejects_negative_maps():
    maps, density, _ = random_inputs((1, 16, 16))
    maps[0, 0, 0] = -0.1
    assert np.isnan(compute(KL(), maps, density)).all()


@pytest.mark.parametrize("name", METRICS.names())
def test_batch_equals_one_map_at_a_time(name):
    inputs = random_arrays((4, 16, 16), seed=3)
    metric = METRICS.get(name)()
    batched = compute_all(metric, inputs)
    single = [compute_all(metric, {key: value[i : i + 1] if value.ndim == 3 else value for key, value in inputs.items()})[0] for i in range(4)]
    np.testing.assert_allclose(batched, single, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_output_dtype_follows_maps(dtype):
    inputs = random_arrays((2, 16, 16))
    for name in METRICS.names():
        values = METRICS.get(name)().compute(torch.as_tensor(inputs["maps"], dtype=dtype), all_targets(inputs, dtype))
        assert values.dtype == dtype and values.shape == (2,), name


def test_declared_metadata():
    expected = {
        "nss": (("fixations",), True, (-math.inf, math.inf)),
        "cc": (("density",), True, (-1.0, 1.0)),
        "kl": (("density",), False, (0.0, math.inf)),
        "ssim": (("density",), True, (-1.0, 1.0)),
        "sim": (("density",), True, (0.0, 1.0)),
        "info_gain": (("fixations", "centre_bias"), True, (-math.inf, math.inf)),
        "auc_judd": (("fixations",), True, (0.0, 1.0)),
        "auc_shuffled": (("fixations", "negatives"), True, (0.0, 1.0)),
        "cc_cb": (("density", "centre_bias"), True, (-2.0, 2.0)),
        "nss_cb": (("fixations", "centre_bias"), True, (-math.inf, math.inf)),
        "sim_cb": (("density", "centre_bias"), True, (-1.0, 1.0)),
        "kl_cb": (("density", "centre_bias"), False, (-math.inf, math.inf)),
    }
    for name, (needs, higher_is_better, value_range) in expected.items():
        metric = METRICS.get(name)
        assert (metric.name, metric.needs, metric.higher_is_better, metric.value_range) == (name, needs, higher_is_better, value_range)
    assert SSIM().settings == {"window": "gaussian", "sigma": 1.5, "data_range": 1.0, "minmax": True}
    for name in ("kl", "info_gain", "kl_cb"):
        assert METRICS.get(name)().settings == {"eps": 2.2204e-16}
    assert METRICS.get("sim_cb")().settings == {} and METRICS.get("auc_judd")().settings == {}


def test_bad_settings_and_shapes_raise():
    with pytest.raises(ValueError, match="unknown settings"):
        SSIM(gaussian=True)
    with pytest.raises(ValueError, match="window"):
        SSIM(window="box")
    with pytest.raises(ValueError, match="smaller than"):
        compute(SSIM(), *random_inputs((1, 8, 8))[:2])
    with pytest.raises(ValueError, match="one shape"):
        CC().compute(torch.zeros(1, 4, 4), GazeTargets(torch.zeros(1, 4, 5), torch.zeros(1, 4, 4)))


@pytest.mark.parametrize("name", METRICS.names())
def test_inputs_are_not_modified(name):
    inputs = random_arrays((2, 16, 16))
    maps, targets = torch.as_tensor(inputs["maps"]), all_targets(inputs, torch.float64)  # float64: no copy on entry
    inputs = [maps, *(getattr(targets, need) for need in NEEDS)]
    copies = [tensor.clone() for tensor in inputs]
    METRICS.get(name)().compute(maps, targets)
    for tensor, copy in zip(inputs, copies):
        assert torch.equal(tensor, copy)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", METRICS.names())
def test_cuda_matches_cpu(name):
    inputs = degenerate_arrays()
    maps, targets = torch.as_tensor(inputs["maps"], dtype=torch.float32), all_targets(inputs)
    on_gpu_targets = GazeTargets(**{need: getattr(targets, need).cuda() for need in NEEDS})
    metric = METRICS.get(name)()
    on_gpu = metric.compute(maps.cuda(), on_gpu_targets)
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), metric.compute(maps, targets), rtol=1e-5, atol=1e-6, equal_nan=True)
