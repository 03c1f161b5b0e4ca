"""LRP with zennit: conservation on DenseNet-121 and the U-Net encoder, equality with zennit called directly,
batch independence, refusals naming the layer, and a model left exactly as it was."""

from __future__ import annotations

from functools import partial

import pytest
import torch
import torch.nn.functional as F
import torchvision
from timm.layers import BatchNormAct2d
from timm.models._efficientnet_blocks import DepthwiseSeparableConv, EdgeResidual, InvertedResidual, SqueezeExcite
from torch import nn
from zennit.attribution import Gradient
from zennit.composites import EpsilonPlusFlat

from gazebench.errors import UserError
from gazebench.methods.lrp import COMPOSITES, CONSERVATION_RTOL, LRPMethod, conservation_error, one_hot_logits, plan_for
from gazebench.methods.lrp_canonizers import gazebench_canonizers
from gazebench.models.base import ModelAdapter
from gazebench.models.captum_compat import distinct_block_relus
from gazebench.registry import METHODS, MODELS
from tests.fixtures.tiny_models import TinyCNN, random_batch_norms

CLASSES = ["Normal", "CHF", "pneumonia"]


def adapter_for(module: nn.Module, input_size: int, name: str = "tiny") -> ModelAdapter:
    return ModelAdapter(name=name, module=module.eval(), class_names=CLASSES, cam_layer=module, input_size=input_size)


def inputs_for(adapter: ModelAdapter, count: int, seed: int = 1) -> torch.Tensor:
    images = torch.rand(count, 1, adapter.input_size, adapter.input_size, generator=torch.Generator().manual_seed(seed))
    return adapter.preprocess(images)


def target_logits(adapter: ModelAdapter, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return adapter.module(inputs).gather(1, targets[:, None])[:, 0]


# ----------------------------------------------------------------------------- small networks with every canonized construct


class TinyEfficientNet(nn.Module):
    """timm EfficientNet blocks (SiLU, BatchNormAct2d, squeeze-excitation, skips) on 3 x 32 x 32 inputs."""

    def __init__(self):
        super().__init__()
        se = partial(SqueezeExcite, rd_ratio=0.5)
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False)
        self.bn = BatchNormAct2d(8, act_layer=nn.SiLU)
        self.blocks = nn.Sequential(
            DepthwiseSeparableConv(8, 8, act_layer=nn.SiLU, se_layer=se),
            InvertedResidual(8, 8, exp_ratio=2.0, act_layer=nn.SiLU, se_layer=se),
            InvertedResidual(8, 12, dw_kernel_size=5, stride=2, exp_ratio=2.0, act_layer=nn.SiLU, se_layer=se),
            EdgeResidual(12, 12, exp_ratio=2.0, act_layer=nn.SiLU),
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 3))

    def forward(self, x):
        return self.head(self.blocks(self.bn(self.stem(x))))


def tiny_densenet() -> nn.Module:
    """torchvision's DenseNet class itself (functional head), two small dense blocks."""
    return torchvision.models.DenseNet(growth_rate=4, block_config=(2, 2), num_init_features=8, bn_size=2, num_classes=3)


def tiny_resnet() -> nn.Module:
    """torchvision ResNet blocks (one with a downsampling shortcut) with gazebench's distinct block ReLUs, as torchvision_family builds them."""
    from torchvision.models.resnet import BasicBlock

    downsample = nn.Sequential(nn.Conv2d(8, 12, 1, stride=2, bias=False), nn.BatchNorm2d(12))
    stem = [nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)]
    head = [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 3)]
    return distinct_block_relus(nn.Sequential(*stem, BasicBlock(8, 8), BasicBlock(8, 12, stride=2, downsample=downsample), *head))


def tiny_timm_resnet() -> nn.Module:
    """timm ResNet bottlenecks (``x += shortcut`` in timm's forward)."""
    from timm.models.resnet import Bottleneck

    downsample = nn.Sequential(nn.Conv2d(8, 16, 1, bias=False), nn.BatchNorm2d(16))
    stem = [nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(inplace=True)]
    head = [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 3)]
    return nn.Sequential(*stem, Bottleneck(8, 4, downsample=downsample), Bottleneck(16, 4), *head)


SMALL_NETWORKS = {"efficientnet": TinyEfficientNet, "densenet": tiny_densenet, "resnet": tiny_resnet, "timm_resnet": tiny_timm_resnet}


