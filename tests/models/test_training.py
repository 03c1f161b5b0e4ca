"""The training loop, dev-set AUROC and checkpoints (tiny images, a few steps)."""

import errno
import hashlib
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from gazebench.bootstrap import BOOTSTRAP
from gazebench.data.sample import Sample, one_hot
from gazebench.errors import UserError
from gazebench.metrics.ops import average_ranks
from gazebench.models import unet_gaze
from gazebench.models.checkpoint import FORMAT, adapter_from_checkpoint, load_checkpoint, save_checkpoint, sha256_file
from gazebench.models.training import jobs, loop
from gazebench.models.training.loop import auroc_ovr, evaluate_auroc, predict, train

CLASSES = ["Normal", "CHF", "pneumonia"]
GRID = 40


def brightness_samples(n: int, seed: int, prefix: str) -> list[Sample]:
    """Noise images whose class sets their brightness; gaze on a class-dependent spot."""
    generator = torch.Generator().manual_seed(seed)
    samples = []
    for k in range(n):
        label = k % 3
        image = (0.2 + 0.3 * label + 0.1 * torch.rand(1, GRID, GRID, generator=generator)).clamp(0, 1)
        gaze = torch.zeros(GRID, GRID)
        gaze[8 + 10 * label : 16 + 10 * label, 10:30] = 1
        samples.append(Sample(f"{prefix}{k}", f"p{prefix}{k}", image, one_hot(label, 3), gaze / gaze.sum(), torch.zeros(0, 3)))
    return samples


def tiny_recipe(epochs: int = 2, patience=None) -> dict:
    recipe = unet_gaze.load_recipe("embedded")
    recipe["model"]["input_size"] = 32
    recipe["training"].update(epochs=epochs, batch_size=6, lr=0.003, patience=patience)
    recipe["training"]["lr_schedule"] = {"mode": "triangular2", "base_lr": 0.0003, "step_size_up_epochs": 1}
    return recipe


TRAIN = brightness_samples(12, seed=0, prefix="t")
DEV = brightness_samples(6, seed=1, prefix="d")


def run_training(tmp_path, name: str, seed: int = 0, **recipe_options) -> loop.TrainResult:
    return train(unet_gaze.SPEC, CLASSES, TRAIN, DEV, tiny_recipe(**recipe_options), seed, tmp_path / name, progress=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> loop.TrainResult:
    return run_training(tmp_path_factory.mktemp("train"), "model.pt", epochs=3)


# --- the training loop ---------------------------------------------------------------------


def test_training_loss_goes_down(trained):
    losses = [record["train_loss"] for record in trained.history]
    assert len(losses) == 3
    assert losses[-1] < losses[0]


def test_history_records_each_epoch_on_dev(trained):
    record = trained.history[0]
    assert record["epoch"] == 1 and set(record["dev_auroc"]) == set(CLASSES)
    assert 0 <= record["dev_mean_auroc"] <= 1 and record["lr"] > 0 and record["seconds"] > 0


def test_checkpoint_loads_weights_only_and_reproduces_the_logits(trained):
    raw = torch.load(trained.checkpoint, map_location="cpu", weights_only=True)
    assert raw["format"] == FORMAT and raw["model"] == "unet_gaze" and raw["class_names"] == CLASSES
    assert raw["config"]["model"] == {"input_size": 32, "dropout": 0.5}
    assert raw["config"]["training"]["best_epoch"] == trained.best_epoch
    loaded = adapter_from_checkpoint(trained.checkpoint, expected_model="unet_gaze", expected_classes=CLASSES)
    images = torch.stack([s.image for s in DEV])
    with torch.no_grad():
        assert torch.equal(loaded.logits(images), trained.adapter.logits(images))


def test_saved_epoch_is_the_best_on_dev(trained):
    scores = [record["dev_mean_auroc"] for record in trained.history]
    assert trained.best_epoch == scores.index(max(scores)) + 1
    assert trained.best_dev_auroc == max(scores)
    loaded = adapter_from_checkpoint(trained.checkpoint)
    assert evaluate_auroc(loaded, DEV)["mean"] == pytest.approx(max(scores))


def test_same_seed_gives_identical_weights_and_another_seed_does_not(tmp_path):
    first = run_training(tmp_path, "a.pt", seed=7, epochs=1)
    again = run_training(tmp_path, "b.pt", seed=7, epochs=1)
    other = run_training(tmp_path, "c.pt", seed=8, epochs=1)
    weights = [load_checkpoint(r.checkpoint)["state_dict"] for r in (first, again, other)]
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])
    assert not all(torch.equal(weights[0][key], weights[2][key]) for key in weights[0])


