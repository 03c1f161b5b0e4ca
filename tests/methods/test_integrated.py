"""Integrated gradients and input x gradient: equal to Captum's own calls, batch- and chunk-independent, parameters checked."""

from __future__ import annotations

import pytest
import torch
from captum.attr import InputXGradient, IntegratedGradients
from torch import nn

import gazebench.methods.integrated  # noqa: F401 - registers the two methods
from gazebench.errors import UserError
from gazebench.methods.gradient import make_baseline
from gazebench.models.base import ModelAdapter
from gazebench.registry import METHODS
from tests.fixtures.tiny_models import TinyCNN

GRID = 32
EXACT = {"rtol": 0, "atol": 1e-5}


def adapter_for(module: nn.Module, cam_layer: nn.Module, input_size: int = 32) -> ModelAdapter:
    return ModelAdapter(name="tiny", module=module.eval(), class_names=["a", "b", "c"], cam_layer=cam_layer, input_size=input_size)


@pytest.fixture
def tiny() -> ModelAdapter:
    torch.manual_seed(0)
    module = TinyCNN()
    return adapter_for(module, module.conv2)


def grid_images(count: int, offset: int = 0) -> torch.Tensor:
    return torch.rand(count, 1, GRID, GRID, generator=torch.Generator().manual_seed(10 + offset))


def targets_for(count: int) -> torch.Tensor:
    return torch.arange(count) % 3


def test_registration_post_processing_passes_and_family():
    integrated, input_x = METHODS.get("integrated_gradients")(), METHODS.get("input_x_gradient")()
    assert (integrated.postprocess, integrated.family, integrated.library, integrated.passes()) == ("abs", "path", "captum", (8, 8))
    assert METHODS.get("integrated_gradients")(n_steps=5).passes() == (5, 5)
    assert integrated.params == {"n_steps": 8, "method": "gausslegendre", "baseline": "black"}
    assert (input_x.postprocess, input_x.family, input_x.passes()) == ("abs", "gradient", (1, 1))


@pytest.mark.parametrize(
    "params",
    [{}, {"n_steps": 5, "method": "riemann_trapezoid", "baselines": "zero"}, {"n_steps": 3, "method": "riemann_left"}],
)
def test_integrated_gradients_equals_captum(tiny, params):
    method = METHODS.get("integrated_gradients")(**params)
    inputs, targets = tiny.preprocess(grid_images(3)), targets_for(3)
    ours = method.attribute(tiny, inputs, targets, [0, 1, 2])
    baseline = make_baseline(tiny, inputs, method.params["baseline"]).expand_as(inputs)
    captum = IntegratedGradients(tiny.module).attribute(inputs.clone().requires_grad_(), baselines=baseline, target=targets, n_steps=method.params["n_steps"], method=method.params["method"])
    assert ours.shape == inputs.shape
    torch.testing.assert_close(ours, captum, **EXACT)


def test_integrated_gradients_default_baseline_is_the_black_image_not_zero(tiny):
    inputs, targets = tiny.preprocess(grid_images(2)), targets_for(2)
    black = METHODS.get("integrated_gradients")().attribute(tiny, inputs, targets, [0, 1])
    zero = METHODS.get("integrated_gradients")(baseline="zero").attribute(tiny, inputs, targets, [0, 1])
    assert not torch.allclose(black, zero)


def test_integrated_gradients_is_exact_on_a_linear_model():
    """f(x) = w . x + c: IG = (x - b) * w for any quadrature, and sums to f(x) - f(b)."""
    torch.manual_seed(3)
    module = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3))
    adapter = adapter_for(module, module[1], input_size=8)
    images = torch.rand(2, 1, 8, 8)
    inputs, targets = adapter.preprocess(images), torch.tensor([2, 0])
    attributions = METHODS.get("integrated_gradients")(n_steps=4).attribute(adapter, inputs, targets, [0, 0])
    baseline = make_baseline(adapter, inputs, "black")
    weights = module[1].weight.detach()[targets].view(2, 3, 8, 8)
    torch.testing.assert_close(attributions, (inputs - baseline) * weights, **EXACT)
    with torch.no_grad():
        difference = (module(inputs) - module(baseline)).gather(1, targets[:, None])[:, 0]
    torch.testing.assert_close(attributions.sum(dim=(1, 2, 3)), difference, **EXACT)


