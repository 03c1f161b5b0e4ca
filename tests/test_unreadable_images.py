"""A corrupt image among many no longer ends a training or the priors pass: it is skipped and counted; ``--strict`` stops.

On a copy of the tiny synthetic dataset (``synth.generate``, 12 images) with one image cut
inside its pixel data (the header, and so the size the reader needs at open, still reads).
The training loop itself is replaced by a stand-in: what is tested is which samples reach it.
"""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from gazebench.cli import main
from gazebench.data.egd import EGDDataset
from gazebench.data.images import UnreadableImage
from gazebench.data.sample import fixation_map
from gazebench.models import unet_gaze
from gazebench.models.training import jobs, loop
from gazebench.run.priors import PRIORS_FILE, GazePriors, compute_priors
from tests.fixtures import egd_layout as egd

CLASSES = ["Normal", "CHF", "pneumonia"]


def open_split(root: Path, split: str) -> EGDDataset:
    return EGDDataset(root, split=split, grid=32, name="synth", require_gaze=False)


@pytest.fixture
def corrupt_copy(tmp_path, tiny_synth):
    """(copy of tiny_synth, the train-split image id whose file is truncated, that file)."""
    root = Path(shutil.copytree(tiny_synth, tmp_path / "synth"))
    record = open_split(root, "train").records.iloc[1]
    egd.truncate_image(Path(record.image_path))
    return root, str(record.image_id), Path(record.image_path)


@pytest.fixture
def fake_training(monkeypatch):
    """The loop and the test evaluation replaced: records the samples each receives."""
    seen = {}

    def fake_train(spec, class_names, train_samples, dev_samples, recipe, seed, out, progress=True, device="cpu"):
        seen["train"], seen["dev"] = [s.image_id for s in train_samples], [s.image_id for s in dev_samples]
        return loop.TrainResult(unet_gaze.build_adapter(class_names, input_size=32), Path(out), 1, 0.5)

    def fake_evaluate(adapter, samples, batch_size=64, device="cpu", n_boot=0, seed=0):
        seen["test"] = [s.image_id for s in samples]
        return {"per_class": {name: 0.5 for name in CLASSES}, "mean": 0.5, "ci": {}}

    monkeypatch.setattr(jobs, "train", fake_train)
    monkeypatch.setattr(jobs, "evaluate_auroc", fake_evaluate)
    return seen


def train_args(root: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--model", "unet_gaze", "--data", "synth", "--root", str(root), "--epochs", "1", "--out", str(out), "--device", "cpu", *extra]


def test_train_skips_the_unreadable_image_and_counts_it_in_the_summary_and_report(corrupt_copy, fake_training, tmp_path):
    root, bad_id, path = corrupt_copy
    result = CliRunner().invoke(main, train_args(root, tmp_path / "model.pt"))
    assert result.exit_code == 0, result.output
    train_ids = list(open_split(root, "train").records.image_id)
    assert fake_training["train"] == [i for i in train_ids if i != bad_id]
    assert "skipped: 1 unreadable image file(s) (train 1, dev 0, test 0); replace them, or pass --strict to stop on them" in result.output
    assert f"image {bad_id} (item 1): cannot read image {path}" in result.output
    report = yaml.safe_load((tmp_path / "model.report.yaml").read_text())
    assert report["unreadable_images"] == {"train": 1, "dev": 0, "test": 0}
    assert len(report["unreadable_files"]) == 1 and str(path) in report["unreadable_files"][0]


def test_train_strict_stops_with_the_one_line_error(corrupt_copy, fake_training, tmp_path):
    root, _, path = corrupt_copy
    result = CliRunner().invoke(main, train_args(root, tmp_path / "model.pt", "--strict"))
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1].startswith(f"gazebench: error: cannot read image {path}: ")
    assert "train" not in fake_training and not (tmp_path / "model.pt").exists()


def test_centre_bias_skips_and_counts_unreadable_train_images(corrupt_copy, tmp_path):
    root, bad_id, _ = corrupt_copy
    train, evaluated = open_split(root, "train"), open_split(root, "test")
    priors = compute_priors(lambda: train, evaluated, np.arange(len(evaluated)), 32)
    readable = [train[i].gaze.double() for i in range(len(train)) if train.records.image_id.iloc[i] != bad_id]
    used = [g / g.sum() for g in readable if float(g.sum()) > 0]
    torch.testing.assert_close(priors.centre_bias, (sum(used) / len(used)).float())
    assert (priors.unreadable_train, priors.unreadable_evaluated) == (1, 0)
    assert priors.centre_bias_source == f"mean gaze density of the train split ({len(used)} images; 1 unreadable image(s) skipped)"
    priors.save(tmp_path)
    again = GazePriors.load(tmp_path)
    assert (again.unreadable_train, again.unreadable_evaluated, again.centre_bias_source) == (1, 0, priors.centre_bias_source)
    with pytest.raises(UnreadableImage):
        compute_priors(lambda: train, evaluated, np.arange(len(evaluated)), 32, strict=True)


def test_evaluated_set_fixations_skip_unreadable_images(corrupt_copy):
    root, bad_id, _ = corrupt_copy
    evaluated = open_split(root, "train")  # the split holding the bad image, evaluated
    priors = compute_priors(lambda: None, evaluated, np.arange(len(evaluated)), 32)
    readable = [i for i in range(len(evaluated)) if evaluated.records.image_id.iloc[i] != bad_id]
    expected = sum(fixation_map(evaluated[i].fixations, 32) for i in readable)
    torch.testing.assert_close(priors.fixation_total, expected)
    assert (priors.unreadable_train, priors.unreadable_evaluated) == (0, 1)


def test_priors_saved_before_the_counts_existed_still_load(tmp_path):
    """A gaze_priors.npz of an older run (no ``unreadable`` array): nothing was skipped then."""
    np.savez(tmp_path / PRIORS_FILE, centre_bias=np.full((4, 4), 1 / 16, np.float32), fixation_total=np.zeros((4, 4), np.float32), source=np.array("old"))
    priors = GazePriors.load(tmp_path)
    assert (priors.unreadable_train, priors.unreadable_evaluated, priors.centre_bias_source) == (0, 0, "old")
