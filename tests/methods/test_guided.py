"""Guided backprop and Guided Grad-CAM: equal to Captum's calls, batch-independent, and refused where Captum's
ReLU hooks would silently compute something else (what Captum 0.9 does in each case is checked here too)."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from captum.attr import GuidedBackprop, GuidedGradCam
from torch import nn

import gazebench.methods.guided  # noqa: F401 - registers the two methods
from gazebench.errors import UserError
from gazebench.models.base import ModelAdapter
from gazebench.registry import METHODS, MODELS
from tests.fixtures.tiny_models import TinyCNN

GRID = 32
EXACT = {"rtol": 0, "atol": 1e-5}
GUIDED = ["guided_backprop", "guided_gradcam"]


def adapter_for(module: nn.Module, cam_layer: nn.Module, input_size: int = 32, name: str = "tiny") -> ModelAdapter:
    return ModelAdapter(name=name, module=module.eval(), class_names=["a", "b", "c"], cam_layer=cam_layer, input_size=input_size)


@pytest.fixture
def tiny() -> ModelAdapter:
    torch.manual_seed(0)
    module = TinyCNN()
    return adapter_for(module, module.relu2)


def grid_images(count: int, offset: int = 0) -> torch.Tensor:
    return torch.rand(count, 1, GRID, GRID, generator=torch.Generator().manual_seed(20 + offset))


def targets_for(count: int) -> torch.Tensor:
    return torch.arange(count) % 3


def captum(call):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return call()


class GuidedReLU(torch.autograd.Function):
    """Guided backprop's ReLU by hand: passes back positive gradients where the input was positive."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad.clamp(min=0) * (x > 0)


def test_registration_post_processing_and_passes():
    backprop, gradcam = METHODS.get("guided_backprop")(), METHODS.get("guided_gradcam")()
    assert (backprop.postprocess, backprop.family, backprop.passes()) == ("abs", "gradient", (1, 1))
    assert (gradcam.postprocess, gradcam.family, gradcam.passes()) == ("abs", "cam", (2, 2))


def test_guided_backprop_equals_captum_and_the_hand_computed_rule(tiny):
    inputs, targets = tiny.preprocess(grid_images(3)), targets_for(3)
    ours = METHODS.get("guided_backprop")().attribute(tiny, inputs, targets, [0, 1, 2])
    reference = captum(lambda: GuidedBackprop(tiny.module).attribute(inputs.clone().requires_grad_(), target=targets))
    torch.testing.assert_close(ours, reference, **EXACT)
    net, leaf = tiny.module, inputs.clone().requires_grad_()
    hidden = GuidedReLU.apply(net.conv2(GuidedReLU.apply(net.conv1(leaf))))
    net.fc(net.pool(hidden).flatten(1)).gather(1, targets[:, None]).sum().backward()
    torch.testing.assert_close(ours, leaf.grad, **EXACT)
    plain = inputs.clone().requires_grad_()
    net(plain).gather(1, targets[:, None]).sum().backward()
    assert not torch.allclose(ours, plain.grad, atol=1e-6)  # guided, not the plain gradient


def test_guided_gradcam_equals_captum_with_bilinear_upsampling(tiny):
    inputs, targets = tiny.preprocess(grid_images(3)), targets_for(3)
    ours = METHODS.get("guided_gradcam")().attribute(tiny, inputs, targets, [0, 1, 2])
    bilinear = captum(lambda: GuidedGradCam(tiny.module, tiny.cam_layer).attribute(inputs.clone().requires_grad_(), target=targets, interpolate_mode="bilinear"))
    nearest = captum(lambda: GuidedGradCam(tiny.module, tiny.cam_layer).attribute(inputs.clone().requires_grad_(), target=targets))
    assert ours.shape == inputs.shape
    torch.testing.assert_close(ours, bilinear, **EXACT)
    assert (ours - nearest).abs().max() > 1e-2 * ours.abs().max()  # Captum's default (nearest) is not what we compute


@pytest.mark.parametrize("name", GUIDED)
def test_batched_maps_equal_one_image_at_a_time_maps(tiny, name):
    method = METHODS.get(name)()
    method.check_model(tiny)
    images, targets, seeds = grid_images(4, offset=1), targets_for(4), [1, 2, 3, 4]
    batched = method(tiny, images, targets, seeds, GRID)
    single = torch.cat([method(tiny, images[i : i + 1], targets[i : i + 1], seeds[i : i + 1], GRID) for i in range(4)])
    assert batched.shape == (4, GRID, GRID) and (batched >= 0).all() and batched.sum() > 0
    torch.testing.assert_close(batched, single, **EXACT)
    assert all(p.grad is None and p.requires_grad for p in tiny.module.parameters())


