"""Generic families: torchvision:<name>, timm:<name>, xrv:<weights>; the cam_layer rule; Grad-CAM through them.

The two real images (the ``nih_samples`` fixture of tests/conftest.py, skipped when absent) are from the NIH ChestX-ray14
dataset (https://nihcc.app.box.com/v/ChestXray-NIHCC), courtesy of the NIH Clinical Center;
Wang X et al., "ChestX-ray8", IEEE CVPR 2017 (see tests/data/NIH_NOTICE.md).  They test the
real-image path through a torchxrayvision network with random weights, never a result.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import DeepLift
from torch import nn

from gazebench.data.gaze import Letterbox
from gazebench.data.images import image_size, letterbox_array, read_grey
from gazebench.data.sample import Sample, collate, one_hot
from gazebench.errors import UserError
from gazebench.methods.cam import GradCamMethod
from gazebench.models import xrv as xrv_family
from gazebench.models.base import IMAGENET_MEAN
from gazebench.models.cam_layer import find_cam_layer
from gazebench.models.checkpoint import adapter_from_checkpoint, save_checkpoint, sha256_file, state_dict_sha256
from gazebench.registry import MODELS

CLASSES = ["Normal", "CHF", "pneumonia"]
SIZE = 64
NIH_IMAGES = ["00000001_000.png", "00027426_000.png"]
XRV_ALL = "densenet121-res224-all"


def build(name: str, **options):
    torch.manual_seed(0)
    return MODELS.get(name).build_adapter(class_names=CLASSES, input_size=SIZE, **options).eval()


def module_name(adapter) -> str:
    return next(name for name, module in adapter.module.named_modules() if module is adapter.cam_layer)


def grid_images(n: int = 2, size: int = SIZE) -> torch.Tensor:
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def resnet18():
    return build("torchvision:resnet18")


@pytest.fixture(scope="module")
def densenet121():
    return build("torchvision:densenet121")


@pytest.fixture(scope="module")
def convnext_atto():
    return build("timm:convnext_atto")


# --- torchvision and timm ---------------------------------------------------------------------


def test_torchvision_models_build_with_random_weights_and_the_rule_finds_their_last_feature_map(resnet18, densenet121):
    assert module_name(resnet18) == "layer4" and module_name(densenet121) == "features"
    for adapter in (resnet18, densenet121):
        assert adapter.class_names == CLASSES and adapter.input_size == SIZE and adapter.mean == IMAGENET_MEAN
        with torch.no_grad():
            assert adapter.logits(grid_images()).shape == (2, 3)


def test_timm_model_builds_and_its_cam_layer_outputs_forward_features(convnext_atto):
    network = convnext_atto.module
    assert module_name(convnext_atto) == "norm_pre"
    seen = {}
    handle = convnext_atto.cam_layer.register_forward_hook(lambda module, args, output: seen.setdefault("out", output))
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        features = network.forward_features(x)
    handle.remove()
    assert torch.equal(seen["out"], features) and features.shape[-1] == 2
    assert convnext_atto.mean == tuple(network.pretrained_cfg["mean"])


def test_gradcam_runs_through_them_and_matches_a_hand_computed_gradcam(resnet18, densenet121, convnext_atto):
    images = grid_images()
    targets = torch.tensor([1, 2])
    method = GradCamMethod()
    for adapter in (resnet18, densenet121, convnext_atto):
        maps = method(adapter, images, targets, [0, 1], grid=32)
        assert maps.shape == (2, 32, 32) and torch.isfinite(maps).all() and (maps >= 0).all() and maps.sum() > 0
    # resnet18 by hand: ReLU(sum_k mean_hw(d logit / d A_k) * A_k) on layer4's output A
    saved = {}
    handle = resnet18.cam_layer.register_forward_hook(lambda module, args, output: saved.setdefault("A", output))
    logits = resnet18.module(resnet18.preprocess(images))
    handle.remove()
    activations = saved["A"]
    gradients = torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), activations)[0]
    expected = F.relu((gradients.mean(dim=(2, 3), keepdim=True) * activations).sum(dim=1, keepdim=True))
    raw = method.attribute(resnet18, resnet18.preprocess(images), targets, [0, 1])
    torch.testing.assert_close(raw, expected.detach(), rtol=1e-4, atol=1e-6)


def test_resnet_blocks_get_a_relu_per_use_so_deeplift_runs_and_sums_to_the_logit_change(resnet18):
    torch.manual_seed(3)
    plain = __import__("torchvision").models.resnet18(weights=None, num_classes=3).eval()
    plain.load_state_dict(resnet18.module.state_dict())  # same state-dict keys
    x = resnet18.preprocess(grid_images())
    baseline = torch.zeros_like(x)
    with torch.no_grad():
        assert torch.equal(resnet18.module(x), plain(x))
    with pytest.raises(RuntimeError, match="DeepLift"):  # torchvision's own blocks reuse one ReLU
        DeepLift(plain).attribute(x, baselines=baseline, target=0)
    from gazebench.methods.deeplift import extra_rescale_rules  # gazebench's corrected max-pool rule

    with extra_rescale_rules(resnet18.module):
        attributions = DeepLift(resnet18.module).attribute(x.clone().requires_grad_(), baselines=baseline, target=0)
    with torch.no_grad():
        delta = resnet18.module(x)[:, 0] - resnet18.module(baseline)[:, 0]
    torch.testing.assert_close(attributions.sum(dim=(1, 2, 3)), delta, rtol=1e-3, atol=1e-3)


def test_checkpoint_round_trip_through_the_prefixed_name(tmp_path, resnet18):
    path = save_checkpoint(tmp_path / "r18.pt", "torchvision:resnet18", resnet18.module.state_dict(), {"model": resnet18.config}, CLASSES)
    loaded = adapter_from_checkpoint(path, expected_model="torchvision:resnet18")
    images = grid_images()
    with torch.no_grad():
        assert torch.equal(loaded.logits(images), resnet18.logits(images))
    assert module_name(loaded) == "layer4" and loaded.input_size == SIZE


def test_recipes_and_loss_of_the_generic_families():
    spec = MODELS.get("timm:convnext_atto")
    embedded, default = spec.default_recipe("synth"), spec.default_recipe("egd")
    assert (embedded["name"], embedded["model"]["input_size"]) == ("embedded", 128)
    assert (default["name"], default["model"]["input_size"], default["training"]["lr"]) == ("default", 224, 0.0001)
    assert embedded["training"]["optimizer"] == default["training"]["optimizer"] == "adam"


def test_loss_is_bce_over_known_labels(resnet18):
    samples = [Sample(f"i{k}", f"p{k}", torch.rand(1, SIZE, SIZE), one_hot(k % 3, 3), torch.zeros(SIZE, SIZE), torch.zeros(0, 3)) for k in range(3)]
    batch = collate(samples)
    batch.labels[0, 1] = float("nan")
    loss = MODELS.get("torchvision:resnet18").loss(resnet18, batch)
    with torch.no_grad():
        logits = resnet18.logits(batch.images)
    known = ~batch.labels.isnan()
    torch.testing.assert_close(loss, F.binary_cross_entropy_with_logits(logits[known], batch.labels[known]))


def test_cam_layer_option_overrides_the_rule_and_names_are_checked():
    adapter = build("torchvision:resnet18", cam_layer="layer3")
    assert module_name(adapter) == "layer3"
    with pytest.raises(UserError, match=r"no module 'layer9' for cam_layer; top-level modules: conv1, bn1, relu, maxpool, layer1"):
        build("torchvision:resnet18", cam_layer="layer9")


# --- the cam_layer rule on small networks ---------------------------------------------------


class VGGLike(nn.Module):
    """features -> AdaptiveAvgPool2d((3, 3)) (a resampled, not a new, map) -> classifier."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4))
        self.pool = nn.AdaptiveAvgPool2d((3, 3))
        self.classifier = nn.Linear(36, 2)

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)).flatten(1))


