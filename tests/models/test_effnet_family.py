"""effnet_baseline, heatmap_generator and temporal_gaze: networks, losses, checkpoints, recipes."""

import functools
import math

import pytest
import torch

from gazebench.data.sample import Sample, collate, one_hot
from gazebench.errors import UserError
from gazebench.models import effnet_baseline, heatmap_generator, losses, temporal_gaze, unet_gaze
from gazebench.models.checkpoint import adapter_from_checkpoint, save_checkpoint
from gazebench.registry import METHODS, MODELS

CLASSES = ["Normal", "CHF", "pneumonia"]
GRID = 48
FIXATION_COUNTS = (6, 0, 11, 3)  # the second image has no gaze

# (module, build_adapter keyword arguments, loss keyword arguments): tiny inputs, no dropout
CASES = {
    "effnet_baseline": (effnet_baseline, {"input_size": 32}, {}),
    "heatmap_generator set1": (heatmap_generator, {"input_size": 32, "dropout": 0.0}, {"gamma": 0.4}),
    "heatmap_generator set2": (heatmap_generator, {"input_size": 32, "dropout": 0.0, "heatmap_phases": 3}, {"gamma": 0.4}),
    "heatmap_generator set3": (heatmap_generator, {"input_size": 32, "dropout": 0.0, "attention": True}, {"gamma": 0.4}),
    "temporal_gaze": (temporal_gaze, {"input_size": 32, "frame_size": 16, "max_frames": 8, "dropout": 0.0}, {}),
}


def make_samples(counts=FIXATION_COUNTS, seed: int = 0) -> list[Sample]:
    """Noise images, one-hot labels, fixations [N, 3] on the grid and the matching (normalised) densities."""
    generator = torch.Generator().manual_seed(seed)
    samples = []
    for k, count in enumerate(counts):
        fixations = torch.cat([torch.rand(count, 2, generator=generator) * GRID, 0.1 + torch.rand(count, 1, generator=generator)], dim=1)
        gaze = torch.zeros(GRID, GRID)
        if count:
            gaze[fixations[:, 1].long(), fixations[:, 0].long()] += 1
            gaze = gaze / gaze.sum()
        image = torch.rand(1, GRID, GRID, generator=generator)
        samples.append(Sample(f"i{k}", f"p{k}", image, one_hot(k % 3, 3), gaze, fixations))
    return samples


def build(case: str, seed: int = 0):
    module, model_kwargs, loss_kwargs = CASES[case]
    torch.manual_seed(seed)
    return module, module.build_adapter(CLASSES, **model_kwargs), loss_kwargs


def logits_of(adapter, batch) -> torch.Tensor:
    with torch.no_grad():
        return adapter.logits(batch.images, *adapter.inputs_from(batch))


# --- every model -----------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_builds_with_random_weights_and_gives_class_logits(case):
    module, adapter, _ = build(case)
    batch = collate(make_samples())
    logits = logits_of(adapter.eval(), batch)
    assert logits.shape == (4, 3) and bool(logits.isfinite().all())
    assert MODELS.get(module.NAME) is module.SPEC
    assert any(layer is adapter.cam_layer for layer in adapter.module.modules())
    assert adapter.name == module.NAME and adapter.class_names == CLASSES


# heatmap_generator set1's loss path (the density target) is set3's without the attention
TRAINED_CASES = ("effnet_baseline", "heatmap_generator set2", "heatmap_generator set3", "temporal_gaze")


@functools.lru_cache(maxsize=None)
def prepared(case: str):
    """(module, adapter, losses): the trained cases after 8 Adam steps on one fixed batch (losses per
    step); the others after one training-mode forward pass, so BatchNorm statistics have moved."""
    module, adapter, loss_kwargs = build(case)
    batch = collate(make_samples())
    adapter.module.train()
    if case not in TRAINED_CASES:
        with torch.no_grad():
            adapter.module(adapter.preprocess(batch.images), *adapter.inputs_from(batch))
        return module, adapter, []
    optimizer = torch.optim.Adam(adapter.module.parameters(), lr=1e-3)
    losses = []
    for _ in range(8):
        loss = module.SPEC.loss(adapter, batch, **loss_kwargs)
        optimizer.zero_grad()
        loss.backward()
        grads_finite = all(bool(p.grad.isfinite().all()) for p in adapter.module.parameters() if p.grad is not None)
        optimizer.step()
        losses.append((loss.item(), grads_finite))
    return module, adapter, losses


@pytest.mark.parametrize("case", TRAINED_CASES)
def test_loss_is_finite_and_goes_down_on_a_fixed_batch(case):
    _, _, record = prepared(case)
    losses = [loss for loss, _ in record]
    assert all(math.isfinite(loss) and grads_finite for loss, grads_finite in record), record
    assert losses[-1] < 0.9 * losses[0], losses


