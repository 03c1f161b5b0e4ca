"""The scoring engine inside `gazebench run`: gaze priors, reference maps, localisation masks, metric availability."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from click.testing import CliRunner

from gazebench.cli import main
from gazebench.data.datasets import open_dataset
from gazebench.data.sample import ReaderGaze, Sample, collate, fixation_map
from gazebench.metrics.base import GazeTargets
from gazebench.run.pairs import ExplanationPairs, gaze_groups
from gazebench.run.priors import GazePriors
from gazebench.run.references import reference_maps

GRID = 224


def run(tmp_path, tiny_synth, checkpoint, *extra, code=0):
    out = tmp_path / "run"
    args = ["run", "--model", "unet_gaze", "--data", "synth", "--root", str(tiny_synth), "--split", "all", "--checkpoint", str(checkpoint), "--out", str(out), "--batch-size", "4", "--limit", "6", *extra]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == code, result.output
    return out, result


@pytest.fixture(scope="module")
def scored_run(tmp_path_factory, tiny_synth, random_checkpoint):
    return run(tmp_path_factory.mktemp("scoring"), tiny_synth, random_checkpoint, "--methods", "saliency,gradcam", "--metrics", "all")


def test_priors_are_the_train_split_mean_density_and_the_evaluated_fixations(scored_run, tiny_synth):
    out, _ = scored_run
    priors = GazePriors.load(out)
    train = open_dataset("synth", tiny_synth, "train", GRID)
    densities = torch.stack([train[i].gaze.double() for i in range(len(train))])
    torch.testing.assert_close(priors.centre_bias.double(), densities.mean(dim=0), rtol=1e-5, atol=1e-9)
    evaluated = open_dataset("synth", tiny_synth, "all", GRID)
    total = sum(fixation_map(evaluated[i].fixations, GRID) for i in range(6))
    torch.testing.assert_close(priors.fixation_total, total)
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["references"]["centre_bias"] == f"mean gaze density of the train split ({len(train)} images)"
    assert f"centre bias: mean gaze density of the train split ({len(train)} images)" in (out / "run.log").read_text()
    assert {"sim", "auc_judd", "auc_shuffled", "info_gain", "iou", "hit_rate"} <= set(config["metrics"])


def test_reference_maps_are_scored_beside_the_methods(scored_run):
    out, result = scored_run
    scores = pd.read_parquet(out / "scores")
    assert set(scores.method) == {"saliency", "gradcam", "centre_bias", "uniform", "edges"}
    centre = scores[(scores.method == "centre_bias") & (scores.metric == "info_gain")]
    np.testing.assert_allclose(centre.value, 0.0, atol=1e-6)  # the centre bias carries no information beyond itself
    uniform = scores[scores.method == "uniform"].set_index("metric").value
    assert uniform[["cc", "nss", "ssim"]].isna().all() and uniform[["kl"]].notna().all()
    log = (out / "run.log").read_text()
    assert "uniform/" not in log  # the uniform floor's NaNs are by construction, not degenerate inputs
    assert "centre_bias" in result.output and "uniform" in result.output


def test_localisation_uses_the_evidence_mask_of_true_labels_only(scored_run):
    out, _ = scored_run
    scores = pd.read_parquet(out / "scores")
    iou = scores[(scores.metric == "iou") & (scores.method == "saliency")]
    normal = iou.target == "Normal"  # Normal images have an empty evidence mask: NaN, never a hit
    assert iou[normal].value.isna().all() and iou[~normal].value.notna().any()
    hits = scores[(scores.metric == "hit_rate") & (scores.method == "saliency")].value.dropna()
    assert set(hits.unique()) <= {0.0, 1.0}


def test_metrics_the_data_cannot_feed(tmp_path, tiny_synth, random_checkpoint):
    import shutil

    copy = tmp_path / "no_evidence"
    shutil.copytree(tiny_synth, copy)
    for evidence in copy.rglob("evidence.png"):
        evidence.unlink()
    out, _ = run(tmp_path, copy, random_checkpoint, "--methods", "gradcam", "--metrics", "all")
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert "iou" not in config["metrics"] and "cc" in config["metrics"]
    assert "metric iou left out: it needs mask, which synth does not provide" in (out / "run.log").read_text()
    _, result = run(tmp_path / "named", copy, random_checkpoint, "--methods", "gradcam", "--metrics", "iou", code=2)
    assert "metric iou needs mask" in result.output and result.output.strip().count("\n") == 0


def _sample(image_id, readers):
    gaze = {name: torch.rand(8, 8) for name in readers}
    return Sample(
        image_id=image_id, patient_id="p", image=torch.zeros(1, 8, 8), labels=torch.tensor([1.0]),
        gaze=torch.zeros(8, 8), fixations=torch.zeros(0, 3),
        readers={name: ReaderGaze(g / g.sum(), torch.zeros(0, 3)) for name, g in gaze.items()},
    )


def test_inter_observer_map_is_the_mean_of_the_other_readers():
    sample = _sample("a", ["r1", "r2", "r3"])
    batch = collate([sample])
    pairs = ExplanationPairs([0], torch.tensor([0]), torch.ones(1, 1), batch.select([0]))
    groups = gaze_groups(pairs, GazeTargets.from_batch(pairs.batch))
    assert [group.per_reader for group in groups] == [False, True] and groups[1].batch.readers == ["r1", "r2", "r3"]
    maps = reference_maps("inter_observer", None, pairs, groups)
    assert maps[0] is None  # never scored against the merged gaze, which includes the reader itself
    readers = sample.readers
    torch.testing.assert_close(maps[1][0], (readers["r2"].gaze + readers["r3"].gaze) / 2)
    torch.testing.assert_close(maps[1][2], (readers["r1"].gaze + readers["r2"].gaze) / 2)


def test_region_analysis_files(scored_run):
    out, _ = scored_run
    per_map = pd.read_csv(out / "regions.csv")
    regions = ["aortic_knob", "left_lung", "mediastinum", "right_lung"]
    assert set(per_map.method) == {"saliency", "gradcam", "gaze"} and set(regions) <= set(per_map.columns)
    assert per_map.groupby("method").size().eq(6).all()  # one row per (image, target) and method
    assert set(per_map.most_salient.dropna()) <= set(regions)
    agreement = pd.read_csv(out / "regions_agreement.csv")
    assert {"saliency", "gradcam"} <= set(agreement.method) and agreement.agreement.between(0, 1).all()
    assert "most salient region" in (out / "regions.md").read_text().lower()


def test_leaderboard_command_over_run_directories(scored_run):
    import io

    out, _ = scored_run
    result = CliRunner().invoke(main, ["leaderboard", str(out), "--format", "csv"])
    assert result.exit_code == 0, result.output
    board = pd.read_csv(io.StringIO(result.output))
    saved = pd.read_csv(out / "leaderboard.csv")
    pd.testing.assert_frame_equal(board, saved)  # same rows, same seed: the run's own leaderboard
    result = CliRunner().invoke(main, ["leaderboard", str(out), str(out)])
    assert result.exit_code == 2 and "given twice" in result.output and result.output.strip().count("\n") == 0
