"""unet_gaze: the network's two outputs, the adapter, the paper's loss and the recipes."""

import pytest
import torch

from gazebench.data.sample import Batch, Sample, collate, one_hot
from gazebench.errors import UserError
from gazebench.models import losses, unet_gaze
from gazebench.models.base import IMAGENET_MEAN, IMAGENET_STD
from gazebench.registry import MODELS

CLASSES = ["Normal", "CHF", "pneumonia"]


@pytest.fixture(scope="module")
def network() -> unet_gaze.UNetGaze:
    torch.manual_seed(0)
    return unet_gaze.UNetGaze(n_classes=3, dropout=0.5).eval()


def test_forward_gives_class_logits_and_forward_with_gaze_adds_the_gaze_map(network):
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        class_logits = network(x)
        both_classes, gaze_logits = network.forward_with_gaze(x)
    assert class_logits.shape == (2, 3)
    assert gaze_logits.shape == (2, 1, 64, 64)
    assert torch.equal(class_logits, both_classes)


def test_cam_layer_is_the_deepest_feature_map_the_head_pools(network):
    x = torch.randn(2, 3, 64, 64)
    seen = {}
    handle = network.cam_layer.register_forward_hook(lambda module, args, output: seen.setdefault("out", output))
    with torch.no_grad():
        network(x)
        deepest = network.unet.encoder(x)[-1]
    handle.remove()
    assert seen["out"].shape == (2, 320, 2, 2)
    assert torch.equal(seen["out"], deepest)


