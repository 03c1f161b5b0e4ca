"""DenseNet-121 models: densenet121 (CheXclusion), densenet_aug (Kim et al.) and mimic_guided (MIMIC).

Tiny inputs (64 px: a 2 x 2 final feature map) keep the file fast on a 2-core CPU.
"""

import math
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from captum.attr import LayerGradCam
from captum.attr._core import deep_lift
from torch import nn
from torchvision.models import densenet121

from gazebench.data.sample import Sample, collate, one_hot
from gazebench.errors import UserError
from gazebench.methods import deeplift as deeplift_module
from gazebench.methods.deeplift import DeepLiftMethod, deeplift_warnings
from gazebench.methods.gradient import make_baseline
from gazebench.models import densenet, losses, mimic_guided
from gazebench.models.checkpoint import adapter_from_checkpoint, save_checkpoint
from gazebench.registry import MODELS

EGD = ["Normal", "CHF", "pneumonia"]
CHEXPERT = [
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture", "Lung Lesion",
    "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia", "Pneumothorax", "Support Devices",
]  # fmt: skip
SIZE = 64
BUILDERS = {
    "densenet121": densenet.build_adapter,
    "densenet_aug": densenet.build_aug_adapter,
    "mimic_guided": mimic_guided.build_adapter,
}
LOSS_PARAMS = {"densenet121": {}, "densenet_aug": {"gaze_weight": 1.0}, "mimic_guided": {"kl_weight": 1.0, "smoothing": 0.01}}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread for this module, restored after.

    A DenseNet-121 forward pass is some 600 small operations; at 64 px each is too small to
    share between threads, and when other processes keep the cores busy every parallel
    region waits for a descheduled thread: the module took 14 s with one thread and over
    10 minutes with two on a loaded 2-core machine.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def build(model: str, classes=EGD, seed: int = 0):
    torch.manual_seed(seed)
    return BUILDERS[model](classes, input_size=SIZE)


