"""The six attribution methods: batching, per-image seeding, hand references, Captum equality, DeepLift honesty."""

from __future__ import annotations

import captum.attr._core.gradient_shap as captum_gradient_shap
import pytest
import torch

from gazebench.errors import UserError
import torch.nn.functional as F
from captum.attr import GradientShap
from captum.attr._core.deep_lift import SUPPORTED_NON_LINEAR
from torch import nn

from gazebench.methods.base import image_seed
from gazebench.methods.deeplift import DeepLiftMethod, deeplift_warnings
from gazebench.methods.gradient import draw_gradshap_samples, gaussian_noise, make_baseline
from gazebench.models.base import ModelAdapter
from gazebench.registry import METHODS
from tests.fixtures.tiny_models import TinyCNN

METHOD_NAMES = ["saliency", "smoothgrad", "gradshap", "gradcam", "conductance", "deeplift"]
SAMPLING_METHODS = ["smoothgrad", "gradshap"]
GRID = 40
CLOSE = dict(rtol=1e-4, atol=1e-6)


class SqueezeExcite(nn.Module):
    """A squeeze-excitation block like timm's: the gating product is functional."""

    def __init__(self, channels: int):
        super().__init__()
        self.reduce = nn.Conv2d(channels, 2, 1)
        self.act = nn.SiLU()
        self.expand = nn.Conv2d(2, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x):
        return x * self.gate(self.expand(self.act(self.reduce(x.mean((2, 3), keepdim=True)))))


def adapter_for(module: nn.Module, cam_layer: nn.Module, input_size: int, name: str = "tiny") -> ModelAdapter:
    return ModelAdapter(name=name, module=module.eval(), class_names=["a", "b", "c"], cam_layer=cam_layer, input_size=input_size)


@pytest.fixture
def tiny() -> ModelAdapter:
    torch.manual_seed(0)
    module = TinyCNN()
    return adapter_for(module, module.conv2, input_size=32)


def mlp_adapter(activation: type[nn.Module]) -> ModelAdapter:
    """Linear/activation-only model on 8x8 inputs (DeepLift is exact there when the activation has a rule)."""
    torch.manual_seed(1)
    module = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 16), activation(), nn.Linear(16, 8), activation(), nn.Linear(8, 3))
    return adapter_for(module, module[1], input_size=8, name="mlp")


