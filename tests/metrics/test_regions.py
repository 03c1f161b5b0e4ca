"""Region shares (metrics/regions.py) against a per-image loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gazebench.metrics.regions import region_shares
from tests.metrics.reference_localisation import region_shares_reference

REGIONS = ["a", "b"]


def random_regions(shape, seed=0):
    """Four overlapping random regions (unsorted names); 'left_lung' is empty in row 1."""
    rng = np.random.default_rng(seed)
    regions = {name: rng.random(shape) < share for name, share in (("right_lung", 0.3), ("mediastinum", 0.2), ("left_lung", 0.3), ("aortic_knob", 0.05))}
    regions["left_lung"][1] = False
    return regions


def test_region_shares_match_a_loop_over_images_with_degenerate_rows():
    shape = (7, 18, 23)
    maps = (np.random.default_rng(1).random(shape) ** 2).astype(np.float32)
    maps[2] = 0.0  # zero total
    maps[3, 4, 4] = -0.1  # a negative pixel
    maps[4, 0, 0] = np.nan
    maps[5, 1, 1] = np.inf
    regions = random_regions(shape)
    shares, names = region_shares(torch.as_tensor(maps), {k: torch.as_tensor(v) for k, v in regions.items()})
    assert names == ["aortic_knob", "left_lung", "mediastinum", "right_lung"]
    assert shares.dtype == torch.float64 and shares.shape == (7, 4)
    expected = [region_shares_reference(m, {k: v[i] for k, v in regions.items()}) for i, m in enumerate(maps.astype(np.float64))]
    np.testing.assert_allclose(shares.numpy(), expected, rtol=1e-12, atol=0)
    assert np.isnan(shares[2:6].numpy()).all() and np.isnan(shares[1, 1].item())
    assert np.isfinite(shares[[0, 6]].numpy()).all()


def test_region_shares_of_a_partition_sum_to_one_and_overlaps_can_exceed_it():
    maps = torch.rand(3, 8, 8, dtype=torch.float64)
    top = torch.zeros(3, 8, 8, dtype=torch.bool)
    top[:, :4] = True
    shares, _ = region_shares(maps, {"top": top, "bottom": ~top})
    np.testing.assert_allclose(shares.sum(dim=1).numpy(), 1.0, rtol=1e-12)
    shares, _ = region_shares(maps, {"top": top, "everything": torch.ones_like(top)})
    assert (shares.sum(dim=1) > 1).all() and torch.allclose(shares[:, 0], torch.ones(3, dtype=torch.float64))


def test_region_shares_without_regions_and_with_a_wrong_shape():
    shares, names = region_shares(torch.rand(2, 4, 4), {})
    assert shares.shape == (2, 0) and names == []
    with pytest.raises(ValueError, match="expected two"):
        region_shares(torch.rand(2, 4, 4), {"a": torch.ones(2, 4, 5, dtype=torch.bool)})