def small_adapter(kind: str) -> ModelAdapter:
    torch.manual_seed(0)
    return adapter_for(random_batch_norms(SMALL_NETWORKS[kind]()), input_size=32, name=kind)


# ----------------------------------------------------------------------------- registration and parameters


def test_lrp_is_registered_with_family_library_postprocess_and_cost():
    method = METHODS.get("lrp")()
    assert isinstance(method, LRPMethod)
    assert (method.family, method.library, method.postprocess, method.passes()) == ("relevance", "zennit", "abs", (1, 1))
    assert method.params == {"composite": "epsilon_plus_flat", "epsilon": 1e-6, "gamma": 0.25}


@pytest.mark.parametrize(
    "params, message",
    [
        ({"composite": "lrp_z"}, "composite must be one of epsilon_plus_flat"),
        ({"epsilon": 0}, "epsilon must be > 0"),
        ({"gamma": 0}, "gamma must be > 0"),
        ({"gamma": "big"}, "gamma must be a float"),
        ({"alpha": 2}, "has no parameter alpha"),
    ],
)
def test_bad_parameters_are_refused_in_one_line(params, message):
    with pytest.raises(UserError, match=message):
        LRPMethod(**params)


# ----------------------------------------------------------------------------- conservation


@pytest.mark.parametrize("name", ["densenet121", "unet_gaze"])
def test_relevance_sums_to_the_logit_on_densenet121_and_the_unet_encoder(name):
    """Random weights, eval mode, random batch-norm statistics, 64 px: the measured error is far below the stated tolerance
    (about 4e-6 on DenseNet-121 and 3e-5 on unet_gaze's EfficientNet-B0 encoder classifier)."""
    torch.manual_seed(0)
    options = {"class_names": CLASSES} if name == "densenet121" else {}
    adapter = MODELS.get(name).build_adapter(input_size=64, **options).eval()
    random_batch_norms(adapter.module)
    method = LRPMethod()
    method.check_model(adapter)
    inputs, targets = inputs_for(adapter, 2), torch.tensor([0, 2])
    relevance = method.attribute(adapter, inputs, targets, [0, 0])
    assert relevance.shape == inputs.shape
    error = conservation_error(relevance, target_logits(adapter, inputs, targets))
    assert error.max() < CONSERVATION_RTOL, error
    assert method.warnings == []


@pytest.mark.parametrize("composite", [name for name in COMPOSITES if name not in ("z", "epsilon")])
@pytest.mark.parametrize("kind", list(SMALL_NETWORKS))
def test_every_conserving_composite_conserves_on_the_canonized_architectures(kind, composite):
    adapter = small_adapter(kind)
    method = LRPMethod(composite=composite)
    method.check_model(adapter)
    inputs, targets = inputs_for(adapter, 2), torch.tensor([1, 2])
    error = conservation_error(method.attribute(adapter, inputs, targets, [0, 0]), target_logits(adapter, inputs, targets))
    assert error.max() < CONSERVATION_RTOL, error


def test_lrp_0_is_refused_where_its_denominators_vanish_and_accepted_where_it_conserves():
    with pytest.raises(UserError, match=r"^method lrp cannot explain model efficientnet: with composite z its relevance sums to the logit \(\S+\) only within"):
        LRPMethod(composite="z").check_model(small_adapter("efficientnet"))
    torch.manual_seed(0)
    relu_cnn = TinyCNN()
    for layer in (relu_cnn.conv1, relu_cnn.conv2, relu_cnn.fc):
        nn.init.zeros_(layer.bias)  # without biases, LRP-0's bias-free denominators are the pre-activations themselves
    adapter = adapter_for(relu_cnn, input_size=16)
    method = LRPMethod(composite="z")
    method.check_model(adapter)
    inputs, targets = inputs_for(adapter, 2), torch.tensor([0, 1])
    assert conservation_error(method.attribute(adapter, inputs, targets, [0, 0]), target_logits(adapter, inputs, targets)).max() < CONSERVATION_RTOL


def test_a_batch_that_does_not_conserve_is_named_in_the_warnings():
    torch.manual_seed(0)
    adapter = small_adapter("densenet")
    method = LRPMethod(composite="epsilon", epsilon=10.0)  # a large epsilon absorbs relevance by design
    method.attribute(adapter, inputs_for(adapter, 2), torch.tensor([0, 1]), [0, 0])
    assert len(method.warnings) == 1
    assert method.warnings[0].startswith("lrp on densenet: relevance sums to the explained logit only within")


