"""Models with extra inputs (the temporal model's gaze frames): every method holds them fixed, row by row."""

import pytest
import torch
from torch import nn

from gazebench.errors import UserError
from gazebench.methods.base import image_seed
from gazebench.models.base import ModelAdapter
from gazebench.registry import METHODS

GRID = 32


class ScaledCNN(nn.Module):
    """Logits of a tiny CNN, each row's logits shifted and scaled by that row's extra input."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(16, 3)

    def forward(self, x, extra):
        logits = self.fc(self.pool(self.relu(self.conv(x))).flatten(1))
        return logits * extra[:, :1] + extra[:, 1:]


class FixedExtra(nn.Module):
    """The same network with one row's extra input baked in (the reference)."""

    def __init__(self, network, extra_row):
        super().__init__()
        self.network, self.extra_row = network, extra_row

    def forward(self, x):
        return self.network(x, self.extra_row.expand(len(x), -1))


def adapter_of(module, cam_layer):
    return ModelAdapter("scaled", module, ["a", "b", "c"], cam_layer, input_size=GRID, mean=(0.5,) * 3, std=(0.25,) * 3)


@pytest.mark.parametrize("name", METHODS.names())
def test_each_method_passes_each_rows_extra_input_to_the_model(name):
    network = ScaledCNN().eval()
    images = torch.rand(3, 1, GRID, GRID, generator=torch.Generator().manual_seed(1))
    extra = torch.tensor([[1.0, 0.0, 0.0, 0.0], [-2.0, 0.5, 0.0, 1.0], [0.5, 1.0, -1.0, 0.0]])
    targets = torch.tensor([0, 1, 2])
    seeds = [image_seed(0, str(i)) for i in range(3)]
    batched_method = METHODS.get(name)()
    batched_method.max_rows = 5  # chunks that cut across images
    adapter = adapter_of(network, network.relu)
    adapter.extra_inputs = lambda batch: (extra[: len(batch.images)],)
    try:
        batched_method.check_model(adapter)
    except UserError as refusal:  # a method that cannot hold extra inputs (or needs a gaze head) says so in one line, before any work
        assert "\n" not in str(refusal) and ("extra input" in str(refusal) or "heatmap" in str(refusal))
        return
    batched = batched_method(adapter, images, targets, seeds, GRID, (extra,))
    for row in range(3):
        reference = FixedExtra(network, extra[row : row + 1]).eval()
        single = METHODS.get(name)()(adapter_of(reference, network.relu), images[row : row + 1], targets[row : row + 1], seeds[row : row + 1], GRID)
        torch.testing.assert_close(batched[row : row + 1], single, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(batched[0], batched[1])  # the rows really differ


def test_adapter_logits_take_the_extra_inputs():
    network = ScaledCNN().eval()
    adapter = adapter_of(network, network.relu)
    adapter.extra_inputs = lambda batch: (batch,)
    images = torch.rand(2, 1, GRID, GRID)
    extra = torch.tensor([[1.0, 0.0, 0.0, 0.0], [2.0, 0.0, 0.0, 0.0]])
    assert adapter.inputs_from(extra)[0] is extra
    logits = adapter.logits(images, *adapter.inputs_from(extra))
    torch.testing.assert_close(logits[1], FixedExtra(network, extra[1:])(adapter.preprocess(images[1:]))[0])