def block_gaze(cell_mass: torch.Tensor, grid: int = SIZE) -> torch.Tensor:
    """A density on the grid that is constant on each feature cell, with ``cell_mass`` [h, w] (sums to 1) per cell."""
    h = cell_mass.shape[0]
    return cell_mass.repeat_interleave(grid // h, 0).repeat_interleave(grid // h, 1) / (grid // h) ** 2


def tiny_batch(n_classes: int = 3, with_gaze=(True, True, True, False), seed: int = 3):
    """Four grid images, labels (one-hot for 3 classes; multi-label with a NaN for more), gaze on some."""
    generator = torch.Generator().manual_seed(seed)
    samples = []
    for k, has in enumerate(with_gaze):
        if n_classes == 3:
            labels = one_hot(k % 3, 3)
        else:
            labels = (torch.rand(n_classes, generator=generator) > 0.6).float()
            labels[0], labels[1], labels[k % n_classes] = float("nan"), 1.0, 1.0
        gaze = torch.zeros(SIZE, SIZE)
        if has:
            gaze[8 + 8 * k : 24 + 8 * k, 10:40] = 1
            gaze /= gaze.sum()
        image = (0.2 + 0.2 * (k % 3) + 0.2 * torch.rand(1, SIZE, SIZE, generator=generator)).clamp(0, 1)
        samples.append(Sample(f"i{k}", f"p{k}", image, labels, gaze, torch.zeros(0, 3)))
    return collate(samples)


# --- networks, adapters, checkpoints --------------------------------------------------------


@pytest.mark.parametrize("classes", [EGD, CHEXPERT], ids=["egd3", "chexpert14"])
@pytest.mark.parametrize("model", list(BUILDERS))
def test_models_build_with_random_weights_and_give_one_logit_per_class(model, classes):
    adapter = build(model, classes).eval()
    assert adapter.name == model and adapter.class_names == classes and adapter.input_size == SIZE
    assert adapter.module.classifier.out_features == len(classes)
    with torch.no_grad():
        logits = adapter.logits(torch.rand(2, 1, 48, 48))  # grid images of another size are resized
    assert logits.shape == (2, len(classes)) and torch.isfinite(logits).all()
    assert (adapter.gaze_head is not None) == (model == "densenet_aug")


def test_densenet_aug_gaze_head_gives_gaze_logits_at_the_input_size():
    adapter = build("densenet_aug").eval()
    x = adapter.preprocess(torch.rand(2, 1, SIZE, SIZE))
    with torch.no_grad():
        class_logits, coarse = adapter.module.forward_with_gaze(x)
        assert torch.equal(class_logits, adapter.module(x))
        upsampled = adapter.gaze_head(x)
    assert coarse.shape == (2, 1, 2, 2) and upsampled.shape == (2, 1, SIZE, SIZE)
    assert torch.allclose(upsampled, F.interpolate(coarse, size=(SIZE, SIZE), mode="bilinear", align_corners=False))


@pytest.mark.parametrize("model", list(BUILDERS))
def test_cam_layer_is_the_final_relu_whose_output_the_classifier_pools(model):
    adapter = build(model).eval()
    network = adapter.module
    assert any(module is adapter.cam_layer for module in network.modules())
    assert isinstance(adapter.cam_layer, nn.ReLU)
    x = adapter.preprocess(torch.rand(2, 1, SIZE, SIZE))
    seen = {}
    handle = adapter.cam_layer.register_forward_hook(lambda module, args, output: seen.setdefault("out", output))
    with torch.no_grad():
        logits = network(x)
        last_features = F.relu(network.features(x))
    handle.remove()
    assert seen["out"].shape == (2, 1024, 2, 2)
    assert torch.equal(seen["out"], last_features)
    assert torch.allclose(network.classifier(seen["out"].mean(dim=(2, 3))), logits, atol=1e-6)


def test_parameter_names_are_torchvisions_so_its_state_dicts_load():
    ours = densenet.DenseNet121(14).state_dict()
    theirs = densenet121(weights=None, num_classes=14).state_dict()
    assert list(ours) == list(theirs)
    assert all(ours[key].shape == theirs[key].shape for key in ours)


def legacy_key(key: str) -> str:
    """torchvision's published file spells dense-layer parts ``norm.1`` where the modules say ``norm1``."""
    for part in ("norm", "relu", "conv"):
        for index in ("1", "2"):
            key = key.replace(f".{part}{index}.", f".{part}.{index}.")
    return key


def test_imagenet_weights_load_from_a_local_file_and_leave_the_classifier_alone(tmp_path):
    torch.manual_seed(7)
    imagenet = densenet121(weights=None).state_dict()  # 1000-class stand-in for the ImageNet file
    path = tmp_path / densenet.IMAGENET_FILE
    published = {legacy_key(key): value for key, value in imagenet.items() if not key.endswith("num_batches_tracked")}
    torch.save(published, path)
    assert any(".norm.1." in key for key in torch.load(path, weights_only=True))
    adapter = densenet.build_adapter(EGD, input_size=SIZE, imagenet_weights=str(path))
    loaded = adapter.module.state_dict()
    for key, value in imagenet.items():
        if key.startswith("features.") and not key.endswith("num_batches_tracked"):
            assert torch.equal(loaded[key], value), key
    assert loaded["classifier.weight"].shape == (3, 1024)
    assert adapter.config == {"input_size": SIZE, "imagenet_weights": str(path)}


def test_missing_or_foreign_imagenet_weights_are_user_errors(tmp_path):
    message = r"DenseNet-121 ImageNet weights not found: .*nowhere\.pth; download torchvision's densenet121-a639ec97\.pth"
    with pytest.raises(UserError, match=message):
        densenet.build_adapter(EGD, input_size=SIZE, imagenet_weights=str(tmp_path / "nowhere.pth"))
    foreign = tmp_path / "resnet.pth"
    torch.save({"features.conv0.weight": torch.zeros(1)}, foreign)
    with pytest.raises(UserError, match="is not a DenseNet-121 state dict"):
        densenet.build_adapter(EGD, input_size=SIZE, imagenet_weights=str(foreign))


@pytest.mark.parametrize("builder", [densenet.build_adapter, densenet.build_aug_adapter, mimic_guided.build_adapter])
def test_input_size_must_be_a_multiple_of_32(builder):
    with pytest.raises(UserError, match="input_size must be a positive multiple of 32, got 100"):
        builder(EGD, input_size=100)


@pytest.mark.parametrize("model", list(BUILDERS))
def test_checkpoint_round_trip_gives_identical_logits(model, tmp_path):
    adapter = build(model, CHEXPERT).eval()
    config = {"model": {"input_size": SIZE, "imagenet_weights": None}}
    path = save_checkpoint(tmp_path / f"{model}.pt", model, adapter.module.state_dict(), config, CHEXPERT)
    loaded = adapter_from_checkpoint(path, expected_model=model, expected_classes=CHEXPERT)
    assert loaded.name == model and loaded.class_names == CHEXPERT
    images = torch.rand(2, 1, SIZE, SIZE)
    with torch.no_grad():
        assert torch.equal(loaded.logits(images), adapter.logits(images))
        if model == "densenet_aug":
            inputs = adapter.preprocess(images)
            assert torch.equal(loaded.gaze_head(inputs), adapter.gaze_head(inputs))


@pytest.mark.parametrize("model", list(BUILDERS))
def test_registered_specs_build_from_their_recipes(model):
    spec = MODELS.get(model)
    embedded, paper = spec.default_recipe("synth"), spec.default_recipe("mimic")
    assert embedded["name"] == "embedded" and paper["name"] == "paper"
    adapter = spec.build_adapter(class_names=EGD, **embedded["model"])
    assert adapter.name == model and adapter.input_size == embedded["model"]["input_size"]
    assert set(embedded["loss"]) == set(paper["loss"]) == set(LOSS_PARAMS[model])


@pytest.mark.parametrize("model", list(BUILDERS))
def test_paper_recipes_hold_the_chexclusion_numbers(model):
    paper = MODELS.get(model).default_recipe("egd")
    assert paper["model"] == {"input_size": 256, "imagenet_weights": None} and paper["seed"] == 47
    training = paper["training"]
    settings = (training["optimizer"], training["lr"], training["batch_size"], training["epochs"], training["patience"])
    assert settings == ("adam", 0.0005, 48, 65, 10)
    assert training["augment"] == {"hflip": True, "rotate_degrees": 15}
    assert training["lr_schedule"] == {"mode": "plateau", "factor": 0.5, "patience": 3}
    assert paper["departures"]


@pytest.mark.parametrize("model", list(BUILDERS))
def test_embedded_recipes_need_nothing_the_training_loop_lacks(model):
    embedded = MODELS.get(model).default_recipe("synth")
    assert embedded["model"]["input_size"] in (96, 128) and 16 <= embedded["training"]["batch_size"] <= 32
    assert "augment" not in embedded["training"] and "lr_schedule" not in embedded["training"]
    assert isinstance(embedded["training"]["lr"], float) and embedded["departures"]


# --- training losses --------------------------------------------------------------------


@pytest.mark.parametrize(("model", "classes"), [(name, EGD) for name in BUILDERS] + [("densenet121", CHEXPERT)])
def test_loss_is_finite_and_goes_down_on_a_fixed_batch(model, classes):
    adapter = build(model, classes)
    spec = MODELS.get(model)
    batch = tiny_batch(len(classes))
    optimizer = torch.optim.Adam(adapter.module.parameters(), lr=1e-3)
    adapter.module.train()
    losses = []
    for _ in range(8):
        loss = spec.loss(adapter, batch, **LOSS_PARAMS[model])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(value) for value in losses)
    assert losses[-1] < 0.8 * losses[0], losses


def bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Element-wise binary cross-entropy on logits, written out."""
    p = 1 / (1 + torch.exp(-logits.double()))
    return -(target * torch.log(p) + (1 - target) * torch.log(1 - p))


def test_class_loss_leaves_out_uncertain_labels():
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.3]])
    labels = torch.tensor([[1.0, float("nan")], [0.0, 1.0]])
    expected = bce(logits[~labels.isnan()], labels[~labels.isnan()]).mean()
    assert losses.class_loss(logits, labels).item() == pytest.approx(expected.item())


def test_densenet121_loss_is_bce_on_the_logits():
    adapter = build("densenet121", CHEXPERT).eval()
    batch = tiny_batch(len(CHEXPERT))
    with torch.no_grad():
        logits = adapter.logits(batch.images)
        known = ~batch.labels.isnan()
        expected = bce(logits[known], batch.labels[known]).mean()
        assert densenet.SPEC.loss(adapter, batch).item() == pytest.approx(expected.item(), rel=1e-5)


def test_densenet_aug_loss_is_bce_alone_when_no_image_has_gaze():
    adapter = build("densenet_aug").eval()
    batch = tiny_batch(with_gaze=(False, False, False, False))
    with torch.no_grad():
        loss = densenet.aug_batch_loss(adapter, batch, gaze_weight=5.0)
        assert loss.item() == pytest.approx(losses.class_loss(adapter.logits(batch.images), batch.labels).item(), rel=1e-6)


def test_densenet_aug_loss_adds_lambda_times_the_mse_over_images_with_gaze():
    adapter = build("densenet_aug").eval()
    cells = torch.tensor([[0.5, 0.25], [0.25, 0.0]])
    batch = tiny_batch(with_gaze=(True, False, True, False))
    batch.gaze[0] = block_gaze(cells)  # E = [[1, .5], [.5, 0]]
    with torch.no_grad():
        class_logits, gaze_logits = adapter.module.forward_with_gaze(adapter.preprocess(batch.images))
        target0 = torch.tensor([[1.0, 0.5], [0.5, 0.0]])
        target2 = losses.gaze_heatmap_target(batch.gaze[2:3], (2, 2))[0, 0]
        assert target2.max().item() == pytest.approx(1.0) and target2.min().item() >= 0
        errors = [gaze_logits[0, 0].sigmoid() - target0, gaze_logits[2, 0].sigmoid() - target2]
        squared = torch.cat([error.flatten() for error in errors]) ** 2
        expected = losses.class_loss(class_logits, batch.labels) + 0.7 * squared.mean()
        assert densenet.aug_batch_loss(adapter, batch, gaze_weight=0.7).item() == pytest.approx(expected.item(), rel=1e-5)


def test_mimic_guided_explanation_is_grad_cam_of_the_cam_layer():
    """The training explanation is what the benchmark's Grad-CAM shows: ReLU(CAM) / (h w), normalised."""
    adapter = build("mimic_guided").eval()
    x = adapter.preprocess(torch.rand(2, 1, SIZE, SIZE))
    targets = torch.tensor([2, 0])
    with torch.no_grad():
        cams = mimic_guided.class_activation_maps(adapter.module.classifier, adapter.module.feature_map(x))
    explanation = mimic_guided.explanation_distribution(cams)[torch.arange(2), targets]
    unsmoothed = (explanation - mimic_guided.SMOOTHING / 4) / (1 - mimic_guided.SMOOTHING)
    gradcam = LayerGradCam(adapter.module, adapter.cam_layer).attribute(x, target=targets, relu_attributions=True)
    assert torch.allclose(gradcam.flatten(1) * 4, cams[torch.arange(2), targets].flatten(1).clamp_min(0), atol=1e-5)
    total = gradcam.flatten(1).sum(dim=1, keepdim=True)
    expected = torch.where(total > 0, gradcam.flatten(1) / total.clamp_min(1e-30), 0.25)  # an all-zero map: uniform
    assert torch.allclose(unsmoothed, expected, atol=1e-5)
    assert torch.allclose(explanation.sum(dim=1), torch.ones(2))


