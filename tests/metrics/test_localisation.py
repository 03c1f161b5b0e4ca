"""Otsu thresholds, Otsu-IoU and hit rate against scikit-image / NumPy references and hand cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.filters import threshold_otsu

from gazebench.metrics import localisation
from gazebench.metrics.base import GazeTargets
from gazebench.metrics.localisation import FRACTION_BITS, HitRate, MinMaxCodes, OtsuIoU, numpy_histogram, otsu_masks, otsu_thresholds
from gazebench.registry import METRICS
from tests.metrics.reference_localisation import hit_reference, iou_reference, minmax_reference, otsu_mask_reference

TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}


def blob_maps(shape, seed=0):
    """Non-negative maps: one smooth Gaussian blob at a random place plus weak noise (float32)."""
    rng = np.random.default_rng(seed)
    batch, height, width = shape
    rows, cols = np.mgrid[:height, :width]
    centre_rows = rng.uniform(0, height, batch)[:, None, None]
    centre_cols = rng.uniform(0, width, batch)[:, None, None]
    sigma = rng.uniform(2, 6, batch)[:, None, None]
    blob = np.exp(-((rows - centre_rows) ** 2 + (cols - centre_cols) ** 2) / (2 * sigma**2))
    return (blob + 0.2 * rng.random(shape)).astype(np.float32)


def random_masks(shape, seed=0):
    """Random masks: a disc, random scattered pixels, and an empty one, cycling over the batch."""
    rng = np.random.default_rng(seed)
    batch, height, width = shape
    rows, cols = np.mgrid[:height, :width]
    masks = np.zeros(shape, dtype=bool)
    for index in range(batch):
        kind = index % 3
        if kind == 0:
            centre = rng.uniform(0, [height, width])
            masks[index] = (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 < rng.uniform(9, 60)
        elif kind == 1:
            masks[index] = rng.random((height, width)) < 0.3
    return masks


def score(metric, maps, masks):
    """Run a metric through its public call on NumPy inputs -> NumPy [B]."""
    targets = GazeTargets(mask=torch.as_tensor(masks))
    return metric(torch.as_tensor(maps), targets).numpy()


@pytest.mark.parametrize("seed", range(4))
def test_otsu_thresholds_equal_skimage_exactly(seed):
    rng = np.random.default_rng(seed)
    shape = (5, int(rng.integers(4, 40)), int(rng.integers(4, 40)))
    candidates = {
        "uniform": rng.random(shape),
        "skewed": rng.random(shape) ** 6,  # many empty bins
        "few values": rng.integers(0, 4, shape) * 0.37,  # ties and long runs of empty bins
        "normal float32": rng.normal(size=shape).astype(np.float32),
        "blob": blob_maps(shape, seed),
    }
    for name, maps in candidates.items():
        expected = [threshold_otsu(image.astype(np.float64), nbins=256) for image in maps]
        np.testing.assert_array_equal(otsu_thresholds(torch.as_tensor(maps)).numpy(), expected, err_msg=name)


def test_histogram_assigns_values_on_bin_edges_as_numpy_does():
    """Values on the edges and one ulp either side are where a plain truncation goes one bin off."""
    rng = np.random.default_rng(5)
    rows = []
    for _ in range(8):
        low = rng.normal()
        edges = np.linspace(low, low + rng.uniform(0.01, 5), 257)
        inner = edges[1:-1]
        rows.append(np.concatenate([edges, np.nextafter(inner, -np.inf), np.nextafter(inner, np.inf), rng.uniform(edges[0], edges[-1], 50)]))
    values = torch.as_tensor(np.stack(rows))
    counts, centres = numpy_histogram(values, values.amin(dim=1), values.amax(dim=1), 256)
    for row, row_counts, row_centres in zip(rows, counts.numpy(), centres.numpy()):
        expected_counts, expected_edges = np.histogram(row, bins=256)
        np.testing.assert_array_equal(row_counts, expected_counts)
        np.testing.assert_array_equal(row_centres, (expected_edges[:-1] + expected_edges[1:]) / 2)


def test_otsu_thresholds_constant_map_gives_its_value_and_non_finite_gives_nan():
    maps = np.random.default_rng(0).random((4, 8, 8))
    maps[1] = 0.25
    maps[2, 3, 3] = np.nan
    maps[3, 0, 0] = np.inf
    thresholds = otsu_thresholds(torch.as_tensor(maps)).numpy()
    assert thresholds[0] == threshold_otsu(maps[0])
    assert thresholds[1] == 0.25 == threshold_otsu(maps[1])
    assert np.isnan(thresholds[2]) and np.isnan(thresholds[3])


def test_otsu_masks_match_skimage_and_flag_degenerate_maps():
    maps = blob_maps((6, 24, 20), seed=3).astype(np.float64)
    maps[4] = 0.0
    maps[5, 2, 2] = np.nan
    masks, valid = otsu_masks(torch.as_tensor(maps))
    assert valid.tolist() == [True, True, True, True, False, False]
    for index in range(4):
        np.testing.assert_array_equal(masks[index].numpy(), otsu_mask_reference(maps[index]))
        assert masks[index].any()
    assert not masks[4:].any()


def near_edge_maps(dtype, seed=0, shape=(4, 24, 24)):
    """Maps whose min-maxed pixels lie 2**-8 to 2**-30 half bin (or 0) from the half-bin boundaries k / 512, on offsets and spreads."""
    rng = np.random.default_rng(seed)
    low = rng.normal(0, 100, (shape[0], 1, 1))
    spread = 10.0 ** rng.uniform(-3, 3, (shape[0], 1, 1))
    offsets = rng.choice([-1.0, 1.0], shape) * 2.0 ** -rng.uniform(8, 30, shape) * (rng.random(shape) < 0.9)
    half_bins = rng.integers(0, 513, shape) + offsets
    maps = (low + half_bins / 512 * spread).astype(dtype)
    maps[:, 0, 0], maps[:, 0, 1] = low[:, 0, 0], (low + spread)[:, 0, 0]  # the min and max themselves
    return maps


def adversarial_maps(dtype, seed):
    """Named map sets where a float32 shortcut to numpy's bins would go wrong, or that take the exact path only."""
    rng = np.random.default_rng(seed)
    uniform = rng.random((4, 21, 19))
    on_edges = rng.integers(0, 513, (4, 21, 19)) / 512.0
    on_edges[:, 0, :2] = 0.0, 1.0
    candidates = {
        "uniform": uniform,
        "skewed": uniform**8,
        "five levels": np.floor(uniform * 5) / 4,  # every pixel on a bin edge
        "on edges": on_edges,
        "one ulp off edges": np.where(rng.random(on_edges.shape) < 0.5, np.nextafter(on_edges, 2), np.nextafter(on_edges, -1)),
        "near edges": near_edge_maps(np.float64, seed),
        "offset": 1000 + 0.01 * uniform,  # cancellation in x - min
        "negative": rng.normal(-5, 1, uniform.shape),
        "tiny spread": 1e-35 * uniform,  # below SAFE_SPREAD: all pixels rechecked
        "subnormal": 1e-40 * uniform,
        "blob 224": blob_maps((2, 224, 224), seed),
    }
    if dtype == np.float64:
        candidates["huge spread"] = 1e200 * uniform
    return {name: maps.astype(dtype) for name, maps in candidates.items()}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", range(2))
