"""Every registered method runs on every registered model (and on the generic families)."""

import pytest
import torch

from gazebench.data.egd import EGDDataset
from gazebench.data.sample import collate
from gazebench.methods.base import image_seed
from gazebench.models.training.recipes import load_recipe
from gazebench.registry import METHODS, MODELS

GRID = 64
CLASSES = ["Normal", "CHF", "pneumonia"]
GENERIC = ["torchvision:resnet18", "timm:resnet18"]


def small_adapter(name: str):
    """The model's embedded recipe at a small input size, random weights."""
    torch.manual_seed(0)
    spec = MODELS.get(name)
    if ":" in name:
        return spec.build_adapter(class_names=CLASSES, input_size=GRID)
    options = dict(load_recipe(name, "embedded")["model"])
    if "input_size" in options:
        options["input_size"] = GRID
    return spec.build_adapter(class_names=CLASSES, **options)


@pytest.fixture(scope="module")
def batch(tiny_synth):
    dataset = EGDDataset(tiny_synth, split="all", grid=GRID, name="synth")
    return collate([dataset[0], dataset[1]])


@pytest.mark.parametrize("model", [n for n in MODELS.names() if ":" not in n] + GENERIC)
def test_every_method_gives_finite_maps_on_every_model(model, batch):
    adapter = small_adapter(model).eval()
    extra = adapter.inputs_from(batch)
    targets = batch.labels.argmax(dim=1)
    seeds = [image_seed(0, i) for i in batch.image_ids]
    with torch.no_grad():
        logits = adapter.logits(batch.images, *extra)
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()
    for name in METHODS.names():
        method = METHODS.get(name)()
        maps = method(adapter, batch.images, targets, seeds, GRID, extra)
        assert maps.shape == (2, GRID, GRID), (model, name)
        assert torch.isfinite(maps).all(), (model, name)
