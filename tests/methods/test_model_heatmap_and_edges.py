"""``model_heatmap`` (the model's own predicted gaze) and the ``edges`` reference map (the image's Sobel edges)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import filters

from gazebench.errors import UserError
from gazebench.protocol import REFERENCE_MAPS
from gazebench.registry import METHODS
from gazebench.run.references import edge_maps
from tests.fixtures.tiny_models import zoo_adapter

GRID = 64


@pytest.mark.parametrize("name", ["unet_gaze", "densenet_aug", "heatmap_generator"])
def test_model_heatmap_is_the_sigmoid_of_the_gaze_head_on_the_grid(name):
    adapter = zoo_adapter(name, GRID).eval()
    images = torch.rand(2, 1, GRID, GRID, generator=torch.Generator().manual_seed(0))
    method = METHODS.get("model_heatmap")()
    method.check_model(adapter)
    maps = method(adapter, images, torch.tensor([0, 1]), [1, 2], GRID)
    with torch.no_grad():
        expected = adapter.gaze_head(adapter.preprocess(images)).sigmoid()[:, 0]
    expected = torch.nn.functional.interpolate(expected[:, None], size=(GRID, GRID), mode="bilinear", align_corners=False)[:, 0] if expected.shape[-1] != GRID else expected
    torch.testing.assert_close(maps, expected)
    assert torch.equal(maps, method(adapter, images, torch.tensor([2, 2]), [1, 2], GRID))  # what the model says a reader looks at: no class


def test_model_heatmap_refuses_a_model_without_a_heatmap_in_one_line():
    adapter = zoo_adapter("effnet_baseline", GRID)
    with pytest.raises(UserError, match=r"^model_heatmap: model effnet_baseline predicts no heatmap of its own \(unet_gaze, densenet_aug and heatmap_generator do\)$"):
        METHODS.get("model_heatmap")().check_model(adapter)


def test_edges_is_scikit_image_sobel_of_each_image_and_a_floor():
    images = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    maps = edge_maps(images)
    assert maps.shape == (3, 32, 32) and maps.dtype == torch.float32
    for image, edges in zip(images[:, 0].double().numpy(), maps.numpy()):
        np.testing.assert_allclose(edges, filters.sobel(image), rtol=1e-6, atol=1e-7)
    assert REFERENCE_MAPS["edges"] == "floor"
    flat = edge_maps(torch.full((1, 1, 32, 32), 0.5))
    assert float(flat.abs().max()) == 0.0  # a blank image has no edges