@pytest.mark.parametrize("case", CASES)
def test_checkpoint_round_trip_gives_identical_logits(case, tmp_path):
    module, adapter, _ = prepared(case)
    batch = collate(make_samples())
    adapter.eval()
    path = save_checkpoint(tmp_path / "model.pt", module.NAME, adapter.module.state_dict(), {"model": adapter.config}, CLASSES)
    loaded = adapter_from_checkpoint(path, expected_model=module.NAME, expected_classes=CLASSES)
    assert loaded.config == adapter.config
    assert torch.equal(logits_of(loaded, batch), logits_of(adapter, batch))


@pytest.mark.parametrize("module", [effnet_baseline, heatmap_generator, temporal_gaze])
def test_recipes_are_complete_and_default_to_embedded_on_synth(module):
    embedded = module.load_recipe("embedded")
    assert module.default_recipe("synth") == embedded
    real = module.default_recipe("egd")
    assert real["name"] != "embedded"
    for recipe in (embedded, real):
        assert set(recipe) >= {"description", "model", "loss", "training", "departures"}
        assert isinstance(recipe["training"]["lr"], float) and isinstance(recipe["training"]["lr_schedule"]["base_lr"], float)
        assert recipe["departures"]
        adapter = module.SPEC.build_adapter(class_names=CLASSES, **recipe["model"])  # every model key is a build argument
        assert adapter.config == recipe["model"]
    assert set(embedded["model"]) == set(real["model"]) and set(embedded["loss"]) == set(real["loss"])
    with pytest.raises(UserError, match=f"unknown {module.NAME} recipe 'fast'"):
        module.load_recipe("fast")


# --- effnet_baseline -------------------------------------------------------------------------


def test_effnet_baseline_is_unet_gaze_without_the_decoder():
    torch.manual_seed(1)
    unet = unet_gaze.UNetGaze(n_classes=3, dropout=0.0).eval()
    baseline = effnet_baseline.EffNetBaseline(n_classes=3, dropout=0.0).eval()
    shared = {
        name.removeprefix("unet."): tensor
        for name, tensor in unet.state_dict().items()
        if name.startswith(("unet.encoder.", "unet.classification_head."))
    }
    assert {k: v.shape for k, v in baseline.state_dict().items()} == {k: v.shape for k, v in shared.items()}
    baseline.load_state_dict(shared)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(baseline(x), unet(x))
    assert not any("decoder" in name or "segmentation" in name for name in baseline.state_dict())


def test_effnet_baseline_cam_layer_is_the_map_the_head_pools():
    adapter = effnet_baseline.build_adapter(CLASSES, input_size=32).eval()
    seen = {}
    handle = adapter.cam_layer.register_forward_hook(lambda module, args, output: seen.setdefault("out", output))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        adapter.module(x)
        deepest = adapter.module.encoder(x)[-1]
    handle.remove()
    assert seen["out"].shape == (2, 320, 1, 1) and torch.equal(seen["out"], deepest)


def test_effnet_baseline_paper_recipe_holds_the_published_numbers():
    recipe = effnet_baseline.load_recipe("paper")
    assert recipe["model"] == {"input_size": 224, "dropout": 0.0} and recipe["loss"] == {}
    training = recipe["training"]
    assert (training["epochs"], training["batch_size"], training["lr"], training["grad_clip_value"]) == (20, 32, 0.006486, 0.1)
    assert training["optimizer"] == "adam" and training["lr_schedule"]["mode"] == "triangular2"
    assert training["lr_schedule"]["base_lr"] == pytest.approx(0.006486**2, rel=1e-4)


def test_effnet_baseline_rejects_input_sizes_the_encoder_cannot_halve_five_times():
    with pytest.raises(UserError, match="multiple of 32, got 100"):
        effnet_baseline.build_adapter(CLASSES, input_size=100)


# --- heatmap_generator -----------------------------------------------------------------------


def test_heatmap_generator_sets_are_the_documented_configurations():
    configs = {name: heatmap_generator.load_recipe(name)["model"] for name in ("set1", "set2", "set3")}
    assert (configs["set1"]["heatmap_phases"], configs["set1"]["attention"]) == (1, False)
    assert (configs["set2"]["heatmap_phases"], configs["set2"]["attention"]) == (3, False)
    assert (configs["set3"]["heatmap_phases"], configs["set3"]["attention"]) == (1, True)
    for name in ("set1", "set2", "set3", "embedded"):
        assert heatmap_generator.load_recipe(name)["unverified"], name
    assert heatmap_generator.default_recipe("egd")["name"] == "set1"


