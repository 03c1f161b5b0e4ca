"""Occlusion, LIME and Kernel SHAP: equal to direct Captum calls, seeded per image, on grid superpixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import KernelShap, Lime, Occlusion
from scipy.ndimage import gaussian_filter
from skimage.segmentation import slic
from torch import nn

from gazebench.errors import UserError
from gazebench.methods.base import image_seed, to_grid
from gazebench.methods.gradient import make_baseline
from gazebench.methods.perturbation import SuperpixelMethod
from gazebench.models.base import ModelAdapter
from gazebench.registry import METHODS
from tests.fixtures.tiny_models import TinyCNN

GRID = 40
SIZE = 32
CLOSE = {"rtol": 1e-4, "atol": 1e-5}
SAMPLED = {"lime": Lime, "kernelshap": KernelShap}
FAST = {"n_samples": 16, "n_segments": 12}  # small, so the tests stay quick


class Scaled(nn.Module):
    """TinyCNN with logits x 100: LIME's Lasso (alpha 0.01) would zero the tiny logit changes of random weights."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = TinyCNN()

    def forward(self, x, *extra):
        logits = 100 * self.net(x)
        return logits * extra[0][:, :1] + extra[0][:, 1:] if extra else logits


class Quadrant(nn.Module):
    """Logit 0 = the mean of the input's top-left quadrant (channel 0); the other logits are 0."""

    def forward(self, x):
        half = x.shape[-1] // 2
        score = x[:, 0, :half, :half].mean(dim=(1, 2))
        return torch.stack([score, 0 * score, 0 * score], dim=1)


def adapter_for(module: nn.Module, input_size: int = SIZE, name: str = "scaled") -> ModelAdapter:
    return ModelAdapter(name=name, module=module.eval(), class_names=["a", "b", "c"], cam_layer=module, input_size=input_size, mean=(0.5,) * 3, std=(0.25,) * 3)


@pytest.fixture(scope="module")
def scaled() -> ModelAdapter:
    return adapter_for(Scaled())


def grid_images(count: int, offset: int = 0) -> torch.Tensor:
    """Smooth grey images in [0, 1] (SLIC merges pure pixel noise into a single superpixel)."""
    rng = np.random.default_rng(100 + offset)
    smooth = np.stack([gaussian_filter(rng.random((GRID, GRID)), 3) for _ in range(count)])
    low, high = smooth.min(axis=(1, 2), keepdims=True), smooth.max(axis=(1, 2), keepdims=True)
    return torch.tensor((smooth - low) / (high - low), dtype=torch.float32)[:, None]


def seeds_for(count: int, offset: int = 0) -> list[int]:
    return [image_seed(7, f"img{offset + i}") for i in range(count)]


def targets_for(count: int) -> torch.Tensor:
    return torch.arange(count) % 3


def slic_labels(grey: torch.Tensor, n_segments: int) -> torch.Tensor:
    """SLIC as the method documents it (compactness 0.1 for [0, 1] grey images), straight from scikit-image."""
    labels = slic(grey.double().numpy(), n_segments=n_segments, compactness=0.1, channel_axis=None, start_label=0)
    return torch.from_numpy(labels.astype(np.int64))


def sampled_at(labels: torch.Tensor, size: int) -> torch.Tensor:
    """Grid labels read at the centres of a size x size model input's pixels, relabelled 0..K-1: [1, 1, size, size]."""
    index = ((torch.arange(size) + 0.5) * labels.shape[-1] / size).floor().long()
    return torch.unique(labels[index][:, index], return_inverse=True)[1][None, None]


def captum_map(explainer: type, adapter: ModelAdapter, inputs: torch.Tensor, targets, seeds, masks, n_samples: int, extra: tuple = ()) -> torch.Tensor:
    """Captum's own call per image, seeded with torch.manual_seed(seed_i), one row per pass (the method uses chunks)."""
    black = make_baseline(adapter, inputs, "black")
    maps = []
    for i in range(len(inputs)):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seeds[i])
            maps.append(
                explainer(adapter.module).attribute(
                    inputs[i : i + 1],
                    baselines=black,
                    target=int(targets[i]),
                    feature_mask=masks[i],
                    n_samples=n_samples,
                    perturbations_per_eval=1,
                    additional_forward_args=tuple(t[i : i + 1] for t in extra) or None,
                )
            )
    return torch.cat(maps)


def test_the_three_methods_are_registered_as_perturbation_methods():
    rows = {name: (cls.family, cls.library, cls.postprocess) for name in ("occlusion", "lime", "kernelshap") for cls in [METHODS.get(name)]}
    assert rows == {
        "occlusion": ("perturbation", "captum", "abs"),
        "lime": ("perturbation", "captum + scikit-image", "abs"),
        "kernelshap": ("perturbation", "captum + scikit-image", "abs"),
    }
    assert METHODS.get("occlusion")().passes() == (4 * 4 + 1, 0)
    assert METHODS.get("occlusion")(stride=0.0625).passes() == (13 * 13 + 1, 0)
    assert METHODS.get("lime")().passes() == (64, 0) and METHODS.get("lime")(n_samples=1000).params["n_samples"] == 1000
    assert METHODS.get("kernelshap")().params == {"n_samples": 64, "n_segments": 50, "compactness": 0.1, "baseline": "black"}