def test_mimic_guided_explanation_term_is_differentiable_in_the_weights():
    adapter = build("mimic_guided").eval()
    batch = tiny_batch()
    _, kl = mimic_guided.guided_terms(adapter, batch.images, batch.labels, batch.gaze)
    assert kl.item() > 0
    kl.backward()
    network = adapter.module
    deepest_conv = network.features.denseblock4.denselayer16.conv2
    for parameter in (network.classifier.weight, network.features.conv0.weight, deepest_conv.weight):
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0


def test_mimic_guided_kl_is_zero_when_gaze_equals_the_explanation_and_positive_otherwise():
    adapter = build("mimic_guided").eval()
    batch = tiny_batch(with_gaze=(True, True, True, True))
    with torch.no_grad():
        feature_map = adapter.module.feature_map(adapter.preprocess(batch.images))
        cams = mimic_guided.class_activation_maps(adapter.module.classifier, feature_map)
        explanations = mimic_guided.explanation_distribution(cams)  # [4, 3, 4]
        true_class = batch.labels.argmax(dim=1)
        batch.gaze = torch.stack([block_gaze(explanations[k, true_class[k]].view(2, 2)) for k in range(4)])
        _, kl = mimic_guided.guided_terms(adapter, batch.images, batch.labels, batch.gaze)
        assert abs(kl.item()) < 1e-5
        batch.gaze = torch.stack([block_gaze(torch.tensor([[1.0, 0.0], [0.0, 0.0]]))] * 4)
        _, kl = mimic_guided.guided_terms(adapter, batch.images, batch.labels, batch.gaze)
        expected = -torch.log(explanations[torch.arange(4), true_class, 0]).mean()  # KL of a point mass
        assert kl.item() == pytest.approx(expected.item(), rel=1e-5) and kl.item() > 0


