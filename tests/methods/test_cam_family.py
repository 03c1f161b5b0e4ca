"""The grad-cam CAM family: raw maps equal to the library's, batching, refusals, hooks, NaN and Eigen-CAM's sign."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest
import torch
from pytorch_grad_cam.utils.image import scale_cam_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection
from torch import nn

import gazebench.methods.cam_family  # noqa: F401 - registers the methods
from gazebench.errors import UserError
from gazebench.methods.cam_family import orient_projection
from gazebench.models.base import ModelAdapter
from gazebench.registry import METHODS
from tests.fixtures.tiny_models import TinyCNN, zoo_adapter

NAMES = ["gradcam_plus_plus", "scorecam", "xgradcam", "hirescam", "layercam", "eigencam"]
LINEAR_IN_LOGITS = ["xgradcam", "hirescam", "layercam"]  # raw map linear in the last layer's weights
SIZE = 32
GRID = 40


def tiny_adapter(seed: int = 0) -> ModelAdapter:
    torch.manual_seed(seed)
    module = TinyCNN().eval()
    return ModelAdapter(name="tiny", module=module, class_names=["a", "b", "c"], cam_layer=module.conv2, input_size=SIZE)


def model_inputs(count: int, seed: int = 3) -> torch.Tensor:
    return torch.randn(count, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def library_output(adapter: ModelAdapter, name: str, inputs: torch.Tensor, targets: torch.Tensor, batch_size: int = 4) -> np.ndarray:
    """The library's own ``cam(input_tensor, targets)``: ReLU, min-max, cv2 resize to the input size."""
    with METHODS.get(name).cam_class(model=adapter.module, target_layers=[adapter.cam_layer]) as cam:
        cam.batch_size = batch_size
        return cam(inputs, [ClassifierOutputTarget(int(t)) for t in targets])


def library_scaling(raw: torch.Tensor, size: int) -> np.ndarray:
    """What BaseCAM.forward does to the raw maps: ReLU, scale_cam_image with resize, then the layer aggregation (ReLU, mean, scale_cam_image)."""
    per_layer = scale_cam_image(np.maximum(raw.cpu().numpy(), 0), (size, size))
    return scale_cam_image(np.maximum(per_layer[:, None], 0).mean(axis=1))


def raw_maps(name: str, adapter: ModelAdapter, inputs: torch.Tensor, targets: torch.Tensor, max_rows: int | None = None) -> torch.Tensor:
    method = METHODS.get(name)()
    method.max_rows = max_rows
    return method.attribute(adapter, inputs, targets, [0] * len(inputs))


def hook_count(module: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) + len(m._backward_pre_hooks) for m in module.modules())


def test_the_methods_are_registered_with_family_library_postprocess_and_cost():
    for name in NAMES:
        method = METHODS.get(name)()
        assert (method.family, method.library, method.postprocess, method.default_params) == ("cam", "grad-cam", "relu", {"channels": 16} if name == "scorecam" else {})
    assert METHODS.get("scorecam")().passes() == ("1 + min(C, 16)", 0)
    assert METHODS.get("scorecam")(channels=0).passes() == ("1 + C", 0)
    assert METHODS.get("eigencam")().passes() == (1, 0)
    assert {METHODS.get(name)().passes() for name in ["gradcam_plus_plus", "xgradcam", "hirescam", "layercam"]} == {(1, 1)}