@pytest.mark.parametrize("name", sorted(SAMPLED))
def test_raw_maps_equal_captum_on_slic_of_the_input_when_called_directly(scaled, name):
    images, targets, seeds = grid_images(2), targets_for(2), seeds_for(2)
    inputs = scaled.preprocess(images)
    method = METHODS.get(name)(**FAST)
    raw = method.attribute(scaled, inputs, targets, seeds)
    grey = inputs.mean(dim=1)
    grey = (grey - grey.amin(dim=(1, 2), keepdim=True)) / (grey.amax(dim=(1, 2), keepdim=True) - grey.amin(dim=(1, 2), keepdim=True))
    masks = [slic_labels(g, FAST["n_segments"])[None, None] for g in grey]
    expected = captum_map(SAMPLED[name], scaled, inputs, targets, seeds, masks, FAST["n_samples"])
    assert raw.shape == inputs.shape and (raw != 0).any()
    torch.testing.assert_close(raw, expected, **CLOSE)


@pytest.mark.parametrize("name", sorted(SAMPLED))
def test_maps_equal_captum_on_slic_of_the_grid_image(scaled, name):
    images, targets, seeds = grid_images(2), targets_for(2), seeds_for(2)
    maps = METHODS.get(name)(**FAST)(scaled, images, targets, seeds, GRID)
    masks = [sampled_at(slic_labels(image[0], FAST["n_segments"]), SIZE) for image in images]
    expected = captum_map(SAMPLED[name], scaled, scaled.preprocess(images), targets, seeds, masks, FAST["n_samples"])
    assert (maps > 0).any()
    torch.testing.assert_close(maps, to_grid(expected, "abs", GRID), **CLOSE)


def test_occlusion_equals_captum_occlusion_with_the_window_in_pixels(scaled):
    images, targets = grid_images(2), targets_for(2)
    inputs = scaled.preprocess(images)
    raw = METHODS.get("occlusion")(window=0.25, stride=0.125).attribute(scaled, inputs, targets, seeds_for(2))
    black = make_baseline(scaled, inputs, "black")
    expected = Occlusion(scaled.module).attribute(inputs, sliding_window_shapes=(3, 8, 8), strides=(3, 4, 4), baselines=black, target=targets)
    assert (raw != 0).any()
    torch.testing.assert_close(raw, expected, **CLOSE)


@pytest.mark.parametrize("name", ["occlusion", "lime", "kernelshap"])
def test_maps_do_not_depend_on_batch_size_or_rows_per_pass(scaled, name):
    params = {} if name == "occlusion" else FAST
    images, targets, seeds = grid_images(3), targets_for(3), seeds_for(3)
    batched = METHODS.get(name)(**params)(scaled, images, targets, seeds, GRID)
    single = torch.cat([METHODS.get(name)(**params)(scaled, images[i : i + 1], targets[i : i + 1], seeds[i : i + 1], GRID) for i in range(3)])
    torch.testing.assert_close(batched, single, **CLOSE)
    for max_rows in (2, 3):  # occlusion: groups of 2 + 1 images, then 3 images one perturbation each
        chunked_method = METHODS.get(name)(**params)
        chunked_method.max_rows = max_rows
        torch.testing.assert_close(batched, chunked_method(scaled, images, targets, seeds, GRID), **CLOSE)


@pytest.mark.parametrize("name", sorted(SAMPLED))
def test_seeds_decide_the_samples_and_the_global_rng_is_left_untouched(scaled, name):
    images, targets = grid_images(2), targets_for(2)
    method = METHODS.get(name)(**FAST)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = method(scaled, images, targets, seeds_for(2), GRID)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(first, method(scaled, images, targets, seeds_for(2), GRID))
    other = method(scaled, images, targets, seeds_for(2, offset=10), GRID)
    assert not torch.allclose(first[0], other[0]) and not torch.allclose(first[1], other[1])
    assert torch.equal(torch.get_rng_state(), state)


def test_superpixels_come_from_the_grid_image_whatever_the_model_input_size(monkeypatch):
    seen: dict[int, list[torch.Tensor]] = {}
    original = SuperpixelMethod.feature_masks

    def recording(self, inputs):
        masks = original(self, inputs)
        seen[inputs.shape[-1]] = masks
        return masks

    monkeypatch.setattr(SuperpixelMethod, "feature_masks", recording)
    images = grid_images(2)
    for size in (24, 48):
        METHODS.get("kernelshap")(n_samples=4, n_segments=12)(adapter_for(Scaled(), input_size=size), images, targets_for(2), seeds_for(2), GRID)
    for i, image in enumerate(images):
        labels = slic_labels(image[0], 12)
        assert int(labels.max()) >= 5  # a real partition, not one segment
        for size in (24, 48):
            assert torch.equal(seen[size][i], sampled_at(labels, size))