def test_integrated_gradients_chunked_to_three_rows_per_pass_equals_unchunked(tiny):
    inputs, targets = tiny.preprocess(grid_images(4)), targets_for(4)
    unchunked = METHODS.get("integrated_gradients")(n_steps=7).attribute(tiny, inputs, targets, [0] * 4)
    chunked_method = METHODS.get("integrated_gradients")(n_steps=7)
    chunked_method.max_rows = 3
    rows_seen: list[int] = []
    handle = tiny.module.register_forward_pre_hook(lambda module, args: rows_seen.append(len(args[0])))
    try:
        chunked = chunked_method.attribute(tiny, inputs, targets, [0] * 4)
    finally:
        handle.remove()
    torch.testing.assert_close(chunked, unchunked, **EXACT)
    assert max(rows_seen) <= 3 and sum(rows_seen) == 4 * 7  # never more rows than allowed, every path point once


@pytest.mark.parametrize("name", ["integrated_gradients", "input_x_gradient"])
def test_batched_maps_equal_one_image_at_a_time_maps(tiny, name):
    method = METHODS.get(name)()
    images, targets, seeds = grid_images(4, offset=1), targets_for(4), [5, 6, 7, 8]
    batched = method(tiny, images, targets, seeds, GRID)
    single = torch.cat([method(tiny, images[i : i + 1], targets[i : i + 1], seeds[i : i + 1], GRID) for i in range(4)])
    assert batched.shape == (4, GRID, GRID) and (batched >= 0).all() and batched.sum() > 0
    torch.testing.assert_close(batched, single, **EXACT)
    assert all(p.grad is None and p.requires_grad for p in tiny.module.parameters())


def test_input_x_gradient_equals_captum_and_the_hand_computed_product(tiny):
    inputs, targets = tiny.preprocess(grid_images(3)), targets_for(3)
    ours = METHODS.get("input_x_gradient")().attribute(tiny, inputs, targets, [0, 1, 2])
    captum = InputXGradient(tiny.module).attribute(inputs.clone().requires_grad_(), target=targets)
    torch.testing.assert_close(ours, captum, **EXACT)
    leaf = inputs.clone().requires_grad_()
    tiny.module(leaf).gather(1, targets[:, None]).sum().backward()
    torch.testing.assert_close(ours, inputs * leaf.grad, **EXACT)


class ScaledCNN(nn.Module):
    """A tiny CNN whose logits each row's extra input scales and shifts."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(16, 3)

    def forward(self, x, extra):
        return self.fc(self.pool(self.relu(self.conv(x))).flatten(1)) * extra[:, :1] + extra[:, 1:]


def test_extra_inputs_reach_captum_chunk_by_chunk():
    network = ScaledCNN().eval()
    adapter = adapter_for(network, network.relu)
    inputs, targets = adapter.preprocess(grid_images(3)), targets_for(3)
    extra = torch.tensor([[1.0, 0.0, 0.0, 0.0], [-2.0, 0.5, 0.0, 1.0], [0.5, 1.0, -1.0, 0.0]])
    method = METHODS.get("integrated_gradients")(n_steps=4)
    method.max_rows = 2  # the extra rows must be split with their images
    ours = method.attribute(adapter, inputs, targets, [0] * 3, extra=(extra,))
    baseline = make_baseline(adapter, inputs, "black").expand_as(inputs)
    captum = IntegratedGradients(network).attribute(inputs.clone().requires_grad_(), baselines=baseline, target=targets, additional_forward_args=(extra,), n_steps=4, method="gausslegendre")
    torch.testing.assert_close(ours, captum, **EXACT)
    ours = METHODS.get("input_x_gradient")().attribute(adapter, inputs, targets, [0] * 3, extra=(extra,))
    torch.testing.assert_close(ours, InputXGradient(network).attribute(inputs.clone().requires_grad_(), target=targets, additional_forward_args=(extra,)), **EXACT)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"method": "simpson"}, "method integrated_gradients: method must be one of riemann_left, riemann_right, riemann_middle, riemann_trapezoid, gausslegendre"),
        ({"n_steps": 0}, "method integrated_gradients: n_steps must be >= 1, got 0"),
        ({"n_steps": 2.5}, "n_steps must be an int"),
        ({"baseline": "white"}, "baseline must be one of black, zero"),
        ({"baselines": "white"}, "baseline must be one of black, zero"),
        ({"internal_batch_size": 4}, "has no parameter internal_batch_size"),
    ],
)
def test_bad_parameters_are_user_errors(params, message):
    with pytest.raises(UserError, match=message.replace(".", r"\.")):
        METHODS.get("integrated_gradients")(**params)
