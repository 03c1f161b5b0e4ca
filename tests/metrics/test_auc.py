"""AUC-Judd and shuffled AUC: hand cases, ties, awkward value distributions, properties."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays as array_strategy
from scipy.stats import rankdata

from gazebench.metrics.auc import VALUE_BINS, AUCJudd, AUCShuffled, value_bins
from gazebench.metrics.base import GazeTargets
from tests.metrics.reference import (
    auc_judd_reference,
    auc_shuffled_reference,
    random_arrays,
)

pytestmark = pytest.mark.usefixtures("scoring_path")  # each test on the CPU kernels and on the torch code

TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}


def judd(maps, fixations) -> np.ndarray:
    maps, fixations = (torch.as_tensor(np.asarray(a, dtype=np.float64)) for a in (maps, fixations))
    return AUCJudd().compute(maps, GazeTargets(fixations=fixations)).numpy()


def shuffled(maps, fixations, negatives) -> np.ndarray:
    maps, fixations, negatives = (torch.as_tensor(np.asarray(a, dtype=np.float64)) for a in (maps, fixations, negatives))
    return AUCShuffled().compute(maps, GazeTargets(fixations=fixations, negatives=negatives)).numpy()


def test_auc_judd_hand_computed():
    # Fixated 0.8 and 0.35, not 0.1 and 0.4.  Thresholds 0.8: (FPR, TPR) = (0, 1/2); 0.35: (1/2, 1).
    # Trapezoids from (0, 0) to (1, 1): 0 + 1/2 * 3/4 + 1/2 * 1 = 0.875.
    saliency = [[[0.1, 0.4], [0.35, 0.8]]]
    fixations = [[[0, 0], [1, 3]]]  # counts are ignored: fixated or not
    assert judd(saliency, fixations)[0] == pytest.approx(0.875, abs=1e-12)


def test_auc_judd_hand_computed_with_ties():
    # Values 1, 2, 3 three times each; one 2 and one 3 fixated (7 other pixels).  Threshold 3:
    # (2/7, 1/2) -- the other two 3s count, >= --; threshold 2: (4/7, 1).  Area 1/14 + 3/14 + 3/7 = 5/7.
    saliency = [[[1, 1, 1], [2, 2, 2], [3, 3, 3]]]
    fixations = [[[0, 0, 0], [0, 1, 0], [0, 0, 1]]]
    assert judd(saliency, fixations)[0] == pytest.approx(5 / 7, abs=1e-12)


def test_auc_shuffled_hand_computed():
    # S = 0, 1, 2, 3.  Positives: value 2 twice, value 3 once.  Negatives: 0 once, 2 once, 3 twice.
    # Pairs won: 2 vs 0: 2, 2 vs 2: 2 * 1/2, 3 vs 0: 1, 3 vs 2: 1, 3 vs 3: 2 * 1/2 -> 6 of 3 * 4 pairs.
    saliency = [[[0.0, 1.0], [2.0, 3.0]]]
    fixations = [[[0, 0], [2, 1]]]
    negatives = [[[1, 0], [1, 2]]]
    assert shuffled(saliency, fixations, negatives)[0] == pytest.approx(0.5, abs=1e-12)


def test_perfect_and_inverted_maps():
    fixations = np.zeros((1, 6, 6))
    fixations[0, 2:4, 2:4] = 1
    negatives = 1 - fixations
    assert judd(fixations, fixations)[0] == pytest.approx(1.0)
    assert shuffled(fixations, fixations, negatives)[0] == pytest.approx(1.0)
    assert shuffled(1 - fixations, fixations, negatives)[0] == pytest.approx(0.0)


@pytest.mark.parametrize("levels", [None, 2, 7], ids=["continuous", "2 levels", "7 levels"])
@pytest.mark.parametrize("shape", [(3, 12, 12), (2, 17, 9)])
def test_both_aucs_match_references_with_ties(shape, levels):
    arrays = random_arrays(shape, seed=len(shape) + (levels or 0), levels=levels)
    maps, fixations, negatives = arrays["maps"], arrays["fixations"], arrays["negatives"]
    np.testing.assert_allclose(judd(maps, fixations), [auc_judd_reference(m, f) for m, f in zip(maps, fixations)], **TOLERANCE)
    np.testing.assert_allclose(shuffled(maps, fixations, negatives), [auc_shuffled_reference(*a) for a in zip(maps, fixations, negatives)], **TOLERANCE)


def awkward_maps(rng) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Value distributions that stress the value bins, with their fixations."""
    shape = (2, 16, 16)
    sparse = (rng.random(shape) < 0.1).astype(float)
    clustered = 1 + 1e-9 * rng.integers(0, 50, shape)  # every value in one bin ...
    clustered[:, 0, 0] = 1e6  # ... but the maximum
    relu = np.maximum(rng.normal(size=shape), 0)  # a plateau of zeros at the minimum
    relu_fixations = sparse.copy()
    relu_fixations[:, 5, 5] = 1
    relu[:, 5, 5] = 0  # a fixation on the plateau
    return {
        "negative values": (rng.normal(size=shape), sparse),
        "one crowded bin": (clustered, sparse),
        "zero plateau": (relu, relu_fixations),
        "half the pixels fixated": (rng.random(shape), (rng.random(shape) < 0.5).astype(float)),
        "huge range, denormal steps": (np.where(rng.random(shape) < 0.5, 5e-324 * rng.integers(0, 4, shape), 1e5 * rng.random(shape)), sparse),
    }