def test_occlusion_puts_all_its_mass_in_the_quadrant_the_logit_reads():
    adapter = adapter_for(Quadrant(), name="quadrant")
    images = grid_images(2)
    inputs = adapter.preprocess(images)
    raw = METHODS.get("occlusion")(window=0.125, stride=0.125).attribute(adapter, inputs, torch.zeros(2, dtype=torch.long), seeds_for(2))
    half = SIZE // 2
    assert (raw[:, :, :half, :half] > 0).all()  # every pixel is brighter than the black baseline
    outside = raw.clone()
    outside[:, :, :half, :half] = 0
    assert (outside == 0).all()
    # non-overlapping 4 x 4 windows: each pixel gets its window's effect, sum over the window of (x - black) / quadrant area
    black = make_baseline(adapter, inputs, "black")
    window_sums = F.avg_pool2d((inputs - black)[:, :1, :half, :half], 4) * 16 / half**2
    expected = window_sums.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3)[:, 0]
    torch.testing.assert_close(raw[:, 0, :half, :half], expected, **CLOSE)
    grid_maps = METHODS.get("occlusion")(window=0.125, stride=0.125)(adapter, images, torch.zeros(2, dtype=torch.long), seeds_for(2), GRID)
    quadrant_share = grid_maps[:, : GRID // 2, : GRID // 2].sum(dim=(1, 2)) / grid_maps.sum(dim=(1, 2))
    assert (quadrant_share > 0.97).all()  # only the bilinear resize to the grid blurs the edge


def test_a_single_superpixel_gives_the_exact_shapley_value_and_a_warning(scaled):
    noise = torch.rand(1, 1, GRID, GRID, generator=torch.Generator().manual_seed(0))
    assert int(slic_labels(noise[0, 0], FAST["n_segments"]).max()) == 0  # SLIC merges unstructured noise into one region
    method = METHODS.get("kernelshap")(**FAST)
    maps = method(scaled, noise, torch.tensor([1]), seeds_for(1), GRID)
    with torch.no_grad():
        inputs = scaled.preprocess(noise)
        difference = scaled.module(inputs)[0, 1] - scaled.module(make_baseline(scaled, inputs, "black"))[0, 1]
    torch.testing.assert_close(maps, torch.full_like(maps, 3 * difference.abs().item()), **CLOSE)
    assert method.warnings == ["kernelshap on scaled: SLIC found a single superpixel in an image (noise without structure); its map is constant"]


@pytest.mark.parametrize("name", ["occlusion", "lime", "kernelshap"])
def test_each_rows_extra_input_reaches_the_model(scaled, name):
    params = {} if name == "occlusion" else FAST
    images, targets, seeds = grid_images(2), targets_for(2), seeds_for(2)
    extra = torch.tensor([[1.0, 0.0, 0.0, 0.0], [-2.0, 0.5, 0.0, 1.0]])
    method = METHODS.get(name)(**params)
    method.max_rows = 5
    maps = method(scaled, images, targets, seeds, GRID, (extra,))
    for row in range(2):
        fixed = METHODS.get(name)(**params)(adapter_for(FixedExtra(scaled.module, extra[row : row + 1])), images[row : row + 1], targets[row : row + 1], seeds[row : row + 1], GRID)
        torch.testing.assert_close(maps[row : row + 1], fixed, **CLOSE)


class FixedExtra(nn.Module):
    def __init__(self, network: nn.Module, extra_row: torch.Tensor):
        super().__init__()
        self.network, self.extra_row = network, extra_row

    def forward(self, x):
        return self.network(x, self.extra_row.expand(len(x), -1))


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("lime", {"n_samples": 0}, "n_samples must be >= 1"),
        ("kernelshap", {"n_samples": 1}, "n_samples must be >= 2"),
        ("lime", {"n_segments": 1}, "n_segments must be >= 2"),
        ("kernelshap", {"compactness": 0}, "compactness must be > 0"),
        ("lime", {"baseline": "grey"}, "baseline must be one of black, zero"),
        ("lime", {"n_samples": 2.5}, "n_samples must be an int"),
        ("kernelshap", {"segments": 50}, "has no parameter segments"),
        ("occlusion", {"window": 0}, r"window must be in \(0, 1\]"),
        ("occlusion", {"window": 1.5}, r"window must be in \(0, 1\]"),
        ("occlusion", {"stride": 0.5}, r"stride must be <= window \(0.25\)"),
        ("occlusion", {"window": "8"}, "window must be a float"),
    ],
)
def test_invalid_parameters_raise_user_errors(name, params, message):
    with pytest.raises(UserError, match=message):
        METHODS.get(name)(**params)


def test_nearest_resizing_reads_pixel_centres():
    """The label map the model sees is the grid labels at its pixel centres (``nearest-exact``)."""
    labels = torch.arange(GRID * GRID).view(GRID, GRID) // 7
    resized = F.interpolate(labels[None, None].float(), size=(SIZE, SIZE), mode="nearest-exact").long()
    assert torch.equal(torch.unique(resized, return_inverse=True)[1], sampled_at(labels, SIZE))