def test_selection_sees_only_dev_and_early_stopping_keeps_the_best_epoch(tmp_path, monkeypatch):
    """Scripted dev scores 0.5, 0.7, 0.6, 0.6 with patience 2: stop after epoch 4, keep epoch 2."""
    scripted = iter([0.5, 0.7, 0.6, 0.6, 0.9, 0.9])
    evaluated_ids = []

    def scripted_auroc(adapter, samples, batch_size=64, device="cpu"):
        evaluated_ids.extend(s.image_id for s in samples)
        return {"per_class": {name: math.nan for name in CLASSES}, "mean": next(scripted)}

    monkeypatch.setattr(loop, "evaluate_auroc", scripted_auroc)
    stopped = run_training(tmp_path, "stopped.pt", seed=3, epochs=6, patience=2)
    assert [r["epoch"] for r in stopped.history] == [1, 2, 3, 4]
    assert (stopped.best_epoch, stopped.best_dev_auroc) == (2, 0.7)
    assert set(evaluated_ids) == {s.image_id for s in DEV}

    scripted = iter([0.5, 0.7])
    two_epochs = run_training(tmp_path, "two.pt", seed=3, epochs=2)
    assert two_epochs.best_epoch == 2
    kept, reference = load_checkpoint(stopped.checkpoint)["state_dict"], load_checkpoint(two_epochs.checkpoint)["state_dict"]
    assert all(torch.equal(kept[key], reference[key]) for key in kept)


def test_bad_training_settings_are_user_errors(tmp_path):
    recipe = tiny_recipe()
    recipe["training"]["optimizer"] = "sgd"
    with pytest.raises(UserError, match="unknown optimizer 'sgd'; choose one of: adam"):
        train(unet_gaze.SPEC, CLASSES, TRAIN, DEV, recipe, 0, tmp_path / "x.pt", progress=False)
    with pytest.raises(UserError, match="dev split is empty"):
        train(unet_gaze.SPEC, CLASSES, TRAIN, [], tiny_recipe(), 0, tmp_path / "x.pt", progress=False)
    assert not (tmp_path / "x.pt").exists()


def test_predict_gives_per_class_sigmoids(trained):
    probs = predict(trained.adapter, DEV, batch_size=4)
    images = torch.stack([s.image for s in DEV])
    with torch.no_grad():
        expected = torch.sigmoid(trained.adapter.logits(images))
    assert probs.shape == (len(DEV), 3)
    assert torch.allclose(probs, expected, atol=1e-6)


# --- AUROC -------------------------------------------------------------------------------------


def test_auroc_by_hand_with_ties():
    # class 0: positives score 0.9 and 0.8, negatives 0.8, 0.3, 0.1
    # pairs: 0.9 beats all 3; 0.8 ties one (1/2) and beats two -> 5.5 / 6
    probs = torch.tensor([[0.9, 0.0, 0.1], [0.8, 0.1, 0.1], [0.8, 0.5, 0.0], [0.3, 0.5, 0.2], [0.1, 0.9, 0.3]])
    labels = torch.tensor([0, 1, 0, 1, 1])
    aurocs = auroc_ovr(probs, one_hots(labels, 3))
    assert aurocs[0].item() == pytest.approx(5.5 / 6)
    # class 1: positives 0.1, 0.5, 0.9 vs negatives 0.0, 0.5: 0.1 -> 1, 0.5 -> 1 + 1/2, 0.9 -> 2; 4.5 / 6
    assert aurocs[1].item() == pytest.approx(0.75)
    assert math.isnan(aurocs[2].item())  # no image of class 2