def test_otsu_masks_and_iou_equal_references_exactly_on_adversarial_maps(dtype, seed):
    for name, maps in adversarial_maps(dtype, seed).items():
        as_float64 = maps.astype(np.float64)
        masks, valid = otsu_masks(torch.as_tensor(maps))
        assert valid.all(), name
        for index, image in enumerate(as_float64):
            np.testing.assert_array_equal(masks[index].numpy(), otsu_mask_reference(image), err_msg=name)
        targets = random_masks(maps.shape, seed)
        with np.errstate(over="ignore"):
            seen = maps.astype(np.float32).astype(np.float64)  # Metric.__call__ scores maps.float()
        expected = np.array([iou_reference(image, mask) for image, mask in zip(seen, targets)], dtype=np.float32)
        np.testing.assert_array_equal(score(OtsuIoU(), maps, targets), expected, err_msg=name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_codes_recheck_the_pixels_a_float32_candidate_puts_in_the_wrong_bin(dtype):
    """Near-edge maps: plain float32 arithmetic misbins some pixels (so this test can fail); the codes match numpy exactly."""
    maps = near_edge_maps(dtype, seed=11)
    scaled = np.stack([minmax_reference(image) for image in maps.astype(np.float64)]).reshape(len(maps), -1)
    flat = maps.reshape(len(maps), -1)
    low = flat.min(axis=1, keepdims=True)
    scale = (512 / (flat.max(axis=1, keepdims=True).astype(np.float64) - low)).astype(np.float32)
    float32_half_bins = np.floor((flat - low).astype(np.float32) * scale)
    assert (float32_half_bins != np.floor(scaled * 512)).sum() >= 10
    codes = MinMaxCodes(torch.as_tensor(maps), None, 256)
    assert 0 < codes.uncertain.numel() < scaled.size
    expected = np.stack([np.histogram(row, bins=256)[0] for row in scaled])
    np.testing.assert_array_equal(codes.otsu_counts().numpy(), expected)
    for half_bin in (1, 255, 256, 257, 511):
        boundaries = torch.full((len(maps),), half_bin)
        np.testing.assert_array_equal(codes.above_half_bin(boundaries).numpy(), scaled > half_bin / 512, err_msg=str(half_bin))
        np.testing.assert_array_equal(codes.counts_above(boundaries).sum(dim=1).numpy(), (scaled > half_bin / 512).sum(axis=1))


def test_codes_recheck_only_a_few_pixels_of_smooth_maps():
    """The fast path's premise: about 2 in 2**FRACTION_BITS pixels of a smooth map lie within the recheck margin."""
    maps = blob_maps((4, 224, 224), seed=2)
    codes = MinMaxCodes(torch.as_tensor(maps), None, 256)
    assert 0 < codes.uncertain.numel() < 4 * maps.size / 2**FRACTION_BITS


@pytest.mark.parametrize("nbins", [64, 100, 1024])
def test_otsu_masks_with_other_bin_counts_match_skimage(nbins):
    """Powers of two up to 512 take the exact codes; 100 and 1024 the float64 copy."""
    maps = np.concatenate([blob_maps((3, 30, 26), seed=nbins), near_edge_maps(np.float32, nbins, (3, 30, 26))])
    masks, valid = otsu_masks(torch.as_tensor(maps), nbins=nbins)
    assert valid.all()
    for index, image in enumerate(maps.astype(np.float64)):
        np.testing.assert_array_equal(masks[index].numpy(), otsu_mask_reference(image, nbins), err_msg=str(index))


def test_iou_scored_in_row_chunks_equals_one_pass(monkeypatch):
    maps = blob_maps((7, 12, 10), seed=6)
    maps[3] = 0.0  # a degenerate row inside a chunk
    masks = random_masks((7, 12, 10), seed=6)
    whole = score(OtsuIoU(), maps, masks)
    monkeypatch.setattr(localisation, "CHUNK_PIXELS", 2 * 12 * 10)  # chunks of 2, 2, 2, 1 rows
    np.testing.assert_array_equal(score(OtsuIoU(), maps, masks), whole)
    assert np.isnan(whole[3]) and np.isnan(whole).sum() == 1 + 7 // 3


def test_iou_reads_a_non_boolean_mask_as_non_zero_inside():
    maps = blob_maps((6, 16, 16), seed=4)
    masks = random_masks((6, 16, 16), seed=4)
    counts = masks.astype(np.uint8) * 3
    np.testing.assert_array_equal(score(OtsuIoU(), maps, counts), score(OtsuIoU(), maps, masks))
    np.testing.assert_array_equal(score(HitRate(), maps, counts), score(HitRate(), maps, masks))


@pytest.mark.parametrize("shape", [(6, 16, 16), (9, 20, 33), (6, 48, 40)])
def test_iou_and_hit_rate_match_references(shape):
    maps = blob_maps(shape, seed=shape[1])
    masks = random_masks(shape, seed=shape[2])
    as_float64 = maps.astype(np.float64)
    for metric, reference in ((OtsuIoU(), iou_reference), (HitRate(), hit_reference)):
        expected = [reference(m, k) for m, k in zip(as_float64, masks)]
        assert np.isnan(expected).sum() == shape[0] // 3  # the empty masks, and only those
        np.testing.assert_allclose(score(metric, maps, masks), expected, **TOLERANCE, err_msg=metric.name)


def test_binary_square_map_has_known_iou():
    maps = np.zeros((3, 10, 10), dtype=np.float32)
    maps[:, 2:6, 2:6] = 1.0  # Otsu separates the square exactly
    masks = np.zeros((3, 10, 10), dtype=bool)
    masks[0, 2:6, 2:6] = True  # the same square
    masks[1, 2:6, 4:8] = True  # half overlap: 8 / (16 + 16 - 8)
    masks[2, 7:9, 7:9] = True  # disjoint
    np.testing.assert_allclose(score(OtsuIoU(), maps, masks), [1.0, 8 / 24, 0.0], rtol=0, atol=1e-7)


def test_pixels_equal_to_the_threshold_are_background():
    maps = np.zeros((1, 10, 10))
    maps[0, 2:6, 2:6] = 1.0
    maps[0, 6:8, 2:6] = 1 / 512  # in the first bin, exactly its centre: Otsu's threshold
    assert otsu_thresholds(torch.as_tensor(maps)).item() == 1 / 512 == threshold_otsu(maps[0])
    masks = np.zeros((1, 10, 10), dtype=bool)
    masks[0, 2:8, 2:6] = True  # square and the 1/512 strip
    assert score(OtsuIoU(), maps, masks)[0] == pytest.approx(16 / 24) == iou_reference(maps[0], masks[0])


def test_hit_rate_hand_cases_and_degenerate_maps():
    maps = np.zeros((6, 5, 5), dtype=np.float32)
    masks = np.zeros((6, 5, 5), dtype=bool)
    masks[:, 1:3, 1:3] = True
    maps[0, 1, 2] = 3.0  # peak inside -> hit
    maps[1, 4, 4] = 3.0  # peak outside -> miss
    maps[2, 1, 1] = 3.0  # peak inside but the mask is empty -> NaN, not a hit
    masks[2] = False
    maps[3] = 1.0  # constant -> NaN (row 4 stays all zero -> NaN)
    maps[5, 1, 1], maps[5, 0, 0] = 3.0, np.inf  # non-finite -> NaN
    values = score(HitRate(), maps, masks)
    np.testing.assert_array_equal(values[:2], [1.0, 0.0])
    assert np.isnan(values[2:]).all()


def test_hit_rate_tie_is_decided_by_the_first_maximum_in_row_major_order():
    maps = np.zeros((2, 4, 4), dtype=np.float32)
    maps[:, 0, 3] = maps[:, 3, 0] = 1.0  # two equal peaks; (0, 3) comes first
    masks = np.zeros((2, 4, 4), dtype=bool)
    masks[0, 3, 0] = True  # only the second peak inside -> miss
    masks[1, 0, 3] = True  # the first peak inside -> hit
    np.testing.assert_array_equal(score(HitRate(), maps, masks), [0.0, 1.0])


def test_iou_is_nan_for_empty_masks_and_degenerate_maps_without_touching_other_rows():
    maps = blob_maps((5, 12, 12), seed=7)
    masks = random_masks((5, 12, 12), seed=1)
    masks[2] = masks[0]
    expected_first = iou_reference(maps[0].astype(np.float64), masks[0])
    maps[3] = 0.0
    masks[3] = masks[0]
    maps[4, 5, 5] = np.nan
    masks[4] = masks[0]
    values = score(OtsuIoU(), maps, masks)
    assert values[0] == pytest.approx(expected_first, abs=1e-6) and 0 < values[0] <= 1
    assert math.isnan(values[3]) and math.isnan(values[4])
    assert values.dtype == np.float32


def test_localisation_metrics_are_registered_with_their_contract():
    for name, cls in (("iou", OtsuIoU), ("hit_rate", HitRate)):
        assert METRICS.get(name) is cls
        assert cls.needs == ("mask",) and cls.higher_is_better and cls.value_range == (0.0, 1.0)
        with pytest.raises(ValueError, match=f"metric {name} needs mask"):
            cls()(torch.zeros(1, 4, 4), GazeTargets(density=torch.zeros(1, 4, 4)))


def test_mask_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="expected two"):
        score(OtsuIoU(), np.zeros((2, 4, 4), np.float32), np.zeros((2, 4, 5), bool))