def test_adapter_preprocess_resizes_to_the_input_and_normalises_with_imagenet_statistics():
    adapter = unet_gaze.build_adapter(CLASSES, input_size=32)
    images = torch.full((2, 1, 48, 48), 0.25)
    inputs = adapter.preprocess(images)
    assert inputs.shape == (2, 3, 32, 32)
    expected = [(0.25 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]
    assert torch.allclose(inputs[0, :, 5, 7], torch.tensor(expected), atol=1e-6)


def test_adapter_parts_agree_with_the_network():
    torch.manual_seed(1)
    adapter = unet_gaze.build_adapter(CLASSES, input_size=32).eval()
    x = adapter.preprocess(torch.rand(2, 1, 32, 32))
    with torch.no_grad():
        class_logits, gaze_logits = adapter.module.forward_with_gaze(x)
        assert torch.equal(adapter.gaze_head(x), gaze_logits)
        assert torch.equal(adapter.module(x), class_logits)
    assert adapter.cam_layer is adapter.module.unet.encoder.model.blocks[-1]
    assert adapter.class_names == CLASSES
    assert adapter.config == {"input_size": 32, "dropout": 0.5}


def test_state_dict_rebuilds_the_same_model():
    torch.manual_seed(2)
    first = unet_gaze.build_adapter(CLASSES, input_size=32, dropout=0.0).eval()
    second = unet_gaze.build_adapter(CLASSES, input_size=32, dropout=0.0, state_dict=first.module.state_dict()).eval()
    images = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(first.logits(images), second.logits(images))


def test_input_size_must_be_a_multiple_of_32():
    with pytest.raises(UserError, match="multiple of 32, got 100"):
        unet_gaze.build_adapter(CLASSES, input_size=100)


def test_registered_spec_builds_adapters_generically():
    spec = MODELS.get("unet_gaze")
    assert spec is unet_gaze.SPEC and spec.name == "unet_gaze"
    adapter = spec.build_adapter(class_names=CLASSES, **spec.default_recipe("synth")["model"])
    assert adapter.name == "unet_gaze" and adapter.gaze_head is not None


def bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Element-wise binary cross-entropy on logits, written out."""
    p = 1 / (1 + torch.exp(-logits.double()))
    return -(target * torch.log(p) + (1 - target) * torch.log(1 - p))


def test_loss_matches_the_formula_and_skips_images_without_gaze():
    class_logits = torch.tensor([[2.0, -1.0, 0.5], [-0.3, 0.8, -2.0], [0.1, 0.2, 0.3]])
    labels = torch.tensor([0, 1, 2])
    gaze_logits = torch.tensor([[[[0.5, -0.5], [1.0, 0.0]]], [[[3.0, 3.0], [3.0, 3.0]]], [[[-1.0, 2.0], [0.0, 0.3]]]])
    targets = torch.tensor([[[[1.0, 0.2], [0.0, 0.5]]], [[[0.0, 0.0], [0.0, 0.0]]], [[[0.3, 1.0], [0.1, 0.0]]]])
    gamma = 0.41731
    onehot = torch.eye(3)[labels]
    class_term = bce(class_logits, onehot).mean()
    gaze_term = torch.cat([bce(gaze_logits[0], targets[0]).flatten(), bce(gaze_logits[2], targets[2]).flatten()]).mean()
    expected = gamma * class_term + (1 - gamma) * gaze_term
    loss = losses.gaze_classification_loss(class_logits, gaze_logits, onehot, targets, gamma)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_class_loss_leaves_out_uncertain_labels():
    class_logits = torch.tensor([[2.0, -1.0], [0.5, 0.3]])
    labels = torch.tensor([[1.0, float("nan")], [0.0, 1.0]])
    known = torch.tensor([[True, False], [True, True]])
    expected = bce(class_logits[known], labels[known]).mean()
    assert losses.class_loss(class_logits, labels).item() == pytest.approx(expected.item())


def test_gamma_one_ignores_the_gaze_term():
    class_logits, labels = torch.randn(4, 3), torch.eye(3)[[0, 1, 2, 0]]
    targets = torch.rand(4, 1, 8, 8)
    low = losses.gaze_classification_loss(class_logits, torch.full((4, 1, 8, 8), -5.0), labels, targets, 1.0)
    high = losses.gaze_classification_loss(class_logits, torch.full((4, 1, 8, 8), 5.0), labels, targets, 1.0)
    assert low.item() == high.item() == pytest.approx(losses.class_loss(class_logits, labels).item())
    mixed = losses.gaze_classification_loss(class_logits, torch.full((4, 1, 8, 8), 5.0), labels, targets, 0.5)
    assert mixed.item() != pytest.approx(0.5 * low.item())


def test_without_any_gaze_only_the_class_term_remains():
    class_logits, labels = torch.randn(2, 3), torch.eye(3)[[1, 2]]
    loss = losses.gaze_classification_loss(class_logits, torch.randn(2, 1, 4, 4), labels, torch.zeros(2, 1, 4, 4), 0.4)
    assert loss.item() == pytest.approx(0.4 * losses.class_loss(class_logits, labels).item())


def test_gaze_target_is_resized_and_peaks_at_one():
    density = torch.rand(3, 48, 48)
    density[1] = 0  # an image without gaze
    density = density / density.sum(dim=(1, 2), keepdim=True).clamp_min(1e-12)
    target = losses.gaze_target(density, 32)
    assert target.shape == (3, 1, 32, 32)
    assert target[0].max().item() == pytest.approx(1.0) and target[2].max().item() == pytest.approx(1.0)
    assert target.min().item() >= 0
    assert torch.count_nonzero(target[1]) == 0


def tiny_batch(grid: int = 32) -> Batch:
    torch.manual_seed(3)
    gaze = torch.rand(3, grid, grid)
    gaze[2] = 0
    gaze = gaze / gaze.sum(dim=(1, 2), keepdim=True).clamp_min(1e-12)
    samples = [
        Sample(f"i{k}", f"p{k}", torch.rand(1, grid, grid), one_hot(k % 3, 3), gaze[k], torch.zeros(0, 3)) for k in range(3)
    ]
    return collate(samples)


def test_batch_loss_runs_the_decoder_against_the_rescaled_density():
    torch.manual_seed(4)
    adapter = unet_gaze.build_adapter(CLASSES, input_size=32).eval()
    batch = tiny_batch()
    with torch.no_grad():
        class_logits, gaze_logits = adapter.module.forward_with_gaze(adapter.preprocess(batch.images))
        expected = losses.gaze_classification_loss(
            class_logits, gaze_logits, batch.labels, losses.gaze_target(batch.gaze, 32), 0.3
        )
        assert unet_gaze.batch_loss(adapter, batch, gamma=0.3).item() == pytest.approx(expected.item())
        baseline = unet_gaze.batch_loss(adapter, batch, gamma=1.0)
        assert baseline.item() == pytest.approx(losses.class_loss(class_logits, batch.labels).item())


def test_paper_recipe_holds_the_published_numbers():
    recipe = unet_gaze.load_recipe("paper")
    assert recipe["name"] == "paper"
    assert recipe["model"] == {"input_size": 224, "dropout": 0.5}
    assert recipe["loss"] == {"gamma": 0.41731}
    training = recipe["training"]
    assert (training["epochs"], training["batch_size"], training["lr"], training["grad_clip_value"]) == (35, 32, 0.0090552, 0.1)
    assert training["optimizer"] == "adam" and training["lr_schedule"]["mode"] == "triangular2"
    assert training["selection"] == "dev_mean_auroc"


def test_embedded_recipe_is_complete_and_explains_its_departures():
    embedded, paper = unet_gaze.load_recipe("embedded"), unet_gaze.load_recipe("paper")
    assert unet_gaze.default_recipe("synth") == embedded and unet_gaze.default_recipe("egd") == paper
    assert set(embedded) == set(paper)
    assert embedded["model"]["input_size"] % 32 == 0
    for section in ("model", "loss", "training"):
        assert set(embedded[section]) == set(paper[section])
    for recipe in (embedded, paper):
        assert isinstance(recipe["training"]["lr"], float) and isinstance(recipe["training"]["lr_schedule"]["base_lr"], float)
        assert recipe["departures"]


def test_load_recipe_returns_a_fresh_copy_and_rejects_unknown_names():
    unet_gaze.load_recipe("embedded")["training"]["epochs"] = 999
    assert unet_gaze.load_recipe("embedded")["training"]["epochs"] != 999
    with pytest.raises(UserError, match="unknown unet_gaze recipe 'fast'; choose one of: embedded, paper"):
        unet_gaze.load_recipe("fast")


def test_class_logits_feed_a_gradient_to_the_input():
    """Methods differentiate class logits with respect to the input: the graph must reach it."""
    torch.manual_seed(5)
    adapter = unet_gaze.build_adapter(CLASSES, input_size=32).eval()
    x = adapter.preprocess(torch.rand(1, 1, 32, 32)).requires_grad_(True)
    adapter.module(x)[0, 1].backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
