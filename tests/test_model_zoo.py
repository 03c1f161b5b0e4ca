"""Every registered method runs on every registered model (and on the generic families)."""

import pytest
import torch

from gazebench.data.egd import EGDDataset
from gazebench.data.sample import collate
from gazebench.errors import UserError
from gazebench.methods.base import image_seed
from gazebench.registry import METHODS, MODELS
from tests.fixtures.tiny_models import zoo_adapter

GRID = 64
CLASSES = ["Normal", "CHF", "pneumonia"]
GENERIC = ["torchvision:resnet18", "timm:resnet18"]


@pytest.fixture(scope="module")
def batch(tiny_synth):
    dataset = EGDDataset(tiny_synth, split="all", grid=GRID, name="synth")
    return collate([dataset[0], dataset[1]])


@pytest.mark.parametrize("model", [n for n in MODELS.names() if ":" not in n] + GENERIC)
def test_every_method_gives_finite_maps_on_every_model(model, batch):
    adapter = zoo_adapter(model, GRID).eval()
    extra = adapter.inputs_from(batch)
    targets = batch.labels.argmax(dim=1)
    seeds = [image_seed(0, i) for i in batch.image_ids]
    with torch.no_grad():
        logits = adapter.logits(batch.images, *extra)
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()
    for name in METHODS.names():
        method = METHODS.get(name)()
        try:
            method.check_model(adapter)
        except UserError as refusal:  # refused before any work, in one line naming the model (tests/methods/test_method_model_matrix.py)
            assert "\n" not in str(refusal) and model in str(refusal), str(refusal)
            continue
        maps = method(adapter, batch.images, targets, seeds, GRID, extra)
        assert maps.shape == (2, GRID, GRID), (model, name)
        assert torch.isfinite(maps).all(), (model, name)