@pytest.mark.parametrize("case", list(awkward_maps(np.random.default_rng(0))))
def test_awkward_value_distributions_match_references(case):
    maps, fixations = awkward_maps(np.random.default_rng(0))[case]
    negatives = np.random.default_rng(1).integers(0, 3, maps.shape).astype(float)
    np.testing.assert_allclose(judd(maps, fixations), [auc_judd_reference(m, f) for m, f in zip(maps, fixations)], **TOLERANCE)
    np.testing.assert_allclose(shuffled(maps, fixations, negatives), [auc_shuffled_reference(*a) for a in zip(maps, fixations, negatives)], **TOLERANCE)


def test_value_bins_keep_the_minimum_alone_and_stay_monotone():
    saliency = torch.tensor([[0.0, 5e-324, 1e-300, 3.0, 1e5, 1e5], [2.0, 2.0, 2.5, 3.0, 3.0, 4.0]], dtype=torch.float64)
    low, high = saliency.amin(dim=1), saliency.amax(dim=1)
    bins = value_bins(saliency, low, high, torch.tensor([True, True]))
    assert bins[0, 0] == 0 and (bins[0, 1:] >= 1).all()  # a denormal step above the minimum is not the minimum
    assert bins[1].tolist()[:2] == [0, 0] and (bins[1, 2:] >= 1).all()  # the minimum, twice
    assert (bins.diff(dim=1) >= 0).all() and int(bins.max()) == VALUE_BINS - 1


maps_8x8 = array_strategy(np.float64, (2, 8, 8), elements=st.floats(-1e3, 1e3, width=32))
counts_8x8 = array_strategy(np.float64, (2, 8, 8), elements=st.sampled_from([0.0, 0.0, 0.0, 1.0, 2.0]))


@settings(max_examples=40, deadline=None)
@given(maps_8x8, counts_8x8, counts_8x8)
def test_aucs_lie_in_unit_interval_and_depend_only_on_ranks(maps, fixations, negatives):
    ranks = np.stack([rankdata(m, method="dense").reshape(m.shape) for m in maps])
    for values, ranked in ((judd(maps, fixations), judd(ranks, fixations)), (shuffled(maps, fixations, negatives), shuffled(ranks, fixations, negatives))):
        defined = ~np.isnan(values)
        assert ((values[defined] >= 0) & (values[defined] <= 1)).all()
        np.testing.assert_allclose(values, ranked, atol=1e-12, equal_nan=True)


@settings(max_examples=30, deadline=None)
@given(maps_8x8, counts_8x8, counts_8x8)
def test_shuffled_auc_with_roles_swapped_is_its_complement(maps, fixations, negatives):
    forward, backward = shuffled(maps, fixations, negatives), shuffled(maps, negatives, fixations)
    np.testing.assert_allclose(forward, 1 - backward, atol=1e-12, equal_nan=True)


def test_undefined_cases_give_nan_for_that_sample_only():
    arrays = random_arrays((5, 8, 8), seed=7)
    maps, fixations, negatives = arrays["maps"], arrays["fixations"], arrays["negatives"]
    fixations[1] = 0  # no fixations
    fixations[2] = 1  # every pixel fixated: no negative pixel for AUC-Judd
    negatives[3] = 0  # no negatives for the shuffled AUC
    maps[4] = 0.25  # constant map
    judd_values, shuffled_values = judd(maps, fixations), shuffled(maps, fixations, negatives)
    assert np.isfinite(judd_values[[0, 3]]).all() and np.isnan(judd_values[[1, 2, 4]]).all()
    assert np.isfinite(shuffled_values[[0, 2]]).all() and np.isnan(shuffled_values[[1, 3, 4]]).all()


def test_nan_counts_make_the_shuffled_auc_nan():
    arrays = random_arrays((2, 8, 8), seed=8)
    arrays["fixations"][1, 3, 3] = np.nan
    values = shuffled(arrays["maps"], arrays["fixations"], arrays["negatives"])
    assert np.isfinite(values[0]) and np.isnan(values[1])