def output_difference(adapter: ModelAdapter, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """f(x) - f(black baseline) for each image's target logit, [B]."""
    with torch.no_grad():
        difference = adapter.module(inputs) - adapter.module(make_baseline(adapter, inputs, "black"))
    return difference.gather(1, targets[:, None])[:, 0]


def grid_images(count: int, offset: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(100 + offset)
    return torch.rand(count, 1, GRID, GRID, generator=generator)


def seeds_for(count: int, offset: int = 0) -> list[int]:
    return [image_seed(7, f"img{offset + i}") for i in range(count)]


def targets_for(count: int) -> torch.Tensor:
    return torch.arange(count) % 3


def test_the_six_methods_are_registered_with_their_post_processing():
    postprocess = {name: METHODS.get(name).postprocess for name in METHOD_NAMES}
    assert postprocess == {name: "relu" if name in ("gradcam", "conductance") else "abs" for name in METHOD_NAMES}
    with pytest.raises(UserError, match="method smoothgrad has no parameter samples; its parameters: n_samples, stdev"):
        METHODS.get("smoothgrad")(samples=3)


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_maps_have_grid_shape_are_finite_non_negative_and_leave_parameters_untouched(tiny, name):
    method = METHODS.get(name)()
    maps = method(tiny, grid_images(3), targets_for(3), seeds_for(3), GRID)
    assert maps.shape == (3, GRID, GRID) and maps.dtype == torch.float32
    assert torch.isfinite(maps).all() and (maps >= 0).all() and maps.sum() > 0
    assert all(p.grad is None and p.requires_grad for p in tiny.module.parameters())


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_batched_maps_equal_maps_computed_one_image_at_a_time(tiny, name):
    method = METHODS.get(name)()
    images, targets, seeds = grid_images(4), targets_for(4), seeds_for(4)
    batched = method(tiny, images, targets, seeds, GRID)
    single = torch.cat([method(tiny, images[i : i + 1], targets[i : i + 1], seeds[i : i + 1], GRID) for i in range(4)])
    torch.testing.assert_close(batched, single, **CLOSE)


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_a_map_does_not_change_with_its_batch_neighbours(tiny, name):
    method = METHODS.get(name)()
    image, seed = grid_images(1), seeds_for(1)
    neighbours, other_neighbours = grid_images(2, offset=1), grid_images(3, offset=2)
    with_first = method(tiny, torch.cat([image, neighbours]), torch.tensor([1, 0, 2]), seed + seeds_for(2, 1), GRID)
    with_others = method(tiny, torch.cat([image, other_neighbours]), torch.tensor([1, 2, 2, 0]), seed + seeds_for(3, 5), GRID)
    torch.testing.assert_close(with_first[0], with_others[0], **CLOSE)


@pytest.mark.parametrize("name", SAMPLING_METHODS)
def test_sampling_methods_repeat_with_same_seeds_and_change_with_other_seeds(tiny, name):
    method = METHODS.get(name)()
    images, targets = grid_images(2), targets_for(2)
    first = method(tiny, images, targets, seeds_for(2), GRID)
    assert torch.equal(first, method(tiny, images, targets, seeds_for(2), GRID))
    other = method(tiny, images, targets, seeds_for(2, offset=10), GRID)
    assert not torch.allclose(first[0], other[0]) and not torch.allclose(first[1], other[1])


def test_saliency_is_the_absolute_channel_summed_input_gradient(tiny):
    images, targets = grid_images(3), targets_for(3)
    inputs = tiny.preprocess(images).requires_grad_(True)
    (gradient,) = torch.autograd.grad(tiny.module(inputs).gather(1, targets[:, None]).sum(), inputs)
    expected = F.interpolate(gradient.sum(1, keepdim=True).abs(), size=(GRID, GRID), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(METHODS.get("saliency")()(tiny, images, targets, seeds_for(3), GRID), expected, **CLOSE)


def test_smoothgrad_without_noise_is_saliency(tiny):
    images, targets, seeds = grid_images(2), targets_for(2), seeds_for(2)
    smooth = METHODS.get("smoothgrad")(stdev=0.0, n_samples=3)(tiny, images, targets, seeds, GRID)
    torch.testing.assert_close(smooth, METHODS.get("saliency")()(tiny, images, targets, seeds, GRID), **CLOSE)


def test_smoothgrad_noise_scales_with_the_input_range(tiny):
    """Doubling every input doubles its range, so the noise (a fraction of it) doubles too."""
    inputs = tiny.preprocess(grid_images(2))
    noise = gaussian_noise(inputs, seeds_for(2), n_samples=3, stdev=0.15)
    torch.testing.assert_close(gaussian_noise(2 * inputs, seeds_for(2), n_samples=3, stdev=0.15), 2 * noise)
    ranges = (inputs.flatten(1).amax(1) - inputs.flatten(1).amin(1)).repeat_interleave(3)
    assert torch.allclose(noise.flatten(1).std(1) / ranges, torch.full((6,), 0.15), rtol=0.05)


def test_gradcam_equals_hand_computed_gradcam_before_resizing(tiny):
    images, targets = grid_images(3), targets_for(3)
    activations = {}
    handle = tiny.cam_layer.register_forward_hook(lambda module, args, output: activations.update(layer=output))
    logits = tiny.module(tiny.preprocess(images))
    handle.remove()
    (gradient,) = torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), activations["layer"])
    weights = gradient.mean(dim=(2, 3), keepdim=True)
    expected = (weights * activations["layer"]).sum(1, keepdim=True).clamp_min(0)
    raw = METHODS.get("gradcam")().attribute(tiny, tiny.preprocess(images), targets, seeds_for(3))
    assert raw.shape == (3, 1, 16, 16)
    torch.testing.assert_close(raw, expected, **CLOSE)


def test_gradshap_equals_captum_gradientshap_with_the_same_draws(tiny, monkeypatch):
    inputs, targets, seeds, n_samples = tiny.preprocess(grid_images(3)), targets_for(3), seeds_for(3), 4
    noise, alphas = draw_gradshap_samples(inputs, seeds, n_samples, stdev=0.09)
    monkeypatch.setattr(torch, "normal", lambda mean, std: noise)  # Captum's NoiseTunnel input noise
    monkeypatch.setattr(captum_gradient_shap.np.random, "uniform", lambda low, high, size: alphas.numpy().astype("float64"))
    baseline = make_baseline(tiny, inputs, "black")
    expected = GradientShap(tiny.module).attribute(inputs, baselines=baseline, n_samples=n_samples, stdevs=1.0, target=targets)
    ours = METHODS.get("gradshap")(n_samples=n_samples, stdev=0.09).attribute(tiny, inputs, targets, seeds)
    torch.testing.assert_close(ours, expected, **CLOSE)


def test_gradshap_is_exact_on_a_linear_model():
    """For f(x) = w.x + c every sample gives (x - b) * w, whatever the alphas."""
    torch.manual_seed(2)
    linear = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3))
    adapter = adapter_for(linear, linear[1], input_size=8)
    inputs, targets = adapter.preprocess(grid_images(2)), torch.tensor([2, 0])
    attributions = METHODS.get("gradshap")(stdev=0.0, n_samples=5).attribute(adapter, inputs, targets, seeds_for(2))
    weights = linear[1].weight[targets].view(2, 3, 8, 8)
    torch.testing.assert_close(attributions, (inputs - make_baseline(adapter, inputs, "black")) * weights, **CLOSE)