def test_mimic_guided_loss_is_bce_alone_without_gaze_or_positive_labels():
    adapter = build("mimic_guided", CHEXPERT).eval()
    batch = tiny_batch(len(CHEXPERT), with_gaze=(False, False, False, False))
    with torch.no_grad():
        bce_only = losses.class_loss(adapter.logits(batch.images), batch.labels).item()
        assert mimic_guided.batch_loss(adapter, batch, kl_weight=3.0).item() == pytest.approx(bce_only, rel=1e-6)
        with_gaze = tiny_batch(len(CHEXPERT), with_gaze=(True, True, True, True))
        with_gaze.labels = torch.where(with_gaze.labels == 1, torch.zeros(()), with_gaze.labels)  # no positive label
        bce_only = losses.class_loss(adapter.logits(with_gaze.images), with_gaze.labels).item()
        assert mimic_guided.batch_loss(adapter, with_gaze, kl_weight=3.0).item() == pytest.approx(bce_only, rel=1e-6)


def test_mimic_guided_explanation_is_relu_normalised_and_smoothed():
    cams = torch.tensor([[[[3.0, 1.0], [-2.0, 0.0]], [[-1.0, -1.0], [-5.0, -0.5]]]])  # [1, 2 classes, 2, 2]
    explanations = mimic_guided.explanation_distribution(cams, smoothing=0.1)
    assert torch.allclose(explanations[0, 0], torch.tensor([0.9 * 0.75 + 0.025, 0.9 * 0.25 + 0.025, 0.025, 0.025]))
    assert torch.allclose(explanations[0, 1], torch.full((4,), 0.25))  # nothing positive: uniform
    unsmoothed = mimic_guided.explanation_distribution(cams, smoothing=0.0)
    assert torch.allclose(unsmoothed[0, 0], torch.tensor([0.75, 0.25, 0.0, 0.0]))


