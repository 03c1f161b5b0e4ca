"""Every method on every registered model (and torchvision, timm, torchxrayvision networks): a map, or a one-line refusal.

Random weights at a small input size; sampling and perturbation methods with few samples so that the
whole matrix stays short.  A method either passes its pre-flight (``check_model``) and then gives
finite, non-negative maps of the grid's shape for a batch of two, or refuses before any work in
one line that names the model.  Temporal models get their extra inputs from a blank batch.
"""

from __future__ import annotations

import pytest
import torch

from gazebench.errors import UserError
from gazebench.methods.base import image_seed
from gazebench.methods.preflight import blank_batch
from gazebench.registry import METHODS, MODELS

SIZE = 64
GRID = 64
CHEAP = {  # parameters that keep the matrix short; the defaults are tested method by method
    "smoothgrad": {"n_samples": 2}, "gradshap": {"n_samples": 2}, "conductance": {"n_steps": 2}, "integrated_gradients": {"n_steps": 2},
    "lime": {"n_samples": 8, "n_segments": 8}, "kernelshap": {"n_samples": 8, "n_segments": 8}, "occlusion": {"window": 0.5, "stride": 0.5},
}  # fmt: skip
MODEL_NAMES = ["densenet121", "densenet_aug", "effnet_baseline", "heatmap_generator", "mimic_guided", "temporal_gaze", "unet_gaze", "torchvision:resnet18", "timm:resnet18", "xrv:densenet121-res224-all"]
CLASSES = ["Normal", "CHF", "pneumonia"]


def build(name: str):
    torch.manual_seed(0)
    spec = MODELS.get(name)
    if name.startswith("xrv:"):
        return spec.build_adapter(random_weights=True, input_size=SIZE).eval()
    return spec.build_adapter(class_names=CLASSES, input_size=SIZE).eval()


@pytest.fixture(scope="module")
def adapters():
    return {}


def test_every_registered_model_is_in_the_matrix():
    fixed = set(MODELS.fixed_names())
    assert fixed <= set(MODEL_NAMES), f"add {sorted(fixed - set(MODEL_NAMES))} to MODEL_NAMES"


@pytest.mark.parametrize("model_name", MODEL_NAMES)
def test_each_method_explains_the_model_or_refuses_it_in_one_line(adapters, model_name):
    adapter = adapters.setdefault(model_name, build(model_name))
    images = torch.rand(2, 1, GRID, GRID, generator=torch.Generator().manual_seed(1))
    targets = torch.tensor([0, 1])
    seeds = [image_seed(0, str(i)) for i in range(2)]
    extra = adapter.inputs_from(blank_batch(adapter, 2, torch.device("cpu"))) if adapter.extra_inputs is not None else ()
    explained, refused = [], {}
    for name in METHODS.fixed_names():
        method = METHODS.get(name)(**CHEAP.get(name, {}))
        try:
            method.check_model(adapter)
        except UserError as refusal:
            message = str(refusal)
            assert "\n" not in message and adapter.name in message, message
            refused[name] = message
            continue
        maps = method(adapter, images, targets, seeds, GRID, extra)
        assert maps.shape == (2, GRID, GRID), name
        assert torch.isfinite(maps).all() and (maps >= 0).all(), name
        explained.append(name)
    assert {"saliency", "gradcam"} <= set(explained), refused  # LRP may refuse random weights whose relevance it cannot conserve (a one-line refusal)