def test_black_baseline_is_the_preprocessed_black_image(tiny):
    inputs = tiny.preprocess(grid_images(2))
    expected = (-torch.tensor(tiny.mean) / torch.tensor(tiny.std)).view(1, 3, 1, 1).expand(1, 3, 32, 32)
    torch.testing.assert_close(make_baseline(tiny, inputs, "black"), expected)
    assert torch.equal(make_baseline(tiny, inputs, "zero"), torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="unknown baseline 'grey'"):
        make_baseline(tiny, inputs, "grey")


def test_conductance_sums_to_the_output_difference(tiny):
    """Completeness from the black baseline, up to the path-integral error (small at 256 steps)."""
    inputs, targets = tiny.preprocess(grid_images(2)), targets_for(2)
    raw = METHODS.get("conductance")(n_steps=256).attribute(tiny, inputs, targets, seeds_for(2))
    assert raw.shape == (2, 6, 16, 16)
    torch.testing.assert_close(raw.sum(dim=(1, 2, 3)), output_difference(tiny, inputs, targets), rtol=2e-2, atol=1e-4)


@pytest.mark.parametrize("activation", [nn.ReLU, nn.SiLU])
def test_deeplift_is_complete_when_every_nonlinearity_has_a_rule(activation):
    """Sum of attributions = f(x) - f(baseline); for SiLU through the rescale rule gazebench adds."""
    adapter = mlp_adapter(activation)
    inputs, targets = adapter.preprocess(grid_images(3)), targets_for(3)
    method = DeepLiftMethod()
    attributions = method.attribute(adapter, inputs, targets, seeds_for(3))
    torch.testing.assert_close(attributions.sum(dim=(1, 2, 3)), output_difference(adapter, inputs, targets), rtol=1e-4, atol=1e-5)
    assert nn.SiLU not in SUPPORTED_NON_LINEAR  # the added rule does not outlive the call
    assert ("rescale rule added by gazebench" in " ".join(method.warnings)) == (activation is nn.SiLU)