# ----------------------------------------------------------------------------- the library


def test_raw_map_equals_zennit_called_directly_on_a_small_relu_cnn():
    """zennit's own ``EpsilonPlusFlat``: on a ReLU CNN every unit that receives relevance has a positive contribution,
    so the conserving z+ is zennit's ZPlus (up to its 1e-6 stabiliser in the denominators)."""
    torch.manual_seed(0)
    adapter = adapter_for(TinyCNN(), input_size=16)
    inputs, targets = inputs_for(adapter, 3), torch.tensor([0, 1, 2])
    ours = LRPMethod(composite="epsilon_plus_flat").attribute(adapter, inputs, targets, [0, 0, 0])
    reference = EpsilonPlusFlat(zero_params=["bias"], canonizers=gazebench_canonizers(plan_for(adapter.module, inputs).merge_pairs))
    with Gradient(adapter.module, reference, attr_output=one_hot_logits(targets)) as attributor:
        _, relevance = attributor(inputs.clone().requires_grad_(True))
    torch.testing.assert_close(ours, relevance, rtol=1e-5, atol=1e-5 * relevance.abs().max().item())


def test_raw_map_is_zennit_gradient_under_the_methods_composite():
    adapter = small_adapter("efficientnet")
    inputs, targets = inputs_for(adapter, 2), torch.tensor([2, 0])
    method = LRPMethod(composite="epsilon_gamma_box")
    ours = method.attribute(adapter, inputs, targets, [0, 0])
    with Gradient(adapter.module, method.composite_for(adapter, inputs), attr_output=one_hot_logits(targets)) as attributor:
        _, relevance = attributor(inputs.clone().requires_grad_(True))
    torch.testing.assert_close(ours, relevance, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- batches


@pytest.mark.parametrize("kind, dtype", [("densenet", torch.float32), ("efficientnet", torch.float64)])
def test_batched_maps_equal_one_image_at_a_time(kind, dtype):
    """Rows never interact.  On the SiLU network float32 rounding of the convolutions (which differs with the batch size)
    is amplified where a residual sum is near zero (the Norm rule divides by it), so it is compared in float64."""
    adapter = small_adapter(kind)
    adapter.module.to(dtype)
    inputs, targets = inputs_for(adapter, 3).to(dtype), torch.tensor([0, 1, 2])
    method = LRPMethod()
    batched = method.attribute(adapter, inputs, targets, [0, 0, 0])
    single = torch.cat([method.attribute(adapter, inputs[i : i + 1], targets[i : i + 1], [0]) for i in range(3)])
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-6 * single.abs().max().item())


# ----------------------------------------------------------------------------- refusals


