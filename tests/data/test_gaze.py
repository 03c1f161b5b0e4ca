"""Gaze densities on the grid against a slow reference built at the original resolution."""

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter

from gazebench.data.gaze import EGD_CONVENTION, GazeConvention, Letterbox, egd_density, gaussian_density, reflacx_density


def reference_density(xs, ys, width, height, sigma, grid):
    """The EGD recipe literally: +1 per fixation on an image-sized canvas, blur, letterbox, normalise."""
    canvas = np.zeros((height, width))
    for x, y in zip(xs, ys):
        canvas[int(y), int(x)] += 1
    blurred = gaussian_filter(canvas, sigma, mode="constant", truncate=8.0)
    box = Letterbox(width, height, grid)
    scaled = np.asarray(Image.fromarray(blurred.astype(np.float32)).resize(box.scaled_size, Image.BILINEAR))
    out = np.zeros((grid, grid))
    ox, oy = box.offset
    out[oy : oy + scaled.shape[0], ox : ox + scaled.shape[1]] = scaled
    return out / out.sum()


def test_density_matches_the_original_resolution_recipe():
    rng = np.random.default_rng(0)
    width, height, grid, sigma = 300, 400, 56, 20.0
    xs, ys = rng.integers(0, width, 25), rng.integers(0, height, 25)
    ours = egd_density(torch.tensor(xs, dtype=torch.float64), torch.tensor(ys, dtype=torch.float64), torch.ones(25), Letterbox(width, height, grid), GazeConvention("egd", sigma, False)).numpy()
    reference = reference_density(xs, ys, width, height, sigma, grid)
    assert ours.sum() == pytest.approx(1.0, abs=1e-5)
    assert np.corrcoef(ours.ravel(), reference.ravel())[0, 1] > 0.995
    assert np.abs(ours - reference).max() < 0.05 * reference.max()


def test_density_is_zero_in_the_letterbox_padding_and_sums_to_one():
    box = Letterbox(100, 200, 50)  # scaled to 25 x 50, offset 12 px on the left
    density = egd_density(torch.tensor([0.0]), torch.tensor([100.0]), torch.ones(1), box, EGD_CONVENTION)
    assert box.scaled_size == (25, 50) and box.offset == (12, 0)
    assert density[:, :12].sum() == 0 and density[:, 37:].sum() == 0
    assert float(density.sum()) == pytest.approx(1.0, abs=1e-6)


def test_single_fixation_peaks_at_its_grid_pixel():
    box = Letterbox(400, 400, 40)  # 10 original px per grid px
    density = egd_density(torch.tensor([255.0]), torch.tensor([124.0]), torch.ones(1), box, GazeConvention("egd", 30.0, False))
    row, col = divmod(int(density.argmax()), 40)
    assert (row, col) == (12, 25)


def test_duration_weighting_follows_the_convention():
    box = Letterbox(100, 100, 20)
    x, y, durations = torch.tensor([10.0, 90.0]), torch.tensor([50.0, 50.0]), torch.tensor([0.1, 0.9])
    unweighted = egd_density(x, y, durations, box, GazeConvention("egd", 5.0, False))
    weighted = egd_density(x, y, durations, box, GazeConvention("egd", 5.0, True))
    assert unweighted[10, 2] == pytest.approx(float(unweighted[10, 18]), rel=1e-5)
    assert weighted[10, 18] / weighted[10, 2] == pytest.approx(9.0, rel=1e-4)


def test_no_fixation_gives_an_all_zero_map():
    empty = torch.zeros(0)
    density = gaussian_density(empty, empty, empty, empty, empty, torch.zeros(0, 4), 16)
    assert density.shape == (16, 16) and float(density.abs().sum()) == 0.0


def test_reflacx_density_uses_visual_angle_duration_and_the_shown_rectangle():
    box = Letterbox(200, 200, 100)  # half scale
    x, y = torch.tensor([50.0, 150.0]), torch.tensor([100.0, 100.0])
    durations = torch.tensor([0.2, 0.6])
    per_degree = torch.tensor([[20.0, 20.0], [20.0, 20.0]])
    everywhere = torch.tensor([[0.0, 0.0, 200.0, 200.0]] * 2)
    density = reflacx_density(x, y, durations, per_degree, everywhere, box)
    assert float(density.sum()) == pytest.approx(1.0, abs=1e-6)
    # duration-weighted: the 0.6 s fixation carries three times the 0.2 s one's peak
    assert density[50, 75] / density[50, 25] == pytest.approx(3.0, rel=1e-3)
    # sigma = 1 degree = 20 original px = 10 grid px: the value one sigma away is exp(-1/2) of the peak
    assert density[50, 85] / density[50, 75] == pytest.approx(float(np.exp(-0.5)), rel=0.05)
    clipped = reflacx_density(x, y, durations, per_degree, torch.tensor([[0.0, 0.0, 100.0, 200.0]] * 2), box)
    assert float(clipped[:, 50:].sum()) == 0.0 and float(clipped.sum()) == pytest.approx(1.0, abs=1e-6)
