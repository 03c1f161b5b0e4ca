"""``--max-batch-elements`` bounds every forward pass of every method (memory stays bounded).

Each method that accepts the model runs on a batch of two images with ``max_rows = 3``; a forward
pre-hook on the model records how many rows each pass holds.  Sampling, path and perturbation
methods expand the batch to 8-16 model inputs per image, so a method that ignored the limit (or
raised it, as Captum's conductance needs two rows per image and step pair) would show a larger pass.
"""

from __future__ import annotations

import pytest
import torch

from gazebench.errors import UserError
from gazebench.methods.base import image_seed
from gazebench.registry import METHODS, MODELS

GRID = 64
MAX_ROWS = 3
SAMPLING = {"smoothgrad", "gradshap", "integrated_gradients", "conductance", "occlusion", "lime", "kernelshap", "scorecam"}
CHEAP = {"lime": {"n_samples": 12, "n_segments": 8}, "kernelshap": {"n_samples": 12, "n_segments": 8}, "occlusion": {"window": 0.5, "stride": 0.25}}


@pytest.fixture(scope="module")
def adapter():
    torch.manual_seed(0)
    return MODELS.get("torchvision:resnet18").build_adapter(class_names=["Normal", "CHF", "pneumonia"], input_size=GRID).eval()


def rows_per_forward(adapter, name: str) -> list[int]:
    method = METHODS.get(name)(**CHEAP.get(name, {}))
    method.max_rows = MAX_ROWS
    try:
        method.check_model(adapter)
    except UserError as refusal:
        pytest.skip(str(refusal))
    seen: list[int] = []
    handle = adapter.module.register_forward_pre_hook(lambda module, args: seen.append(len(args[0])))
    try:
        coarse = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(1))  # smooth, so that SLIC finds superpixels
        images = torch.nn.functional.interpolate(coarse, size=(GRID, GRID), mode="bilinear", align_corners=False)
        method(adapter, images, torch.tensor([0, 1]), [image_seed(0, str(i)) for i in range(2)], GRID)
    finally:
        handle.remove()
    return seen


def test_the_sampling_methods_are_all_registered():
    assert SAMPLING <= set(METHODS.fixed_names())


@pytest.mark.parametrize("name", sorted(SAMPLING))
def test_no_forward_pass_holds_more_rows_than_allowed(adapter, name):
    seen = rows_per_forward(adapter, name)
    assert sum(seen) > 2 * MAX_ROWS, f"{name} ran {seen}: too few rows to test the limit"
    assert max(seen) <= MAX_ROWS, f"{name} ran passes of {seen} rows with max_rows={MAX_ROWS}"