# --- models Captum's guided backprop gets wrong ------------------------------------------------------


class Block(nn.Module):
    """Conv then a ReLU spelled ``how`` (module, or one of the functional spellings)."""

    def __init__(self, how: str):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.how = how

    def forward(self, x):
        x = self.conv(x)
        return {
            "module": lambda: self.relu(x),
            "F.relu": lambda: F.relu(x),
            "torch.relu": lambda: torch.relu(x),
            "Tensor.relu": lambda: x.relu(),
            "clamp(min=0)": lambda: x.clamp(min=0),
            "forward bypass": lambda: self.relu.forward(x),
        }[self.how]()


class Net(nn.Module):
    def __init__(self, how: str = "module", activation: type[nn.Module] = nn.ReLU):
        super().__init__()
        torch.manual_seed(0)
        self.block = Block(how)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.act = activation()
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 3))

    def forward(self, x):
        return self.head(self.act(self.conv2(self.block(x))))


def net_adapter(**kwargs) -> ModelAdapter:
    net = Net(**kwargs)
    return adapter_for(net, net.act, input_size=16, name="net")


@pytest.mark.parametrize("how", ["F.relu", "torch.relu", "Tensor.relu", "clamp(min=0)", "forward bypass"])
@pytest.mark.parametrize("name", GUIDED)
def test_a_functional_relu_is_refused_naming_the_module(how, name):
    adapter = net_adapter(how=how)
    with pytest.raises(UserError) as refusal:
        METHODS.get(name)().check_model(adapter)
    message = str(refusal.value)
    assert "\n" not in message
    assert message.startswith(f"method {name} cannot explain model net: module 'block' ({Block.__module__}.Block) applies ")
    assert "functionally" in message and "nn.ReLU modules only" in message


def test_captum_silently_passes_the_plain_gradient_through_a_functional_relu():
    """Why the refusal: Captum's map of the F.relu model is not guided backprop (that of the nn.ReLU model)."""
    functional, modules = net_adapter(how="F.relu"), net_adapter(how="module")
    inputs = modules.preprocess(grid_images(2)[:, :, :16, :16])
    maps = [captum(lambda a=a: GuidedBackprop(a.module).attribute(inputs.clone().requires_grad_(), target=1)) for a in (functional, modules)]
    assert torch.allclose(functional.module(inputs), modules.module(inputs))  # the same network
    assert not torch.allclose(maps[0], maps[1], atol=1e-6)


@pytest.mark.parametrize("activation", [nn.SiLU, nn.GELU, nn.Sigmoid])
def test_a_non_relu_activation_module_is_refused_naming_the_module(activation):
    adapter = net_adapter(activation=activation)
    with pytest.raises(UserError, match=rf"^method guided_backprop cannot explain model net: module 'act' \(torch\.nn\.modules\.activation\.{activation.__name__}\) is a nonlinearity other than ReLU"):
        METHODS.get("guided_backprop")().check_model(adapter)


class SqueezeGate(nn.Module):
    """A functional product of two input-dependent tensors (an attention-like gate without an activation module)."""

    def forward(self, x):
        return x * x.mean((2, 3), keepdim=True)


def test_a_functional_product_is_refused():
    net = Net()
    net.block = nn.Sequential(net.block, SqueezeGate())
    with pytest.raises(UserError, match=rf"module 'block\.1' \({SqueezeGate.__module__}\.SqueezeGate\) applies mul to input-dependent tensors"):
        METHODS.get("guided_backprop")().check_model(adapter_for(net, net.act, 16, "net"))


class SharedReLU(nn.Module):
    """One nn.ReLU module used three times per forward pass, like torchvision's ResNet blocks (``distinct=False``)."""

    def __init__(self, distinct: bool):
        super().__init__()
        torch.manual_seed(0)
        self.conv1, self.conv2, self.conv3 = (nn.Conv2d(c, 4, 3, padding=1) for c in (3, 4, 4))
        self.relu = nn.ReLU(inplace=True)
        self.relu2 = nn.ReLU(inplace=True) if distinct else self.relu
        self.relu3 = nn.ReLU() if distinct else self.relu
        self.fc = nn.Linear(4 * 16 * 16, 3)

    def forward(self, x):
        a = self.relu(self.conv1(x))
        b = self.relu2(self.conv2(a) + a)
        return self.fc(self.relu3(self.conv3(b)).flatten(1))