@pytest.mark.parametrize("name", NAMES)
def test_raw_map_scaled_as_the_library_does_is_the_library_output(name):
    adapter = tiny_adapter()
    inputs, targets = model_inputs(3), torch.tensor([0, 1, 2])
    raw = raw_maps(name, adapter, inputs, targets)
    assert raw.shape == (3, SIZE // 2, SIZE // 2) and raw.dtype == torch.float32
    library = library_output(adapter, name, inputs, targets)
    if name == "eigencam":  # gazebench may flip an image's projection; the library never does
        for index in range(3):
            errors = [np.abs(library_scaling(sign * raw[index : index + 1], SIZE) - library[index : index + 1]).max() for sign in (1, -1)]
            assert min(errors) < 1e-5
    else:
        np.testing.assert_allclose(library_scaling(raw, SIZE), library, atol=1e-5)
    flat = raw.flatten(1)
    scaled = (flat - flat.amin(1, keepdim=True)) / (flat.amax(1, keepdim=True) - flat.amin(1, keepdim=True))
    assert not torch.allclose(flat, scaled, atol=1e-3)  # the raw map is not min-max scaled


@pytest.mark.parametrize("name", LINEAR_IN_LOGITS)
def test_raw_map_scales_with_the_logit(name):
    adapter = tiny_adapter()
    inputs, targets = model_inputs(2), torch.tensor([1, 2])
    raw = raw_maps(name, adapter, inputs, targets)
    with torch.no_grad():
        adapter.module.fc.weight.mul_(3)
        adapter.module.fc.bias.mul_(3)
    torch.testing.assert_close(raw_maps(name, adapter, inputs, targets), 3 * raw, rtol=1e-5, atol=1e-7)


def test_eigencam_raw_map_scales_with_the_activations():
    adapter = tiny_adapter()
    inputs, targets = model_inputs(2), torch.tensor([1, 2])
    raw = raw_maps("eigencam", adapter, inputs, targets)
    with torch.no_grad():
        adapter.module.conv2.weight.mul_(3)
        adapter.module.conv2.bias.mul_(3)
    torch.testing.assert_close(raw_maps("eigencam", adapter, inputs, targets), 3 * raw, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_batched_maps_equal_one_image_at_a_time(name):
    adapter = tiny_adapter()
    inputs, targets = model_inputs(3, seed=5), torch.tensor([2, 0, 1])
    batched = raw_maps(name, adapter, inputs, targets)
    for index in range(3):
        single = raw_maps(name, adapter, inputs[index : index + 1], targets[index : index + 1])
        torch.testing.assert_close(batched[index : index + 1], single, rtol=1e-5, atol=1e-5)


def test_scorecam_maps_do_not_depend_on_rows_per_pass():
    adapter = tiny_adapter()
    inputs, targets = model_inputs(2), torch.tensor([0, 2])
    reference = raw_maps("scorecam", adapter, inputs, targets, max_rows=1)
    for rows in (4, 100):
        torch.testing.assert_close(raw_maps("scorecam", adapter, inputs, targets, max_rows=rows), reference, rtol=1e-5, atol=1e-6)


def test_scorecam_passes_rows_per_pass_to_the_library_as_batch_size():
    adapter = tiny_adapter()
    sizes: list[int] = []
    handle = adapter.module.register_forward_hook(lambda module, args, output: sizes.append(len(args[0])))
    try:
        raw_maps("scorecam", adapter, model_inputs(1), torch.tensor([0]), max_rows=4)
    finally:
        handle.remove()
    assert sizes == [1, 4, 2]  # the hooked forward, then the 6 masked inputs of conv2's 6 channels in chunks of 4


@pytest.mark.parametrize("name", NAMES)
def test_protocol_maps_have_the_grid_shape_and_are_finite_and_non_negative(name):
    adapter = tiny_adapter()
    images = torch.rand(2, 1, GRID, GRID, generator=torch.Generator().manual_seed(1))
    maps = METHODS.get(name)()(adapter, images, torch.tensor([0, 1]), [1, 2], GRID)
    assert maps.shape == (2, GRID, GRID)
    assert torch.isfinite(maps).all() and (maps >= 0).all() and (maps > 0).any()


def test_check_model_refuses_models_with_extra_inputs_in_one_line():
    adapter = tiny_adapter()
    adapter.extra_inputs = lambda batch: (batch,)
    for name in NAMES:
        with pytest.raises(UserError) as error:
            METHODS.get(name)().check_model(adapter)
        assert "tiny" in str(error.value) and "extra inputs" in str(error.value) and "\n" not in str(error.value)


class InplaceAfterLayer(nn.Module):
    """The layout of grad-cam issue #147 (torchvision DenseNet's norm5 + F.relu(inplace=True))."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.norm = nn.BatchNorm2d(4)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.pool(torch.relu_(self.norm(self.conv(x)))).flatten(1))


class SharedLayer(nn.Module):
    """A cam_layer module called twice in one forward pass."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.act = nn.ReLU()
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        return self.fc(self.act(self.conv(self.act(x))).mean((2, 3)))


def test_check_model_refuses_a_cam_layer_modified_in_place_or_used_twice_naming_it():
    inplace = InplaceAfterLayer().eval()
    with pytest.raises(UserError, match=r"norm \(BatchNorm2d\).*in place"):
        METHODS.get("hirescam")().check_model(ModelAdapter("inplace", inplace, ["a", "b", "c"], inplace.norm, input_size=8))
    shared = SharedLayer().eval()
    with pytest.raises(UserError, match=r"act \(ReLU\) runs 2 times"):
        METHODS.get("layercam")().check_model(ModelAdapter("shared", shared, ["a", "b", "c"], shared.act, input_size=8))
    with pytest.raises(UserError, match="ran 2 times"):  # attribute refuses it too
        raw_maps("layercam", ModelAdapter("shared", shared, ["a", "b", "c"], shared.act, input_size=8), torch.randn(1, 3, 8, 8), torch.tensor([0]))
    METHODS.get("hirescam")().check_model(tiny_adapter())  # a correct layer passes


def test_library_stores_corrupted_activations_under_an_inplace_op_on_cpu():
    """Why the in-place refusal exists: on CPU the library's stored activations are the post-ReLU values."""
    model = InplaceAfterLayer().eval()
    with torch.no_grad():
        model.norm.running_mean.fill_(1.0)  # plenty of negative BatchNorm outputs
    x = torch.randn(1, 3, 8, 8, requires_grad=True)
    true_norm_output = model.norm(model.conv(x)).detach()
    assert (true_norm_output < 0).any()
    with METHODS.get("hirescam").cam_class(model=model, target_layers=[model.norm]) as cam:
        cam.activations_and_grads(x)
        stored = cam.activations_and_grads.activations[0]
    assert (stored >= 0).all() and not torch.allclose(stored, true_norm_output)


@pytest.mark.parametrize("name", NAMES)
def test_no_hooks_flags_or_references_left_behind(name):
    adapter = tiny_adapter()
    module = adapter.module.train()
    module.conv1.weight.requires_grad_(False)
    flags = [parameter.requires_grad for parameter in module.parameters()]
    inputs, targets = model_inputs(2), torch.tensor([0, 1])
    METHODS.get(name)().attribute(adapter, inputs, targets, [0, 0])
    assert hook_count(module) == 0
    assert [parameter.requires_grad for parameter in module.parameters()] == flags
    assert all(parameter.grad is None for parameter in module.parameters())
    assert all(m.training for m in module.modules())  # BaseCAM's model.eval() undone
    if name != "eigencam":  # Eigen-CAM ignores its targets
        with pytest.raises(RuntimeError, match="index 7"):  # an IndexError, which BaseCAM.__exit__ swallows, is raised
            METHODS.get(name)().attribute(adapter, inputs, torch.tensor([7, 0]), [0, 0])
    assert hook_count(module) == 0
    reference = weakref.ref(module)
    del adapter, module
    gc.collect()
    assert reference() is None  # nothing keeps the model alive


class DivideByInputScale(nn.Module):
    """x / max|x|: NaN for an all-zero input (Score-CAM's masked input of a constant channel)."""

    def forward(self, x):
        return x / x.abs().amax(dim=(1, 2, 3), keepdim=True)


def test_scorecam_nan_is_refused_not_returned():
    torch.manual_seed(0)
    network = TinyCNN()
    with torch.no_grad():
        network.conv2.weight[0].zero_()
        network.conv2.bias[0] = 0.0  # channel 0 is constant: its mask is 0 and its masked input all zero
    module = nn.Sequential(DivideByInputScale(), network).eval()
    adapter = ModelAdapter("divides", module, ["a", "b", "c"], network.conv2, input_size=SIZE)
    inputs, targets = model_inputs(2), torch.tensor([0, 1])
    assert torch.isfinite(module(inputs)).all()
    assert np.isnan(library_output(adapter, "scorecam", inputs, targets)).all()  # the library returns NaN maps silently
    with pytest.raises(UserError, match=r"scorecam on model divides: non-finite map .*\[0, 1\]"):
        raw_maps("scorecam", adapter, inputs, targets)
    raw_maps("gradcam_plus_plus", adapter, inputs, targets)  # gradient methods are fine on it


def test_non_finite_activations_are_refused():
    adapter = tiny_adapter()
    inputs = model_inputs(2)
    inputs[1, 0, 0, 0] = float("nan")
    with pytest.raises(UserError, match=r"non-finite cam_layer activation .*\[1\]"):
        raw_maps("eigencam", adapter, inputs, torch.tensor([0, 1]))  # the library's projection would zero NaNs silently


def test_eigencam_is_the_library_projection_oriented_along_the_channel_mean():
    adapter = tiny_adapter()
    inputs = model_inputs(4, seed=11)
    stored: list[torch.Tensor] = []
    handle = adapter.cam_layer.register_forward_hook(lambda module, args, output: stored.append(output.detach()))
    with torch.no_grad():
        adapter.module(inputs)
    handle.remove()
    activations = stored[0].numpy()
    projection = get_2d_projection(activations)  # what the library's EigenCAM returns, with SVD's sign
    raw = raw_maps("eigencam", adapter, inputs, torch.zeros(4, dtype=torch.long)).numpy()
    np.testing.assert_allclose(raw, orient_projection(projection, activations), atol=1e-6)
    np.testing.assert_allclose(np.abs(raw), np.abs(projection), atol=1e-6)
    for image, image_activations in zip(raw, activations):
        assert np.corrcoef(image.ravel(), image_activations.mean(axis=0).ravel())[0, 1] > 0


def test_orient_projection_is_sign_invariant_and_finds_the_responding_region():
    generator = np.random.default_rng(0)
    blob = np.zeros((8, 8), dtype=np.float32)
    blob[2:5, 3:6] = 1.0
    activations = (generator.uniform(0.5, 2.0, size=(1, 16, 1, 1)) * blob + 0.05 * generator.standard_normal((1, 16, 8, 8))).astype(np.float32)
    projection = get_2d_projection(activations)
    for sign in (1, -1):
        oriented = orient_projection(sign * projection, activations)
        np.testing.assert_array_equal(oriented, orient_projection(projection, activations))
        assert blob.ravel()[np.argmax(oriented[0])] == 1.0  # the map peaks on the blob, not off it


@pytest.fixture(scope="module")
def densenet():
    return zoo_adapter("densenet121", 64).eval()


def test_densenet121_maps_equal_hand_computed_formulas(densenet):
    """grad-cam on gazebench's DenseNet-121 (cam_layer: a non-inplace nn.ReLU): A and dy/dA from the network's own halves."""
    METHODS.get("hirescam")().check_model(densenet)
    inputs = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    targets = torch.tensor([1, 2])
    network = densenet.module
    activations = network.feature_map(inputs).detach().requires_grad_(True)
    logits = network.classify(activations)
    gradients = torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), activations)[0]
    a, g = activations.detach(), gradients
    assert (a >= 0).all()  # the stored activations are the ReLU output
    spatial_sum = a.sum((2, 3), keepdim=True)
    alpha = g**2 / (2 * g**2 + spatial_sum * g**3 + 1e-6)
    alpha = torch.where(g != 0, alpha, torch.zeros_like(alpha))
    expected = {
        "hirescam": (g * a).sum(1),
        "layercam": (g.clamp_min(0) * a).sum(1),
        "xgradcam": ((g * a / (spatial_sum + 1e-7)).sum((2, 3), keepdim=True) * a).sum(1),
        "gradcam_plus_plus": ((g.clamp_min(0) * alpha).sum((2, 3), keepdim=True) * a).sum(1),
    }
    for name, reference in expected.items():
        torch.testing.assert_close(raw_maps(name, densenet, inputs, targets), reference, rtol=1e-4, atol=1e-6, msg=name)
    # HiResCAM is exact here: the logit is linear in the pooled ReLU output, so the map sums to logit - bias
    torch.testing.assert_close(expected["hirescam"].sum((1, 2)), logits.detach().gather(1, targets[:, None])[:, 0] - network.classifier.bias[targets].detach(), rtol=1e-4, atol=1e-5)
    assert hook_count(network) == 0


