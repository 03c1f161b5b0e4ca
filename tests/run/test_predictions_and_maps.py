"""What a run stores besides scores: every image's predictions (for AUROC tables) and the maps of its first images (for figures)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from gazebench.aggregate.examples import read_examples
from gazebench.aggregate.runs import run_predictions
from gazebench.cli import main
from gazebench.data.datasets import open_dataset
from gazebench.run.store import PREDICTION_SCHEMA, RunStore

CLASSES = ["Normal", "CHF", "pneumonia"]


def run(out, tiny_synth, checkpoint):
    args = ["run", "--model", "unet_gaze", "--data", "synth", "--root", str(tiny_synth), "--split", "all", "--checkpoint", str(checkpoint),
            "--out", str(out), "--batch-size", "4", "--limit", "6", "--methods", "gradcam,saliency", "--metrics", "nss,ssim", "--no-report"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, tiny_synth, random_checkpoint):
    out = tmp_path_factory.mktemp("runs") / "small"
    run(out, tiny_synth, random_checkpoint)
    return out


def test_every_scored_image_has_its_probabilities_and_labels_stored(small_run, tiny_synth):
    predictions = run_predictions(small_run)
    assert list(predictions.columns) == list(PREDICTION_SCHEMA) and len(predictions) == 6 * 3
    assert list(predictions["class"][:3]) == CLASSES
    by_image = predictions.groupby("image_id")
    assert predictions["prob"].between(0, 1).all() and (by_image["label"].sum() == 1).all()  # single-label data: one true class per image
    dataset = open_dataset("synth", tiny_synth, "all", 224)
    truth = {dataset[i].image_id: CLASSES[dataset[i].label] for i in range(6)}
    positives = predictions[predictions["label"] == 1]
    assert dict(zip(positives["image_id"], positives["class"])) == truth
    scores = pd.read_parquet(small_run / "scores")
    merged = scores.merge(predictions, left_on=["image_id", "target"], right_on=["image_id", "class"])
    assert len(merged) == len(scores) and np.allclose(merged["prob_x"], merged["prob_y"])  # the score rows' prob is the stored one


def test_the_first_images_keep_radiograph_gaze_and_maps_on_the_grid(small_run, tiny_synth):
    examples = read_examples(small_run)
    dataset = open_dataset("synth", tiny_synth, "all", 224)
    samples = [dataset[i] for i in range(6)]
    assert sorted(examples.methods) == ["gradcam", "saliency"] and set(examples.radiograph) == {s.image_id for s in samples}
    for sample in samples:
        assert np.abs(examples.radiograph[sample.image_id] - sample.image[0].numpy()).max() <= 1 / 255 + 1e-6  # uint8 min-max quantisation
        gaze = sample.gaze.numpy()
        assert np.abs(examples.gaze[sample.image_id] - gaze).max() <= gaze.max() / 255 + 1e-9
        target = CLASSES[sample.label]
        assert examples.maps[("gradcam", sample.image_id, target)].shape == (224, 224)


def test_a_run_made_before_predictions_were_stored_gains_them_without_recomputing_scores(small_run, tiny_synth, random_checkpoint, tmp_path):
    copy = tmp_path / "old"
    import shutil

    shutil.copytree(small_run, copy)
    shutil.rmtree(copy / "predictions")
    before = pd.read_csv(copy / "leaderboard.csv")
    stamps = {path: path.stat().st_mtime_ns for path in (copy / "scores").glob("*.parquet")}
    config = (copy / "config.yaml").read_text().replace(str(small_run), str(copy))
    (copy / "config.yaml").write_text(config)
    run(copy, tiny_synth, random_checkpoint)
    assert len(run_predictions(copy)) == 18 and sorted(path.name for path in RunStore(copy).predictions.iterdir()) == ["batch00000.parquet", "batch00001.parquet"]
    assert all(path.stat().st_mtime_ns == stamp for path, stamp in stamps.items())
    pd.testing.assert_frame_equal(pd.read_csv(copy / "leaderboard.csv"), before)


def test_the_report_shows_chosen_images_and_refuses_one_whose_maps_were_not_kept(small_run, tmp_path):
    from gazebench.report.figures import run_figures

    first = read_examples(small_run).maps
    image_id = sorted({image for _, image, _ in first})[0]
    grid = next(entry for entry in run_figures(small_run, image_ids=[image_id]) if entry.stem == "examples").figure
    assert grid.axes[0].get_ylabel().startswith("chosen: ") and image_id[:14] in grid.axes[0].get_ylabel()
    result = CliRunner().invoke(main, ["report", str(small_run), "--out", str(tmp_path / "chosen.html"), "--image", image_id])
    assert result.exit_code == 0 and (tmp_path / "chosen.html").is_file(), result.output
    refused = CliRunner().invoke(main, ["report", str(small_run), "--out", str(tmp_path / "no.html"), "--image", "not-an-image"])
    assert refused.exit_code == 2 and refused.stderr.startswith("gazebench: error: image not-an-image has no kept maps") and not (tmp_path / "no.html").exists()