def test_a_reused_relu_module_is_accepted_because_captum_guides_each_use():
    shared, distinct = SharedReLU(distinct=False), SharedReLU(distinct=True)
    shared_adapter, distinct_adapter = adapter_for(shared, shared.relu, 16), adapter_for(distinct, distinct.relu3, 16)
    METHODS.get("guided_backprop")().check_model(shared_adapter)
    inputs, targets = shared_adapter.preprocess(grid_images(2)[:, :, :16, :16]), torch.tensor([0, 2])
    maps = [METHODS.get("guided_backprop")().attribute(a, inputs, targets, [0, 0]) for a in (shared_adapter, distinct_adapter)]
    torch.testing.assert_close(maps[0], maps[1], rtol=0, atol=0)


class ExtraBranch(nn.Module):
    """An nn.ReLU on the extra input only: Captum cannot hook a tensor that needs no gradient."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.relu = nn.ReLU()
        self.frames = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
        self.fc = nn.Linear(3, 3)

    def forward(self, x, extra):
        return self.fc(self.relu(self.conv(x)).mean((2, 3)) + self.frames(extra))


def test_an_nn_relu_on_an_extra_input_branch_is_refused_where_captum_would_raise():
    network = ExtraBranch()
    adapter = adapter_for(network, network.relu, 8, "branchy")
    adapter.extra_inputs = lambda batch: (torch.ones(len(batch), 2),)
    with pytest.raises(UserError, match=r"module 'frames\.1' \(torch\.nn\.modules\.activation\.ReLU\) is an nn\.ReLU applied to tensors that do not depend on the input \(1 of 1 calls"):
        METHODS.get("guided_backprop")().check_model(adapter)
    inputs = adapter.preprocess(torch.rand(2, 1, 8, 8))
    with pytest.raises(RuntimeError, match="cannot register a hook on a tensor that doesn't require gradient"):  # what the refusal prevents
        METHODS.get("guided_backprop")().attribute(adapter, inputs, torch.tensor([0, 1]), [0, 0], extra=(torch.ones(2, 2),))


def test_guided_gradcam_refuses_a_cam_layer_without_a_spatial_map():
    net = Net()
    adapter = adapter_for(net, net.head[2], 16, "net")
    with pytest.raises(UserError, match=r"cam_layer 'head\.2' \(torch\.nn\.modules\.linear\.Linear\) gives \(2, 3\), not a \[B, C, h, w\] map"):
        METHODS.get("guided_gradcam")().check_model(adapter)
    METHODS.get("guided_backprop")().check_model(adapter)  # guided backprop itself needs no such layer


# --- the zoo ------------------------------------------------------------------------------------


def test_accepts_gazebench_densenet121():
    torch.manual_seed(0)
    adapter = MODELS.get("densenet121").build_adapter(class_names=["a", "b", "c"], input_size=64).eval()
    for name in GUIDED:
        METHODS.get(name)().check_model(adapter)


def test_accepts_torchvision_resnet18_whose_patch_does_not_change_the_map():
    """gazebench's distinct_block_relus patch is needed by DeepLift, not by guided backprop: the maps are the same."""
    from torchvision.models import resnet18

    torch.manual_seed(0)
    adapter = MODELS.get("torchvision:resnet18").build_adapter(class_names=["a", "b", "c"], input_size=64).eval()
    for name in GUIDED:
        METHODS.get(name)().check_model(adapter)
    unpatched = resnet18(num_classes=3).eval()
    unpatched.load_state_dict(adapter.module.state_dict())
    raw = adapter_for(unpatched, unpatched.layer4, 64, "resnet18")
    METHODS.get("guided_backprop")().check_model(raw)
    inputs, targets = adapter.preprocess(torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(0))), torch.tensor([0, 2])
    patched_map, raw_map = (METHODS.get("guided_backprop")().attribute(a, inputs, targets, [0, 0]) for a in (adapter, raw))
    torch.testing.assert_close(patched_map, raw_map, rtol=1e-5, atol=1e-7)