def test_scorecam_channel_limit_is_the_library_on_the_most_activated_channels():
    """``scorecam:channels=k``: the library's own Score-CAM computation on each image's k channels of highest mean activation."""
    import pytorch_grad_cam

    adapter = tiny_adapter()  # conv2 has 6 channels
    inputs, targets = model_inputs(2), torch.tensor([0, 2])
    method = METHODS.get("scorecam")(channels=2)
    limited = method.attribute(adapter, inputs, targets, [0, 0])
    with torch.no_grad():
        activations = adapter.cam_layer(adapter.module.relu1(adapter.module.conv1(inputs))).numpy()
    with pytorch_grad_cam.ScoreCAM(model=adapter.module, target_layers=[adapter.cam_layer]) as cam:
        cam.batch_size = 16
        for index in range(2):
            keep = np.sort(np.argsort(-activations[index].mean(axis=(1, 2)), kind="stable")[:2])
            expected = cam.get_cam_image(inputs[index : index + 1], adapter.cam_layer, [ClassifierOutputTarget(int(targets[index]))], activations[index : index + 1][:, keep], None, False)
            np.testing.assert_allclose(limited[index].numpy(), expected[0], rtol=1e-5, atol=1e-6)
    full = METHODS.get("scorecam")(channels=0).attribute(adapter, inputs, targets, [0, 0])
    assert not torch.allclose(limited, full)  # the limit changes the map: it is not decorative