def test_auroc_extremes_and_all_ties():
    labels = torch.tensor([0, 0, 1, 1])
    perfect = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.2, 0.7], [0.1, 0.9]])
    assert auroc_ovr(perfect, one_hots(labels, 2)).tolist() == [1.0, 1.0]
    assert auroc_ovr(1 - perfect, one_hots(labels, 2)).tolist() == [0.0, 0.0]
    assert auroc_ovr(torch.full((4, 2), 0.5), one_hots(labels, 2)).tolist() == [0.5, 0.5]


def test_auroc_matches_pairwise_counting_on_random_tied_scores():
    generator = torch.Generator().manual_seed(0)
    probs = torch.randint(0, 5, (40, 3), generator=generator).float() / 4
    labels = torch.randint(0, 3, (40,), generator=generator)
    aurocs = auroc_ovr(probs, one_hots(labels, 3))
    for cls in range(3):
        pos, neg = probs[labels == cls, cls].tolist(), probs[labels != cls, cls].tolist()
        wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
        assert aurocs[cls].item() == pytest.approx(wins / (len(pos) * len(neg)))


def test_auroc_leaves_out_uncertain_labels():
    probs = torch.tensor([[0.9], [0.1], [0.2], [0.8]])
    labels = torch.tensor([[1.0], [0.0], [float("nan")], [float("nan")]])
    assert auroc_ovr(probs, labels).tolist() == [1.0]  # the NaN rows would make it 0.75