class TokenNet(nn.Module):
    """A patch-embedding convolution followed by token layers (a ViT in miniature)."""

    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(3, 8, 16, stride=16)
        self.mix = nn.Linear(8, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        tokens = self.mix(self.patch(x).flatten(2).transpose(1, 2))
        return self.head(tokens.mean(dim=1))


class ReusedEnd(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.act(self.act(self.conv(x))).mean(dim=(2, 3)))


def test_rule_skips_adaptive_pooling_and_restores_training_mode():
    network = VGGLike().train()
    assert find_cam_layer(network, 32) is network.features
    assert network.training and network.features[0].training


def test_rule_refuses_transformers_and_reused_modules_with_one_line():
    with pytest.raises(UserError, match=r"^m: token sequences follow its last 4-D map 'patch' \(a transformer\?\).*wrap_model"):
        find_cam_layer(TokenNet(), 64, model_name="m")
    with pytest.raises(UserError, match=r"^m: its last feature map comes from 'act', a module used 2 times per forward pass"):
        find_cam_layer(ReusedEnd(), 64, model_name="m")


def test_unknown_architectures_are_refused_by_the_registry():
    with pytest.raises(UserError, match=r"^unknown model 'torchvision:resnet5': torchvision has no classification model 'resnet5'; choose one of: alexnet, .*resnet18"):
        MODELS.get("torchvision:resnet5")
    with pytest.raises(UserError, match=r"^unknown model 'timm:convnext_atoo': timm has no model 'convnext_atoo'; close matches: convnext_atto.*names in all \(timm.list_models\(\)\)$"):
        MODELS.get("timm:convnext_atoo")
    with pytest.raises(UserError, match=r"^unknown model 'xrv:densenet121-all': torchxrayvision has no weights 'densenet121-all'; choose one of: densenet121-res224-all, .*resnet50-res512-all$"):
        MODELS.get("xrv:densenet121-all")


# --- xrv:<weights> --------------------------------------------------------------------------


@pytest.fixture
def xrv_home(tmp_path, monkeypatch):
    """An empty home folder, so torchxrayvision's cache (~/.torchxrayvision/models_data) is empty."""
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path / ".torchxrayvision" / "models_data"


def xrv_file_and_url(weights: str) -> tuple[str, str]:
    url = xrv_family.xrv_models().model_urls[weights]["weights_url"]
    return url.rsplit("/", 1)[1], url


def test_missing_xrv_weights_name_the_file_the_folder_and_the_url(xrv_home, tmp_path):
    filename, url = xrv_file_and_url(XRV_ALL)
    assert filename == "nih-pc-chex-mimic_ch-google-openi-kaggle-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt"
    with pytest.raises(UserError) as error:
        MODELS.get(f"xrv:{XRV_ALL}").build_adapter()
    message = str(error.value)
    assert "\n" not in message and "never downloads" in message
    assert f"torchxrayvision's cache folder {xrv_home} has no file {filename}" in message
    assert f"fetch {url} into that folder" in message
    with pytest.raises(UserError, match=rf"^weights of xrv:{XRV_ALL} not found: no file {tmp_path / 'nowhere.pt'}, and torchxrayvision's cache folder"):
        xrv_family.open_xrv_for_run(XRV_ALL, tmp_path / "nowhere.pt")
    assert not xrv_home.exists()  # nothing was created, nothing downloaded


def test_xrv_densenet_with_random_weights_keeps_its_pathologies_and_drops_empty_outputs():
    full = MODELS.get(f"xrv:{XRV_ALL}").build_adapter(random_weights=True)
    assert find_cam_layer(full.module, SIZE, channels=1) is full.cam_layer  # the rule agrees
    labels = xrv_family.xrv_models().model_urls["densenet121-res224-mimic_ch"]["labels"]
    partial = MODELS.get("xrv:densenet121-res224-mimic_ch").build_adapter(random_weights=True, input_size=SIZE)
    assert full.class_names == xrv_family.xrv_models().DenseNet.targets and len(full.class_names) == 18
    assert (full.input_size, full.mean, full.std, full.activation) == (224, (0.5,), (1 / 2048,), "sigmoid")
    assert module_name(full) == "relu"  # the final ReLU module before pooling
    assert partial.class_names == [name for name in labels if name] and len(partial.class_names) == 11
    with pytest.raises(UserError, match="predicts .* not \\['Normal', 'CHF', 'pneumonia'\\]; map the data's classes with a label map"):
        MODELS.get(f"xrv:{XRV_ALL}").build_adapter(class_names=CLASSES, random_weights=True)
    spec = MODELS.get(f"xrv:{XRV_ALL}")
    assert spec.default_recipe is None and not spec.trainable
    with pytest.raises(UserError, match="pretrained torchxrayvision model and gazebench does not train it"):
        spec.recipe_for("synth")


def test_xrv_wrapper_gives_xrv_logits_of_the_named_outputs():
    models = xrv_family.xrv_models()
    torch.manual_seed(4)
    network = models.DenseNet(weights=None).eval()
    labels = models.model_urls["densenet121-res224-mimic_ch"]["labels"]
    wrapped = xrv_family.XRVClassifier(network, labels).eval()
    x = torch.randn(2, 1, SIZE, SIZE) * 500
    keep = [index for index, name in enumerate(labels) if name]
    with torch.no_grad():
        torch.testing.assert_close(wrapped(x), network(x)[:, keep])


def test_xrv_weights_load_from_a_local_file_or_the_cache_folder(xrv_home, tmp_path):
    models = xrv_family.xrv_models()
    torch.manual_seed(5)
    saved = models.DenseNet(weights=None).eval()
    local = tmp_path / "my_xrv_weights.pt"
    torch.save(saved, local)  # torchxrayvision's DenseNet files are pickled modules
    x = torch.randn(1, 1, SIZE, SIZE) * 500
    with torch.no_grad():
        expected = saved(x)
    adapter, path, sha256 = xrv_family.open_xrv_for_run(XRV_ALL, local)
    assert (path, sha256) == (local, sha256_file(local))
    assert adapter.config["weights_source"] == str(local)
    xrv_home.mkdir(parents=True)
    (xrv_home / xrv_file_and_url(XRV_ALL)[0]).write_bytes(local.read_bytes())
    cached = MODELS.get(f"xrv:{XRV_ALL}").build_adapter()
    with torch.no_grad():
        torch.testing.assert_close(adapter.module(x), expected)
        torch.testing.assert_close(cached.module(x), expected)


def test_gazebench_checkpoint_of_an_xrv_model_opens_for_run(tmp_path):
    torch.manual_seed(6)
    adapter = MODELS.get(f"xrv:{XRV_ALL}").build_adapter(random_weights=True, input_size=SIZE)
    path = save_checkpoint(tmp_path / "xrv.pt", f"xrv:{XRV_ALL}", adapter.module.state_dict(), {"model": {"input_size": SIZE}}, adapter.class_names)
    loaded, loaded_path, sha256 = xrv_family.open_xrv_for_run(XRV_ALL, path)
    x = adapter.preprocess(grid_images(1))
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(x), adapter.module(x))
    assert (loaded_path, sha256) == (path, sha256_file(path))


