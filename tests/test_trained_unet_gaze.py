"""The main job's model: unet_gaze trained once on the embedded data, as `gazebench run` does.

This is the slowest test (it generates the 400-image embedded dataset and trains the cached
model with the embedded recipe: a few minutes on 2 CPU cores).
"""

import pytest
import torch
import yaml
from scipy.stats import wilcoxon

from gazebench.data.datasets import open_dataset
from gazebench.data.sample import collate
from gazebench.methods.base import image_seed
from gazebench.metrics.base import GazeTargets
from gazebench.models.training.jobs import adapter_for_run
from gazebench.registry import METHODS, METRICS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(trained_unet_gaze_home):
    """The embedded unet_gaze as the main command trains it (trained once per session, shared with the README check)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GAZEBENCH_HOME", str(trained_unet_gaze_home))
        adapter, checkpoint, _ = adapter_for_run("unet_gaze", None, "synth", None, None)
        test_split = open_dataset("synth", None, "test", 224)
        samples = [test_split[i] for i in range(len(test_split))]
    return adapter, checkpoint, samples


def test_reaches_a_mean_test_auroc_of_at_least_0_9(trained):
    _, checkpoint, _ = trained
    report = yaml.safe_load(checkpoint.with_suffix(".report.yaml").read_text())
    assert report["recipe"] == "embedded" and report["data"] == "synth"
    assert report["test_mean_auroc"] >= 0.9, report


def test_gradcam_maps_agree_with_their_own_gaze_more_than_with_other_images(trained):
    """Shuffled control: NSS against the image's own fixations vs. the mean over every other image's."""
    adapter, _, samples = trained
    batch = collate(samples)
    maps = METHODS.get("gradcam")()(adapter, batch.images, batch.labels.argmax(dim=1), [image_seed(0, i) for i in batch.image_ids], 224)
    nss = METRICS.get("nss")()
    own = nss.compute(maps, GazeTargets(batch.gaze, batch.fixation_maps))
    others = torch.stack([nss.compute(maps, GazeTargets(batch.gaze.roll(k, 0), batch.fixation_maps.roll(k, 0))) for k in range(1, len(batch))]).nanmean(dim=0)
    defined = ~(own.isnan() | others.isnan())
    assert defined.sum() >= 0.8 * len(samples)
    difference = (own - others)[defined]
    assert float(difference.mean()) > 0.05, (float(own[defined].mean()), float(others[defined].mean()))
    assert float((difference > 0).float().mean()) > 0.65
    assert wilcoxon(difference.numpy(), alternative="greater").pvalue < 0.01


def test_a_runs_stored_predictions_give_the_training_reports_test_auroc_and_intervals(trained_unet_gaze_home, trained, tmp_path):
    """Two paths to one number: the AUROC tables read the run's predictions, training evaluated the model itself."""
    from click.testing import CliRunner

    from gazebench.aggregate.classification import auroc_table
    from gazebench.aggregate.runs import run_predictions
    from gazebench.cli import main

    _, checkpoint, _ = trained
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GAZEBENCH_HOME", str(trained_unet_gaze_home))
        result = CliRunner().invoke(main, ["run", "--model", "unet_gaze", "--methods", "gradcam", "--metrics", "nss", "--out", str(tmp_path / "run"), "--no-report"])
    assert result.exit_code == 0, result.output
    report = yaml.safe_load(checkpoint.with_suffix(".report.yaml").read_text())
    table = auroc_table(run_predictions(tmp_path / "run"), seed=report["test_bootstrap"]["seed"]).set_index("class")
    for name, value in report["test_auroc"].items():
        assert table.loc[name, "auroc"] == pytest.approx(value, abs=1e-6)
        assert [table.loc[name, "ci_low"], table.loc[name, "ci_high"]] == pytest.approx(report["test_auroc_ci95"][name], abs=1e-6)
    assert table.loc["mean", "auroc"] == pytest.approx(report["test_mean_auroc"], abs=1e-6)