def one_hots(labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(labels, n_classes).float()


def test_average_ranks_share_ties():
    assert average_ranks(torch.tensor([0.3, 0.1, 0.3, 0.7])).tolist() == [2.5, 1.0, 2.5, 4.0]


# --- checkpoints -------------------------------------------------------------------------------


def small_state() -> dict:
    return {"weight": torch.arange(6.0).view(2, 3), "bias": torch.zeros(2)}


def test_save_is_atomic_and_round_trips(tmp_path):
    path = tmp_path / "deep" / "model.pt"
    save_checkpoint(path, "unet_gaze", small_state(), {"model": {"input_size": 32}, "note": None}, CLASSES)
    save_checkpoint(path, "unet_gaze", {"weight": torch.ones(1)}, {"model": {}}, CLASSES)  # overwrite in place
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.pt"]  # no temporary file left
    checkpoint = load_checkpoint(path, expected_model="unet_gaze", expected_classes=CLASSES)
    assert torch.equal(checkpoint["state_dict"]["weight"], torch.ones(1))


def test_sha256_file(tmp_path):
    path = tmp_path / "bytes.bin"
    path.write_bytes(b"gazebench" * 1000)
    assert sha256_file(path) == hashlib.sha256(b"gazebench" * 1000).hexdigest()


def test_missing_checkpoint_names_the_path_and_the_command(tmp_path):
    path = tmp_path / "nothing.pt"
    with pytest.raises(UserError, match=r"checkpoint not found: .*nothing\.pt; create it with `gazebench train --model unet_gaze`"):
        load_checkpoint(path, expected_model="unet_gaze")
    with pytest.raises(UserError, match="create it with `gazebench train --model unet_gaze --data egd --out x.pt`"):
        load_checkpoint(path, hint="gazebench train --model unet_gaze --data egd --out x.pt")


@pytest.mark.parametrize(
    "content",
    [b"garbage bytes, not a torch file", b""],
    ids=["garbage", "empty"],
)
def test_unreadable_checkpoint_is_a_user_error(tmp_path, content):
    path = tmp_path / "broken.pt"
    path.write_bytes(content)
    with pytest.raises(UserError, match=r"cannot read checkpoint .*broken\.pt: not an intact gazebench checkpoint") as caught:
        load_checkpoint(path)
    assert "\n" not in str(caught.value)


def test_truncated_and_foreign_files_are_user_errors(tmp_path):
    good = save_checkpoint(tmp_path / "good.pt", "unet_gaze", small_state(), {"model": {}}, CLASSES)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(UserError, match="not an intact gazebench checkpoint"):
        load_checkpoint(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weight": torch.zeros(2)}, foreign)
    with pytest.raises(UserError, match="not a gazebench-checkpoint-1 file"):
        load_checkpoint(foreign)


def test_checkpoint_for_another_model_or_class_list(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", "densenet121", small_state(), {"model": {}}, CLASSES)
    with pytest.raises(UserError, match="is for model 'densenet121', not 'unet_gaze'"):
        load_checkpoint(path, expected_model="unet_gaze")
    with pytest.raises(
        UserError, match=r"has classes \['Normal', 'CHF', 'pneumonia'\], but the data have \['Normal', 'Edema'\]"
    ):
        load_checkpoint(path, expected_classes=["Normal", "Edema"])


def test_checkpoint_whose_weights_do_not_fit_the_model(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", "unet_gaze", small_state(), {"model": {"input_size": 32}}, CLASSES)
    with pytest.raises(UserError, match="does not fit model 'unet_gaze'"):
        adapter_from_checkpoint(path)


# --- resume, plateau schedule, augmentation ---------------------------------------------------


def test_an_interrupted_training_resumes_and_ends_as_if_never_stopped(tmp_path, monkeypatch):
    uninterrupted = run_training(tmp_path, "whole.pt", epochs=3)
    real_evaluate = loop.evaluate_auroc
    calls = {"n": 0}

    def interrupt_in_epoch_3(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(loop, "evaluate_auroc", interrupt_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        run_training(tmp_path, "resumed.pt", epochs=3)
    resume_file = tmp_path / "resumed.resume.pt"
    assert resume_file.is_file() and not (tmp_path / "resumed.pt").exists()
    assert torch.load(resume_file, weights_only=True)["state"]["epoch"] == 2
    monkeypatch.setattr(loop, "evaluate_auroc", real_evaluate)
    resumed = run_training(tmp_path, "resumed.pt", epochs=3)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3] and not resume_file.exists()
    assert resumed.best_epoch == uninterrupted.best_epoch
    whole, again = load_checkpoint(uninterrupted.checkpoint)["state_dict"], load_checkpoint(resumed.checkpoint)["state_dict"]
    assert all(torch.equal(whole[key], again[key]) for key in whole)


def test_a_resume_file_of_another_run_is_not_used(tmp_path, monkeypatch):
    (tmp_path / "model.resume.pt").write_bytes(b"not a training state")
    result = run_training(tmp_path, "model.pt", epochs=1)
    assert [r["epoch"] for r in result.history] == [1]


def test_plateau_schedule_halves_the_lr_after_epochs_without_dev_gain(tmp_path, monkeypatch):
    scripted = iter([0.6, 0.6, 0.6, 0.6, 0.6])
    monkeypatch.setattr(loop, "evaluate_auroc", lambda *a, **k: {"per_class": {}, "mean": next(scripted)})
    recipe = tiny_recipe(epochs=5)
    recipe["training"]["lr_schedule"] = {"mode": "plateau", "factor": 0.5, "patience": 2}
    result = train(unet_gaze.SPEC, CLASSES, TRAIN, DEV, recipe, 0, tmp_path / "plateau.pt", progress=False)
    lrs = [record["lr"] for record in result.history]  # the lr used during each epoch
    assert lrs[:4] == [0.003] * 4 and lrs[4] == pytest.approx(0.0015)


def test_augmentation_moves_image_gaze_and_fixations_together():
    from gazebench.data.sample import collate
    from gazebench.models.training.augment import Augmentation

    image = torch.zeros(1, GRID, GRID)
    image[0, 10:14, 4:8] = 1.0  # a bright square left of centre
    gaze = torch.zeros(GRID, GRID)
    gaze[10:14, 4:8] = 1 / 16
    fixation = torch.tensor([[6.0, 12.0, 0.3]])
    batch = collate([Sample("a", "p", image, one_hot(0, 3), gaze, fixation)])
    flip_only = Augmentation(hflip=True)
    generator = torch.Generator().manual_seed(0)
    while True:  # draw until the flip happens (probability 1/2)
        flipped = flip_only(batch, generator)
        if flipped.images[0, 0, 12, 4:8].sum() == 0:
            break
    assert torch.allclose(flipped.images[0, 0], image[0].flip(-1), atol=1e-6)
    assert torch.allclose(flipped.gaze[0], gaze.flip(-1), atol=1e-6)
    assert flipped.fixations[0][0, :2].tolist() == pytest.approx([GRID - 6.0, 12.0])
    rotated = Augmentation(rotate_degrees=15)(batch, torch.Generator().manual_seed(1))
    assert float(rotated.gaze.sum()) == pytest.approx(1.0, abs=1e-5)
    x, y = rotated.fixations[0][0, :2].long().tolist()
    assert rotated.images[0, 0, y, x] > 0.5 and rotated.gaze[0, y, x] > 0  # the point is still on the square
    assert rotated.fixations[0][0, 2] == pytest.approx(0.3)


def test_an_augmented_recipe_trains(tmp_path):
    recipe = tiny_recipe(epochs=1)
    recipe["training"]["augment"] = {"hflip": True, "rotate_degrees": 15}
    result = train(unet_gaze.SPEC, CLASSES, TRAIN, DEV, recipe, 0, tmp_path / "augmented.pt", progress=False)
    plain = run_training(tmp_path, "plain.pt", epochs=1)
    assert result.history[0]["train_loss"] != plain.history[0]["train_loss"]


def test_bootstrap_auroc_ci_matches_a_plain_patient_bootstrap():
    generator = torch.Generator().manual_seed(5)
    probs = torch.rand(30, 2, generator=generator)
    labels = (torch.rand(30, 2, generator=generator) < 0.4).float()
    labels[3, 1] = float("nan")
    patients = [f"p{i // 2}" for i in range(30)]  # two images per patient
    intervals = loop.bootstrap_auroc_ci(probs, labels, patients, n_boot=200, seed=7)
    # the same draws, written out plainly: patients in sorted order, all their images
    rng = np.random.default_rng(7)
    ordered = sorted(set(patients))
    replicates = []
    for _ in range(200):
        drawn = [ordered[k] for k in rng.integers(0, len(ordered), size=len(ordered))]
        rows = [i for patient in drawn for i in range(30) if patients[i] == patient]
        replicates.append(auroc_ovr(probs[rows], labels[rows]).numpy())
    table = np.array(replicates)
    for cls in range(2):
        column = table[:, cls][~np.isnan(table[:, cls])]
        assert intervals[cls] == pytest.approx(tuple(np.quantile(column, [0.025, 0.975])))
    point = auroc_ovr(probs, labels)
    assert all(low <= float(p) <= high for (low, high), p in zip(intervals, point))


def test_bootstrap_auroc_ci_of_a_perfect_classifier_is_one():
    labels = torch.tensor([[1.0], [0.0], [1.0], [0.0], [1.0], [0.0]])
    assert loop.bootstrap_auroc_ci(labels.clone(), labels, list("abcdef"), n_boot=100) == [(1.0, 1.0)]


# --- train_job: the device --------------------------------------------------------------------


def test_train_job_resolves_the_device_and_trains_and_evaluates_there(tmp_path, tiny_synth, monkeypatch):
    seen = []

    def fake_train(spec, class_names, train_samples, dev_samples, recipe, seed, out, progress=True, device="cpu"):
        seen.append(("train", device))
        return loop.TrainResult(unet_gaze.build_adapter(class_names, input_size=32), Path(out), 1, 0.5)

    def fake_evaluate(adapter, samples, batch_size=64, device="cpu", n_boot=0, seed=0):
        seen.append(("evaluate", device, n_boot))
        return {"per_class": {name: 0.5 for name in CLASSES}, "mean": 0.5, "ci": {}}

    monkeypatch.setattr(jobs, "train", fake_train)
    monkeypatch.setattr(jobs, "evaluate_auroc", fake_evaluate)
    monkeypatch.setattr(jobs, "estimate_seconds", lambda *args, **kwargs: None)
    auto = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    for asked, used in (("auto", auto), ("cpu", torch.device("cpu")), (torch.device("cpu"), torch.device("cpu"))):
        seen.clear()
        jobs.train_job("unet_gaze", "synth", tiny_synth, None, 1, 0, tmp_path / "model.pt", device=asked)
        assert seen == [("train", used), ("evaluate", used, BOOTSTRAP["replicates"])], asked
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="--device cuda was asked for but no CUDA GPU is visible"):
            jobs.train_job("unet_gaze", "synth", tiny_synth, None, 1, 0, tmp_path / "model.pt", device="cuda")
    with pytest.raises(UserError, match=r"^xrv:densenet121-res224-all is a pretrained torchxrayvision model and gazebench does not train it"):
        jobs.train_job("xrv:densenet121-res224-all", "synth", tiny_synth, None, 1, 0, tmp_path / "xrv.pt")


# --- a failed write, and the training-time estimate -------------------------------------------


def test_a_failed_checkpoint_write_keeps_the_training_state_and_rerunning_resumes(tmp_path, monkeypatch):
    real_save = loop.save_checkpoint

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(loop, "save_checkpoint", no_space)
    with pytest.raises(UserError) as caught:
        run_training(tmp_path, "model.pt", epochs=1)
    assert str(caught.value) == (
        f"cannot write to {tmp_path / 'model.pt'}: no space left on device; kept: the training state after epoch 1 "
        f"({tmp_path / 'model.resume.pt'}); free space or fix the folder, then rerun the same command: it resumes from there"
    )
    monkeypatch.setattr(loop, "save_checkpoint", real_save)
    evaluated = []
    real_evaluate = loop.evaluate_auroc
    monkeypatch.setattr(loop, "evaluate_auroc", lambda *args, **kwargs: evaluated.append(1) or real_evaluate(*args, **kwargs))
    resumed = run_training(tmp_path, "model.pt", epochs=1)
    assert evaluated == [] and [r["epoch"] for r in resumed.history] == [1]  # no epoch trained again
    assert (tmp_path / "model.pt").is_file() and not (tmp_path / "model.resume.pt").exists()


@pytest.mark.parametrize(
    "failing_write, kept, epochs_rerun",
    [(1, r"nothing was kept \(no epoch had been saved\)", 2), (2, r"kept: the training state after epoch 1 \(.*model\.resume\.pt\)", 1)],
    ids=["first-epoch", "second-epoch"],
)
def test_a_failed_state_write_keeps_the_last_saved_epoch(tmp_path, monkeypatch, failing_write, kept, epochs_rerun):
    real_write, writes = loop.write_atomic, []

    def denied_once(path, data):
        writes.append(path)
        if len(writes) == failing_write:
            raise PermissionError(errno.EACCES, "Permission denied")
        real_write(path, data)

    monkeypatch.setattr(loop, "write_atomic", denied_once)
    with pytest.raises(UserError, match=rf"^cannot write to .*model\.resume\.pt: permission denied; {kept}"):
        run_training(tmp_path, "model.pt", epochs=2)
    evaluated = []
    real_evaluate = loop.evaluate_auroc
    monkeypatch.setattr(loop, "evaluate_auroc", lambda *args, **kwargs: evaluated.append(1) or real_evaluate(*args, **kwargs))
    resumed = run_training(tmp_path, "model.pt", epochs=2)
    assert len(evaluated) == epochs_rerun and [r["epoch"] for r in resumed.history] == [1, 2]


def test_the_training_time_estimate_is_epochs_times_the_timed_per_image_costs(monkeypatch):
    """A clock that advances one second per reading: the timed step and prediction take 1 s for a batch of 6."""
    ticks = itertools.count()
    monkeypatch.setattr(jobs.time, "perf_counter", lambda: float(next(ticks)))
    samples = {"train": TRAIN, "dev": DEV, "test": DEV[:3]}
    seconds = jobs.estimate_seconds(unet_gaze.SPEC, CLASSES, tiny_recipe(), 4, samples, torch.device("cpu"))
    assert seconds == pytest.approx(4 * (12 / 6 + 6 / 6) + 3 / 6)  # epochs x (train + dev) + test