class Block(nn.Module):
    def __init__(self, activation: nn.Module | None = None, residual: bool = False, gated: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.act = activation or nn.ReLU()
        self.residual, self.gated = residual, gated

    def forward(self, x):
        out = self.act(self.conv(x))
        if self.residual:
            out = out + x
        if self.gated:
            out = out * torch.sigmoid(out)
        return out


class AttentionHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.attention = nn.MultiheadAttention(16, 2, batch_first=True)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        tokens = x.flatten(2)  # [B, 3, 16]
        return self.head(self.attention(tokens, tokens, tokens)[0].mean(1))


def block_network(**block_options) -> nn.Module:
    return nn.Sequential(Block(**block_options), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(12, 3))


REFUSED = {
    "gelu": (lambda: block_network(activation=nn.GELU()), r"module '0\.act' \(torch\.nn\.modules\.activation\.GELU\) applies gelu"),
    "residual": (lambda: block_network(residual=True), r"module '0' \(\S*test_lrp\.Block\) applies (add|__add__)"),
    "gate": (lambda: block_network(gated=True), r"module '0' \(\S*test_lrp\.Block\) applies sigmoid"),
    "layernorm": (
        lambda: nn.Sequential(nn.Flatten(), nn.Linear(48, 8), nn.LayerNorm(8), nn.Linear(8, 3)),
        r"module '2' \(torch\.nn\.modules\.normalization\.LayerNorm\) applies layer_norm",
    ),
    "attention": (AttentionHead, r"module 'attention' \(torch\.nn\.modules\.activation\.MultiheadAttention\) applies multi_head_attention_forward"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_models_without_conserving_rules_are_refused_in_one_line_naming_the_layer(case):
    build, named = REFUSED[case]
    torch.manual_seed(0)
    with pytest.raises(UserError, match=r"^method lrp cannot explain model tiny: " + named) as caught:
        LRPMethod().check_model(adapter_for(build(), input_size=4))
    assert "\n" not in str(caught.value)


def test_models_with_extra_inputs_are_refused():
    adapter = adapter_for(TinyCNN(), input_size=16)
    adapter.extra_inputs = lambda batch: ()
    with pytest.raises(UserError, match="^method lrp cannot explain model tiny: it takes extra inputs"):
        LRPMethod().check_model(adapter)


# ----------------------------------------------------------------------------- the model afterwards


def snapshot(module: nn.Module) -> dict:
    return {
        "state": {key: value.clone() for key, value in module.state_dict().items()},
        "parameters": [(name, id(parameter), parameter.requires_grad) for name, parameter in module.named_parameters()],
        "modules": [(name, id(child)) for name, child in module.named_modules()],
        "attributes": [(name, sorted(vars(child)), vars(child).get("forward"), vars(child).get("has_skip")) for name, child in module.named_modules()],
        "hooks": sum(len(child._forward_hooks) + len(child._forward_pre_hooks) + len(child._backward_hooks) for child in module.modules()),
    }


@pytest.mark.parametrize("kind", ["efficientnet", "densenet", "resnet", "timm_resnet"])
def test_the_model_is_unchanged_after_a_call(kind):
    adapter = small_adapter(kind)
    inputs, targets = inputs_for(adapter, 2), torch.tensor([0, 1])
    with torch.no_grad():
        before_outputs = adapter.module(inputs)
    before = snapshot(adapter.module)
    method = LRPMethod(composite="epsilon_gamma_box")
    method.check_model(adapter)
    method.attribute(adapter, inputs, targets, [0, 0])
    after = snapshot(adapter.module)
    assert after["state"].keys() == before["state"].keys()
    assert all(torch.equal(after["state"][key], value) for key, value in before["state"].items())
    assert {key: value for key, value in after.items() if key != "state"} == {key: value for key, value in before.items() if key != "state"}
    with torch.no_grad():
        assert torch.equal(adapter.module(inputs), before_outputs)
    assert all(parameter.grad is None for parameter in adapter.module.parameters())


def test_canonizers_keep_the_outputs_and_cover_dense_heads_and_residual_sums():
    """The canonized networks compute the same logits; torchvision's DenseNet head and every residual addition became modules."""
    for kind in SMALL_NETWORKS:
        adapter = small_adapter(kind)
        inputs = inputs_for(adapter, 2)
        plan = plan_for(adapter.module, inputs)
        with torch.no_grad():
            expected = adapter.module(inputs)
            composite = LRPMethod().composite_for(adapter, inputs)
            with composite.context(adapter.module) as canonized:
                names = [name for name, _ in canonized.named_modules()]
                torch.testing.assert_close(canonized(inputs), expected, rtol=1e-5, atol=1e-6)
        assert plan.merge_pairs, kind
        assert any(name.endswith("canonizer_sum") for name in names) or kind == "densenet", kind
        if kind == "densenet":
            assert "canonizer_relu" in names and "canonizer_pool" in names
            assert ("features.denseblock1.denselayer1.conv1", "features.denseblock1.denselayer1.norm2") in plan.merge_pairs
            assert not any(norm.endswith("norm1") for _, norm in plan.merge_pairs)  # pre-activation norms after concatenations keep Pass


def test_squeeze_excitation_gates_pass_relevance_to_their_input_only():
    """out = x * gate(x): the gate is a constant for LRP, so the block's input relevance equals its output relevance."""
    torch.manual_seed(0)
    gate = SqueezeExcite(4, rd_ratio=0.5, act_layer=nn.SiLU)
    network = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), gate, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    adapter = adapter_for(network, input_size=8)
    inputs, targets = inputs_for(adapter, 1), torch.tensor([1])
    seen = {}
    network[1].register_forward_hook(lambda module, args, output: seen.update(x=output))  # the gate's input, before zennit's hooks copy it
    network[2].register_forward_hook(lambda module, args, output: seen.update(out=output))
    composite = LRPMethod().composite_for(adapter, inputs)
    leaf = inputs.clone().requires_grad_(True)
    with composite.context(network):
        output = network(leaf)
        relevance_in, relevance_out = torch.autograd.grad(output, [seen["x"], seen["out"]], grad_outputs=one_hot_logits(targets)(output))
    torch.testing.assert_close(relevance_in, relevance_out)
    assert F.relu(relevance_in).sum() > 0