@pytest.mark.parametrize("attention", [False, True])
def test_class_logits_depend_on_the_generator_only_with_attention(attention):
    torch.manual_seed(2)
    adapter = heatmap_generator.build_adapter(CLASSES, input_size=32, dropout=0.0, attention=attention).eval()
    x = adapter.preprocess(torch.rand(2, 1, GRID, GRID))
    with torch.no_grad():
        before = adapter.module(x)
        class_logits, heatmap_logits = adapter.module.forward_with_heatmaps(x)
        adapter.module.unet.segmentation_head[0].bias += 3.0  # a different generator, same encoder and head
        after = adapter.module(x)
    assert torch.equal(class_logits, before)
    assert heatmap_logits.shape == (2, 1, 32, 32)
    assert torch.equal(after, before) is (not attention)


def test_phase_heatmaps_split_the_reading_in_order_and_peak_at_one():
    fixations = [torch.tensor([[4.5, 4.5, 0.2], [5.5, 4.5, 0.2], [20.5, 20.5, 0.3], [21.5, 20.5, 0.1], [40.5, 8.5, 0.2], [41.5, 8.5, 0.2]]), torch.zeros(0, 3)]
    maps = heatmap_generator.phase_heatmaps(fixations, grid=GRID, size=GRID, phases=3, sigma=0.02, device="cpu")
    assert maps.shape == (2, 3, GRID, GRID)
    peaks = maps[0].flatten(1).argmax(dim=1)
    rows, cols = (peaks // GRID).tolist(), (peaks % GRID).tolist()
    assert rows == [4, 20, 8] and [c in pair for c, pair in zip(cols, ([4, 5], [20, 21], [40, 41]))] == [True] * 3
    assert torch.allclose(maps[0].amax(dim=(1, 2)), torch.ones(3))
    assert torch.count_nonzero(maps[1]) == 0


def test_set2_loss_leaves_out_phases_without_fixations():
    torch.manual_seed(3)
    adapter = heatmap_generator.build_adapter(CLASSES, input_size=32, dropout=0.0, heatmap_phases=3).eval()
    batch = collate(make_samples(counts=(2, 0)))  # two fixations: the third phase of image 0 is empty
    targets = heatmap_generator.heatmap_targets(adapter, batch)
    assert targets.shape == (2, 3, 32, 32)
    assert targets.amax(dim=(2, 3)).tolist() == [[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]
    with torch.no_grad():
        class_logits, heatmap_logits = adapter.module.forward_with_heatmaps(adapter.preprocess(batch.images))
        expected = 0.3 * losses.class_loss(class_logits, batch.labels) + 0.7 * torch.nn.functional.binary_cross_entropy_with_logits(
            heatmap_logits[0, :2], targets[0, :2]
        )
        assert heatmap_generator.batch_loss(adapter, batch, gamma=0.3).item() == pytest.approx(expected.item(), rel=1e-5)


def test_heatmap_generator_gaze_head_gives_one_map_per_image():
    adapter = heatmap_generator.build_adapter(CLASSES, input_size=32, heatmap_phases=3).eval()
    x = adapter.preprocess(torch.rand(2, 1, GRID, GRID))
    with torch.no_grad():
        assert torch.equal(adapter.gaze_head(x), adapter.module.forward_with_heatmaps(x)[1].amax(dim=1, keepdim=True))


# --- temporal_gaze ---------------------------------------------------------------------------


def test_frames_keep_the_longest_fixations_in_reading_order():
    fixations = [torch.tensor([[4.5, 10.5, 0.1], [20.5, 30.5, 0.5], [40.5, 2.5, 0.2], [30.5, 44.5, 0.4]]), torch.zeros(0, 3)]
    frames, mask = temporal_gaze.fixation_frames(fixations, grid=GRID, device="cpu", frame_size=GRID, frame_sigma=0.02, max_frames=2)
    assert frames.shape == (2, 2, 1, GRID, GRID) and mask.tolist() == [[True, True], [False, False]]
    peaks = frames[0, :, 0].flatten(1).argmax(dim=1)
    assert [(p // GRID, p % GRID) for p in peaks.tolist()] == [(30, 20), (44, 30)]  # fixations 1 and 3, in that order
    assert frames[0].amax().item() == pytest.approx(1.0)
    assert torch.count_nonzero(frames[1]) == 0


def test_frames_from_batch_pads_to_the_longest_reading():
    adapter = temporal_gaze.build_adapter(CLASSES, input_size=32, frame_size=16, max_frames=None)
    frames, mask = adapter.inputs_from(collate(make_samples()))
    assert frames.shape == (4, 11, 1, 16, 16)
    assert mask.sum(dim=1).tolist() == list(FIXATION_COUNTS)
    assert mask.dtype == torch.bool


def temporal_setup(seed: int = 4):
    torch.manual_seed(seed)
    adapter = temporal_gaze.build_adapter(CLASSES, input_size=32, frame_size=16, max_frames=None).eval()
    batch = collate(make_samples())
    return adapter, batch, adapter.preprocess(batch.images), *adapter.inputs_from(batch)


def test_padding_anywhere_with_any_content_does_not_change_the_output():
    adapter, batch, x, frames, mask = temporal_setup()
    with torch.no_grad():
        expected = adapter.module(x, frames, mask)
        # twice as many steps; each row's real frames scattered (in order) among garbage-filled padding
        steps = 2 * frames.shape[1]
        generator = torch.Generator().manual_seed(5)
        moved = torch.rand(len(x), steps, *frames.shape[2:], generator=generator) * 5
        moved_mask = torch.zeros(len(x), steps, dtype=torch.bool)
        for row in range(len(x)):
            count = int(mask[row].sum())
            slots = torch.randperm(steps, generator=generator)[:count].sort().values
            moved[row, slots] = frames[row, :count]
            moved_mask[row, slots] = True
        assert torch.allclose(adapter.module(x, moved, moved_mask), expected, atol=1e-5)


def test_each_row_is_independent_of_its_batch_neighbours():
    adapter, batch, x, frames, mask = temporal_setup()
    with torch.no_grad():
        together = adapter.module(x, frames, mask)
        order = torch.tensor([2, 0, 3, 1])
        assert torch.allclose(adapter.module(x[order], frames[order], mask[order]), together[order], atol=1e-5)
        alone = adapter.logits(batch.images[3:4], *adapter.inputs_from(batch.select([3])))
    assert torch.allclose(alone, together[3:4], atol=1e-5)


def test_an_image_without_fixations_gives_finite_logits_and_gradients():
    adapter, batch, x, frames, mask = temporal_setup()
    assert not bool(mask[1].any())
    with torch.no_grad():
        assert bool(adapter.module(x[1:2], frames[1:2], mask[1:2]).isfinite().all())
    adapter.module.train()
    loss = temporal_gaze.SPEC.loss(adapter, batch.select([1, 1, 3]))  # two rows without gaze
    loss.backward()
    assert bool(loss.isfinite()) and all(bool(p.grad.isfinite().all()) for p in adapter.module.parameters() if p.grad is not None)


def test_attention_over_no_real_step_is_exactly_zero():
    values = torch.randn(2, 5, 4, requires_grad=True)
    query = torch.randn(2, 4, requires_grad=True)
    mask = torch.tensor([[False] * 5, [True, True, False, False, False]])
    context = temporal_gaze.masked_attention(query, values, mask, scale=0.5)
    assert torch.equal(context[0], torch.zeros(4))
    weights = torch.softmax((values[1, :2] @ query[1]) * 0.5, dim=0)
    assert torch.allclose(context[1], weights @ values[1, :2])
    context.sum().backward()
    assert bool(values.grad.isfinite().all()) and bool(query.grad.isfinite().all())


def test_gradcam_explains_the_image_branch_through_the_adapter():
    adapter, batch, x, frames, mask = temporal_setup()
    assert any(layer is adapter.cam_layer for layer in adapter.module.image_branch.modules())
    gradcam = METHODS.get("gradcam")()
    targets = torch.tensor([0, 1, 2, 0])
    maps = gradcam(adapter, batch.images, targets, [0, 1, 2, 3], GRID, adapter.inputs_from(batch))
    assert maps.shape == (4, GRID, GRID) and bool(maps.isfinite().all()) and bool((maps >= 0).all())
    raw = gradcam.attribute(adapter, x, targets, [0, 1, 2, 3], (frames, mask))
    assert raw.shape == (4, 1, 8, 8)  # the image branch's stride-4 map at input 32


def test_deeplift_runs_with_the_frames_held_fixed():
    adapter, batch, _, _, _ = temporal_setup()
    deeplift = METHODS.get("deeplift")()
    maps = deeplift(adapter, batch.images, torch.tensor([0, 1, 2, 0]), [0, 1, 2, 3], GRID, adapter.inputs_from(batch))
    assert maps.shape == (4, GRID, GRID) and bool(maps.isfinite().all())


def test_temporal_paper_recipe_holds_the_published_numbers():
    recipe = temporal_gaze.load_recipe("paper")
    model, training = recipe["model"], recipe["training"]
    assert (model["embed_dim"], model["dense_hidden"], model["lstm_hidden"], model["dropout"]) == (64, 128, 128, 0.5)
    assert (training["epochs"], training["batch_size"], training["lr"]) == (20, 16, 0.001)
    assert training["optimizer"] == "adam" and model["max_frames"] is None


def test_temporal_gaze_rejects_an_odd_lstm_size():
    with pytest.raises(UserError, match="lstm_hidden must be even"):
        temporal_gaze.build_adapter(CLASSES, input_size=32, lstm_hidden=127)
