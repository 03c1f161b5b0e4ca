"""DeepLift's completeness: raw attributions sum to f(x) - f(baseline) for the explained logit
within 1e-4 (relative), or ``method.warnings`` names the module and the function where they need not."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from gazebench.api import wrap_model
from gazebench.data.egd import EGDDataset
from gazebench.data.sample import collate
from gazebench.methods.deeplift import DeepLiftMethod
from gazebench.methods.gradient import make_baseline
from gazebench.registry import MODELS
from tests.fixtures.tiny_models import zoo_adapter

CLASSES = ["Normal", "CHF", "pneumonia"]
RTOL = 1e-4
ZOO_GRID = 64


def completeness(adapter, images: torch.Tensor, dtype: torch.dtype = torch.float32, extra: tuple = ()) -> tuple[torch.Tensor, list[str]]:
    """(|sum of raw attributions - (f(x) - f(black))| / |f(x) - f(black)| per image, the method's warnings)."""
    adapter.module.to(dtype).eval()
    inputs = adapter.preprocess(images).to(dtype)
    targets = torch.arange(len(images)) % len(adapter.class_names)
    method = DeepLiftMethod()
    total = method.attribute(adapter, inputs, targets, [0] * len(images), extra=extra).detach().flatten(1).sum(dim=1)
    baseline = make_baseline(adapter, inputs, "black").expand_as(inputs)
    rows = torch.arange(len(images))
    with torch.no_grad():
        difference = adapter.module(inputs, *extra)[rows, targets] - adapter.module(baseline, *extra)[rows, targets]
    assert difference.abs().min() > 1e-6, "no logit change to explain"
    return (total - difference).abs() / difference.abs(), method.warnings


def images(n: int, size: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed))


def conv_relu_maxpool_network() -> nn.Module:
    """The issue's network: an nn.ReLU feeding an overlapping max pool directly."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2, 1), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3),
    )  # fmt: skip


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_relu_feeding_a_max_pool_keeps_completeness(dtype):
    """Captum hooks the ReLU's output and the pool's input on one tensor; gazebench separates them (was 8% off)."""
    network = conv_relu_maxpool_network()
    adapter = wrap_model(network, CLASSES, cam_layer=network[3], input_size=32, name="small")
    relative, warnings = completeness(adapter, images(3, 32), dtype)
    assert relative.max() < RTOL
    assert warnings == []


@pytest.mark.parametrize("pool", ["1d", "3d"])
def test_one_and_three_dimensional_max_pools_keep_completeness(pool):
    """Captum's MaxPool1d / MaxPool3d rules lose overlapping windows' deltas as its 2-d rule does (were 16% / 170% off)."""
    torch.manual_seed(0)
    if pool == "1d":
        middle, features = [nn.Flatten(2), nn.MaxPool1d(3, 2, 1)], 8 * 128
    else:
        middle, features = [nn.Unflatten(1, (1, 8)), nn.MaxPool3d(3, 2, 1)], 4 * 8 * 8
    network = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), *middle, nn.Flatten(), nn.Linear(features, 3))
    adapter = wrap_model(network, CLASSES, cam_layer=network[0], input_size=16, name=f"maxpool{pool}")
    relative, warnings = completeness(adapter, images(2, 16))
    assert relative.max() < RTOL
    assert warnings == []


@pytest.mark.parametrize("architecture, size", [("alexnet", 64), ("vgg11", 64)])
def test_torchvision_alexnet_and_vgg_are_complete(architecture, size):
    """Conv -> ReLU -> MaxPool throughout, no functional nonlinearity: complete, nothing to warn about."""
    torch.manual_seed(0)
    network = getattr(torchvision.models, architecture)(num_classes=3)
    adapter = wrap_model(network, CLASSES, cam_layer=None, input_size=size, name=architecture)
    relative, warnings = completeness(adapter, images(2, size))
    assert relative.max() < RTOL
    assert warnings == []


class ModuleReluDenseNet(torchvision.models.DenseNet):
    """torchvision's DenseNet with the F.relu of its forward made a module (same outputs)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.final_relu = nn.ReLU()

    def forward(self, x):
        features = self.final_relu(self.features(x))
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(features, 1), 1))