def nih_grid_images(folder: Path, grid: int) -> torch.Tensor:
    images = []
    for name in NIH_IMAGES:
        path = folder / name
        width, height = image_size(path)
        images.append(letterbox_array(read_grey(path), Letterbox(width, height, grid)))
    return torch.stack(images)[:, None]


def test_xrv_densenet_on_real_radiographs_uses_xrv_normalisation_forward_and_gradcam(nih_samples):
    torch.manual_seed(7)
    adapter = MODELS.get(f"xrv:{XRV_ALL}").build_adapter(random_weights=True).eval()
    images = nih_grid_images(nih_samples, adapter.input_size)  # 224: the model's own resolution, no resize
    inputs = adapter.preprocess(images)
    expected = np.stack([xrv_family.xrv_models().utils.normalize(image.numpy(), 1) for image in images])
    np.testing.assert_allclose(inputs.numpy(), expected, rtol=0, atol=1e-3)
    assert inputs.shape == (2, 1, 224, 224) and -1024 <= inputs.min() < inputs.max() <= 1024
    with torch.no_grad():
        logits = adapter.module(inputs)
    assert logits.shape == (2, 18) and torch.isfinite(logits).all()
    maps = GradCamMethod()(adapter, images, logits.argmax(dim=1), [0, 1], grid=224)
    assert maps.shape == (2, 224, 224) and torch.isfinite(maps).all() and (maps >= 0).all() and (maps.flatten(1).amax(dim=1) > 0).all()


def test_state_dict_sha256_identifies_weights(resnet18):
    first = state_dict_sha256(resnet18.module)
    assert first == state_dict_sha256(resnet18.module) and len(first) == 64
    other = build("torchvision:resnet18")
    with torch.no_grad():
        other.module.fc.bias.add_(1e-3)
    assert state_dict_sha256(other.module) != first


def test_gazebench_deeplift_on_a_resnet_is_complete_with_the_black_baseline(resnet18):
    from gazebench.methods.deeplift import DeepLiftMethod
    from gazebench.methods.gradient import make_baseline

    inputs = resnet18.preprocess(torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(3)))
    targets = torch.tensor([0, 2])
    total = DeepLiftMethod().attribute(resnet18, inputs, targets, [0, 0]).detach().flatten(1).sum(dim=1)
    baseline = make_baseline(resnet18, inputs, "black").expand_as(inputs)
    with torch.no_grad():
        difference = resnet18.module(inputs)[[0, 1], targets] - resnet18.module(baseline)[[0, 1], targets]
    torch.testing.assert_close(total, difference, rtol=1e-3, atol=1e-4)
