"""The pre-flight census: what one forward pass on a blank input runs, with each module's dotted name and type."""

from __future__ import annotations

import gc
import weakref
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gazebench.errors import UserError
from gazebench.methods import preflight
from gazebench.methods.preflight import Census, FunctionUse, ModuleUse, census
from gazebench.models.base import ModelAdapter


class Gate(nn.Module):
    """Squeeze-excitation-like: an nn.Sigmoid module, then a functional product x * gate."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Conv2d(4, 4, 1)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        return x * self.sigmoid(self.fc(x.mean((2, 3), keepdim=True)))


class Mixed(nn.Module):
    """A reused nn.ReLU, a functional F.relu, a parameter-only nonlinearity, an extra-input branch and a max pool."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.gate = Gate()
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.scale = nn.Parameter(torch.ones(4))
        self.frames = nn.Linear(2, 4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x, extra):
        x = self.pool(self.relu(self.conv1(x)))
        x = self.relu(self.gate(x))  # second use of the same nn.ReLU
        x = F.relu(self.conv2(x)) * torch.sigmoid(self.scale).view(1, -1, 1, 1)  # sigmoid of a parameter: not input-dependent
        frames = torch.tanh(self.frames(extra))  # extra-input branch: not input-dependent
        return self.fc(x.mean((2, 3)) + frames)


def mixed_adapter(name: str = "mixed", input_size: int = 16) -> ModelAdapter:
    network = Mixed()
    adapter = ModelAdapter(name=name, module=network, class_names=["a", "b", "c"], cam_layer=network.conv2, input_size=input_size)
    adapter.extra_inputs = lambda batch: (batch.images.new_ones(len(batch), 2) * len(batch.fixations[0]),)
    return adapter


def test_the_census_records_modules_calls_and_functions_in_order():
    found = census(mixed_adapter())
    assert isinstance(found, Census) and found.model == "mixed" and found.input_size == 16
    names = [use.name for use in found.modules]
    assert names == ["", "conv1", "relu", "pool", "gate", "gate.fc", "gate.sigmoid", "conv2", "frames", "fc"]
    relu = found.module("relu")
    assert relu == ModuleUse("relu", nn.ReLU, calls=2, input_calls=2, leaf=True, output_shape=(2, 4, 16, 16))
    assert [use.name for use in found.reused()] == ["relu"]
    assert found.leaf_types() == Counter({nn.Conv2d: 3, nn.ReLU: 1, nn.MaxPool2d: 1, nn.Sigmoid: 1, nn.Linear: 2})
    assert found.module("frames").input_calls == 0 and found.module("conv2").input_calls == 1
    calls = [(use.module.name, use.function, use.functional) for use in found.functions]
    assert calls == [
        ("relu", "relu", False),
        ("pool", "max_pool2d", False),
        ("gate.sigmoid", "sigmoid", False),
        ("gate", "mul", True),
        ("", "relu", True),
    ]  # the parameter's sigmoid, the extra branch's tanh and linear operations are not there
    assert [(use.module.name, use.function) for use in found.functional()] == [("gate", "mul"), ("", "relu")]
    assert [use.module.kind for use in found.activations()] == [nn.ReLU, nn.MaxPool2d, nn.Sigmoid]


def test_refusal_lines_name_the_module_and_its_type():
    found = census(mixed_adapter())
    gate = next(use for use in found.functional() if use.function == "mul")
    assert isinstance(gate, FunctionUse)
    line = found.refusal("some_method", gate, "multiplies two input-dependent tensors")
    assert line == f"method some_method cannot explain model mixed: module 'gate' ({Gate.__module__}.Gate) multiplies two input-dependent tensors"
    root = found.refusal("some_method", found.module(""), "applies relu functionally")
    assert root == f"method some_method cannot explain model mixed: the model itself ({Mixed.__module__}.Mixed) applies relu functionally"
    assert found.module("relu").describe() == "'relu' (torch.nn.modules.activation.ReLU)"