def test_torchvision_densenet121_warns_about_its_functional_relu_and_only_that_breaks_completeness():
    """The warning is the whole story: with that F.relu made a module, DeepLift is complete (the stem's relu0 -> pool0 too)."""
    torch.manual_seed(0)
    stock = torchvision.models.densenet121(num_classes=3)
    relative, warnings = completeness(wrap_model(stock, CLASSES, cam_layer=None, input_size=64, name="densenet121"), images(2, 64))
    assert warnings == ["deeplift on densenet121: torchvision DenseNet.forward applies a functional F.relu; DeepLift uses plain gradients there"]
    assert relative.max() > RTOL  # the warning is not idle
    patched = ModuleReluDenseNet(growth_rate=32, block_config=(6, 12, 24, 16), num_init_features=64, num_classes=3)
    patched.load_state_dict(stock.state_dict())
    relative, warnings = completeness(wrap_model(patched, CLASSES, cam_layer=None, input_size=64, name="densenet121"), images(2, 64))
    assert relative.max() < RTOL
    assert warnings == []


class Block(nn.Module):
    def __init__(self, functional: bool):
        super().__init__()
        self.conv, self.functional, self.relu = nn.Conv2d(8, 8, 3, padding=1), functional, nn.ReLU()

    def forward(self, x):
        return (F.relu(self.conv(x)) if self.functional else self.relu(self.conv(x))) + x


class Gated(nn.Module):
    """A user's network: residual blocks with F.relu, a sigmoid and a gating product in its own forward
    (``functional``), or the same with nn.ReLU / nn.Sigmoid modules and no product."""

    def __init__(self, functional: bool):
        super().__init__()
        torch.manual_seed(2)
        self.functional = functional
        self.stem, self.gate, self.sigmoid = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 1), nn.Sigmoid()
        self.blocks = nn.Sequential(*(Block(functional) for _ in range(4)))
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        x = self.blocks(self.stem(x))
        x = x * torch.sigmoid(self.gate(x)) if self.functional else self.sigmoid(self.gate(x))
        return self.head(x.mean(dim=(2, 3)))


def test_functional_nonlinearities_are_named_by_module_and_function_and_are_all_that_breaks_completeness():
    network = Gated(functional=True)
    relative, warnings = completeness(wrap_model(network, CLASSES, cam_layer=network.stem, input_size=16, name="gated"), images(2, 16))
    assert relative.max() > RTOL  # what the warnings announce
    assert len(warnings) == 3
    blocks, product, sigmoid = sorted(warnings)
    assert f"{__name__}.Block ('blocks.0', 'blocks.1', 'blocks.2' and 1 more) calls relu" in blocks
    assert f"{__name__}.Gated (the model itself) calls mul" in product
    assert f"{__name__}.Gated (the model itself) calls sigmoid" in sigmoid
    assert all(line.startswith("deeplift on gated:") and "need not sum to f(x) - f(baseline)" in line for line in warnings)
    assert all(not module._forward_pre_hooks and not module._forward_hooks for module in network.modules())  # nothing left behind
    network = Gated(functional=False)  # the same with modules: complete, nothing to warn about
    relative, warnings = completeness(wrap_model(network, CLASSES, cam_layer=network.stem, input_size=16, name="gated"), images(2, 16))
    assert relative.max() < RTOL
    assert warnings == []


@pytest.fixture(scope="module")
def zoo_batch(tiny_synth):
    dataset = EGDDataset(tiny_synth, split="all", grid=ZOO_GRID, name="synth")
    return collate([dataset[0], dataset[1]])


@pytest.mark.parametrize("model", [name for name in MODELS.names() if ":" not in name] + ["torchvision:resnet18", "timm:resnet18"])
def test_every_seed_model_is_complete_or_warned(model, zoo_batch):
    """timm's ResNet stem (act1 -> maxpool, no TensorSeparator) was 16% off without a word."""
    adapter = zoo_adapter(model, ZOO_GRID)
    relative, warnings = completeness(adapter, zoo_batch.images, extra=tuple(adapter.inputs_from(zoo_batch)))
    assert relative.max() < RTOL or warnings, f"{model}: attributions {relative.max():.1e} off f(x) - f(baseline), no warning"