def test_mimic_guided_kl_averages_over_positive_labels_of_images_with_gaze():
    gaze = torch.tensor([[0.5, 0.5], [1.0, 0.0]])
    explanations = torch.tensor([[[0.5, 0.5], [0.9, 0.1]], [[0.2, 0.8], [0.6, 0.4]]])
    pairs = torch.tensor([[False, True], [True, True]])
    kl = lambda g, e: sum(gi * math.log(gi / ei) for gi, ei in zip(g, e) if gi > 0)  # noqa: E731
    expected = (kl([0.5, 0.5], [0.9, 0.1]) + kl([1.0, 0.0], [0.2, 0.8]) + kl([1.0, 0.0], [0.6, 0.4])) / 3
    assert mimic_guided.kl_gaze_explanation(gaze, explanations, pairs).item() == pytest.approx(expected, rel=1e-6)


# --- DeepLift ---------------------------------------------------------------------------


@pytest.mark.parametrize("model", list(BUILDERS))
def test_deeplift_finds_a_rule_for_every_nonlinearity(model):
    adapter = build(model)
    assert deeplift_warnings(adapter.module, model) == []


def test_deeplift_warns_about_torchvisions_own_densenet():
    lines = deeplift_warnings(densenet121(weights=None), "stock")
    assert any("functional F.relu" in line for line in lines)


def deeplift_gap(adapter) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of DeepLift attributions, f(x) - f(black baseline)) of the target logits, gazebench's method."""
    adapter.eval()
    inputs = adapter.preprocess(torch.rand(3, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(11)))
    targets = torch.tensor([0, 2, 1])
    attributions = DeepLiftMethod().attribute(adapter, inputs, targets, [0, 0, 0]).detach()
    baseline = make_baseline(adapter, inputs, "black").expand_as(inputs)
    with torch.no_grad():
        rows = torch.arange(3)
        difference = adapter.module(inputs)[rows, targets] - adapter.module(baseline)[rows, targets]
    return attributions.flatten(1).sum(dim=1), difference


def assert_complete(total: torch.Tensor, difference: torch.Tensor) -> None:
    assert torch.allclose(total, difference, rtol=1e-3, atol=1e-3 * difference.abs().max().item())


@pytest.mark.parametrize("model", ["densenet121", "densenet_aug"])
def test_deeplift_attributions_sum_to_the_logit_difference(model):
    total, difference = deeplift_gap(build(model, seed=5))
    assert difference.abs().min() > 1e-3  # a real difference to explain
    assert_complete(total, difference)


def test_without_the_tensor_separator_deeplift_is_still_complete_at_the_stem():
    """relu0 feeding pool0 directly (Captum's hooks would share a tensor): the method gives every
    module with a rule its own input (captum_compat.own_inputs), so no per-model separator is needed."""
    adapter = build("densenet121", seed=5)
    stem = adapter.module.features.named_children()
    adapter.module.features = nn.Sequential(OrderedDict((name, module) for name, module in stem if name != "separator0"))
    total, difference = deeplift_gap(adapter)
    assert_complete(total, difference)


def test_captums_own_maxpool_rule_is_restored_after_the_call():
    before = deep_lift.SUPPORTED_NON_LINEAR[nn.MaxPool2d]
    deeplift_gap(build("densenet121", seed=5))
    assert deep_lift.SUPPORTED_NON_LINEAR[nn.MaxPool2d] is before


def test_captums_own_maxpool_rule_would_not_be_complete(monkeypatch):
    """Why gazebench replaces it: with Captum's rule the DenseNet's attributions miss the difference."""
    monkeypatch.setattr(deeplift_module, "corrected_maxpool2d", deep_lift.SUPPORTED_NON_LINEAR[nn.MaxPool2d])
    total, difference = deeplift_gap(build("densenet121", seed=5))
    assert not torch.allclose(total, difference, rtol=1e-3, atol=1e-3 * difference.abs().max().item())