def test_module_lookup_by_object_and_name():
    adapter = mixed_adapter()
    found = census(adapter)
    assert found.module(adapter.module.gate.sigmoid).name == "gate.sigmoid"
    assert found.module(adapter.module.relu) is found.module("relu")
    assert found.module(nn.ReLU()) is None and found.module("nowhere") is None


def test_the_census_restores_training_flags_and_leaves_no_gradients():
    adapter = mixed_adapter()
    adapter.module.train()
    adapter.module.gate.eval()
    adapter.module.scale.requires_grad_(False)
    census(adapter)
    assert adapter.module.training and adapter.module.conv1.training and not adapter.module.gate.training and not adapter.module.gate.fc.training
    assert [p.requires_grad for p in adapter.module.parameters()] == [name != "scale" for name, _ in adapter.module.named_parameters()]
    assert all(p.grad is None for p in adapter.module.parameters())
    assert all(not module._forward_hooks and not module._forward_pre_hooks for module in adapter.module.modules())


class Dropping(nn.Module):
    """Dropout in training mode would make the pass random: the census runs in eval mode."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.seen_training: list[bool] = []

    def forward(self, x):
        self.seen_training.append(self.training)
        return self.conv(x).mean((2, 3))


def test_the_census_runs_in_eval_mode_on_a_black_input():
    network = Dropping().train()
    adapter = ModelAdapter(name="drop", module=network, class_names=["a", "b", "c"], cam_layer=network.conv, input_size=8)
    seen: list[torch.Tensor] = []
    handle = network.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    census(adapter)
    handle.remove()
    assert network.seen_training == [False] and network.training
    torch.testing.assert_close(seen[0], adapter.preprocess(torch.zeros(2, 1, 8, 8)))


def test_the_census_is_cached_per_module_and_named_after_each_adapter(monkeypatch):
    taken = []
    real = preflight.take_census
    monkeypatch.setattr(preflight, "take_census", lambda adapter: taken.append(adapter.name) or real(adapter))
    adapter = mixed_adapter("first")
    first = census(adapter)
    again = census(adapter)
    other = census(ModelAdapter("second", adapter.module, ["a", "b", "c"], adapter.module.conv2, 16, extra_inputs=adapter.extra_inputs))
    assert taken == ["first"] and first == again and other.model == "second" and other.modules == first.modules
    census(adapter, refresh=True)
    bigger = ModelAdapter("first", adapter.module, ["a", "b", "c"], adapter.module.conv2, 32, extra_inputs=adapter.extra_inputs)
    assert census(bigger).module("conv1").output_shape == (2, 4, 32, 32)
    assert taken == ["first", "first", "first"]
    assert adapter.module in preflight._CACHE
    module = weakref.ref(adapter.module)
    del adapter, bigger, first, again, other
    gc.collect()
    assert module() is None  # the cache does not keep models alive


class Broken(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(5, 3)

    def forward(self, x):
        return self.fc(x)  # wrong shape for any image


def test_a_model_that_fails_on_the_blank_input_is_a_one_line_user_error():
    network = Broken().train()
    adapter = ModelAdapter(name="broken", module=network, class_names=["a", "b", "c"], cam_layer=network.fc, input_size=8)
    with pytest.raises(UserError) as error:
        census(adapter)
    message = str(error.value)
    assert message.startswith("pre-flight census of model broken: the model fails on a blank 8x8 input: RuntimeError: ") and "\n" not in message
    assert network.training and not network.fc._forward_pre_hooks  # restored after the failure too


def test_the_temporal_models_frame_branch_runs_on_blank_extra_inputs_and_is_not_input_dependent():
    from tests.fixtures.tiny_models import zoo_adapter

    found = census(zoo_adapter("temporal_gaze", 64))
    frame_branch = [use for use in found.modules if use.name.startswith(("frame_cnn", "sequence"))]
    assert {use.kind for use in frame_branch} >= {nn.LSTM, nn.Conv2d} and all(use.input_calls == 0 for use in frame_branch)
    assert found.functional() == [] and found.module("image_branch.features.1").input_calls == 1