def test_deeplift_plain_gradients_through_silu_would_break_completeness():
    """Guards the previous test: without the rescale rule, SiLU attributions are not complete."""
    from captum.attr import DeepLift

    adapter = mlp_adapter(nn.SiLU)
    inputs, targets = adapter.preprocess(grid_images(3)), targets_for(3)
    baseline = make_baseline(adapter, inputs, "black").expand_as(inputs)
    with pytest.warns(UserWarning, match="Setting forward, backward hooks"):
        attributions = DeepLift(adapter.module).attribute(inputs.clone().requires_grad_(), baselines=baseline, target=targets)
    assert not torch.allclose(attributions.sum(dim=(1, 2, 3)), output_difference(adapter, inputs, targets), rtol=1e-3, atol=1e-4)


def test_deeplift_records_no_warning_for_a_fully_supported_model(tiny):
    method = DeepLiftMethod()
    method(tiny, grid_images(2), targets_for(2), seeds_for(2), GRID)
    assert method.warnings == []


def test_deeplift_warnings_name_every_module_type_without_a_rule_and_squeeze_excitation():
    convolution, pooling = nn.Conv2d(3, 4, 3), nn.AdaptiveMaxPool2d(2)
    module = nn.Sequential(convolution, nn.GroupNorm(2, 4), nn.SiLU(), SqueezeExcite(4), pooling, nn.Flatten(), nn.Linear(16, 3))
    adapter = adapter_for(module, module[0], input_size=16, name="se_model")
    method = DeepLiftMethod()
    for _ in range(2):  # warnings are recorded once, not once per batch
        maps = method(adapter, grid_images(2), targets_for(2), seeds_for(2), GRID)
    assert torch.isfinite(maps).all()
    lines = method.warnings
    assert len(lines) == 4 and all(line.startswith("deeplift on se_model:") for line in lines)
    assert any("2 x torch.nn.modules.activation.SiLU use the rescale rule" in line for line in lines)
    assert any("torch.nn.modules.normalization.GroupNorm have no DeepLift rule" in line for line in lines)
    assert any("torch.nn.modules.pooling.AdaptiveMaxPool2d have no DeepLift rule" in line for line in lines)
    assert any(f"1 x {SqueezeExcite.__module__}.SqueezeExcite" in line and "x * gate" in line for line in lines)


def test_deeplift_warns_about_torchvision_densenet_functional_relu():
    from torchvision.models import DenseNet

    densenet = DenseNet(growth_rate=4, block_config=(1, 1), num_init_features=8, bn_size=2, num_classes=3)
    lines = deeplift_warnings(densenet, "densenet")
    assert lines == [
        "deeplift on densenet: torchvision DenseNet.forward applies a functional F.relu; DeepLift uses plain gradients there"
    ]


def test_deeplift_refuses_a_reused_relu_module():
    """The documented requirement: one nn.ReLU per use (Captum raises instead of a wrong map)."""
    relu = nn.ReLU()
    module = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 8), relu, nn.Linear(8, 8), relu, nn.Linear(8, 3))
    adapter = adapter_for(module, module[1], input_size=8)
    with pytest.raises(RuntimeError, match="used more than once"):
        DeepLiftMethod()(adapter, grid_images(2), targets_for(2), seeds_for(2), GRID)


def test_all_six_methods_run_on_unet_gaze():
    unet_gaze = pytest.importorskip("gazebench.models.unet_gaze")
    torch.manual_seed(3)
    adapter = unet_gaze.build_adapter(class_names=("Normal", "CHF", "pneumonia"), input_size=64).eval()
    images, targets, seeds = grid_images(2), torch.tensor([1, 2]), seeds_for(2)
    small = {"smoothgrad": dict(n_samples=4), "gradshap": dict(n_samples=4), "conductance": dict(n_steps=4)}
    for name in METHOD_NAMES:
        method = METHODS.get(name)(**small.get(name, {}))
        maps = method(adapter, images, targets, seeds, GRID)
        assert maps.shape == (2, GRID, GRID) and torch.isfinite(maps).all() and (maps >= 0).all(), name
        assert all(p.grad is None for p in adapter.module.parameters()), name
        if name == "deeplift":
            text = "\n".join(method.warnings)
            assert "torch.nn.modules.activation.SiLU use the rescale rule" in text
            assert "timm.models._efficientnet_blocks.SqueezeExcite" in text
