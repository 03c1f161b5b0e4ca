"""`gazebench run` end to end on a tiny synthetic dataset: the run-directory contract."""

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from gazebench.cli import main

ROW_SCHEMA = ["dataset", "split", "image_id", "patient_id", "reader", "target", "label", "pred", "prob", "correct", "model", "checkpoint", "method", "method_params", "metric", "value", "protocol"]
ALL_METHODS = sorted(__import__("gazebench.registry", fromlist=["METHODS"]).METHODS.fixed_names())
METRICS = sorted(["auc_judd", "auc_shuffled", "cc", "cc_cb", "hit_rate", "info_gain", "iou", "kl", "kl_cb", "nss", "nss_cb", "sim", "sim_cb", "ssim"])
REFERENCES = ["centre_bias", "uniform", "edges"]  # floors scored beside every method (no inter-observer ceiling: one reader per image)
REFUSING = {"deeplift", "guided_backprop", "guided_gradcam"}  # no exact rule for unet_gaze's squeeze-excitation gates and SiLUs


def run(out, tiny_synth, checkpoint, *extra):
    args = ["run", "--model", "unet_gaze", "--data", "synth", "--root", str(tiny_synth), "--split", "all", "--checkpoint", str(checkpoint), "--out", str(out), "--batch-size", "4", "--limit", "6", *extra]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_synth, random_checkpoint):
    out = tmp_path_factory.mktemp("runs") / "first"
    result = run(out, tiny_synth, random_checkpoint, "--methods", "all")
    return out, result


def test_run_directory_contract(finished_run, random_checkpoint):
    out, result = finished_run
    config = yaml.safe_load((out / "config.yaml").read_text())
    log = (out / "run.log").read_text()
    left_out = sorted(line.split(":")[1].strip().removeprefix("method ") for line in log.splitlines() if line.startswith("left out: method "))
    METHODS = sorted(config["methods"])
    assert sorted(METHODS + left_out) == ALL_METHODS and REFUSING <= set(left_out)  # `all` = what explains the model + what is left out, logged
    assert config["protocol"]["id"].startswith("p1-grid224-egd-")
    assert config["model"]["checkpoint_sha256"] and config["seed"] == 0
    assert sorted(config["metrics"]) == METRICS
    assert config["bootstrap"]["replicates"] == 1000 and config["bootstrap"]["unit"] == "patient"
    scores = pd.read_parquet(out / "scores")
    assert list(scores.columns) == ROW_SCHEMA
    assert len(scores) == 6 * (len(METHODS) + len(REFERENCES)) * len(METRICS)
    assert set(scores.method) == set(METHODS + REFERENCES)
    assert set(scores.reader) == {"all"} and scores.label.eq(1).all()
    assert (scores.correct == (scores.pred == scores.target)).all()
    leaderboard = pd.read_csv(out / "leaderboard.csv")
    assert list(leaderboard.columns) == ["method", "metric", "mean", "ci_low", "ci_high", "n", "role", "vs_best", "vs_centre_bias"]
    assert len(leaderboard) == (len(METHODS) + len(REFERENCES)) * len(METRICS)
    defined = leaderboard.dropna(subset=["mean"])
    assert ((defined.ci_low <= defined["mean"]) & (defined["mean"] <= defined.ci_high)).all()
    assert (leaderboard.groupby("metric").vs_best.apply(lambda marks: (marks == "best").sum()) == 1).all()
    for name in ["comparisons.csv", "breakdown.csv", "breakdown.md", "leaderboard.tex", "gaze_priors.npz"]:
        assert (out / name).is_file(), name
    assert "nss" in (out / "leaderboard.md").read_text() and "| gradcam |" in result.output
    assert "fixations off the displayed image (-1, dropped)" in (out / "run.log").read_text()
    assert "deeplift" in (out / "run.log").read_text()


def test_same_command_resumes_without_recomputing(finished_run, tiny_synth, random_checkpoint):
    out, _ = finished_run
    shards = sorted((out / "scores").glob("*.parquet"))
    stamps = {shard: shard.stat().st_mtime_ns for shard in shards}
    before = pd.read_csv(out / "leaderboard.csv")
    removed = shards[0]
    removed_values = pd.read_parquet(removed)
    removed.unlink()
    run(out, tiny_synth, random_checkpoint, "--methods", "all")
    assert removed.is_file()
    pd.testing.assert_frame_equal(pd.read_parquet(removed), removed_values)
    assert all(shard.stat().st_mtime_ns == stamps[shard] for shard in shards[1:])
    pd.testing.assert_frame_equal(pd.read_csv(out / "leaderboard.csv"), before)


def test_same_command_elsewhere_gives_the_same_scores(finished_run, tmp_path, tiny_synth, random_checkpoint):
    out, _ = finished_run
    run(tmp_path / "again", tiny_synth, random_checkpoint, "--methods", "smoothgrad,gradcam", "--batch-size", "3")
    again = pd.read_parquet(tmp_path / "again" / "scores").sort_values(["method", "metric", "image_id"]).reset_index(drop=True)
    first = pd.read_parquet(out / "scores")
    first = first[first.method.isin(again.method.unique())].sort_values(["method", "metric", "image_id"]).reset_index(drop=True)
    assert set(again.method) == {"smoothgrad", "gradcam", "centre_bias", "uniform", "edges"}
    pd.testing.assert_series_equal(again.value, first.value, rtol=1e-4, atol=1e-6)


def test_a_different_run_in_the_same_directory_is_refused(finished_run, tiny_synth, random_checkpoint):
    out, _ = finished_run
    result = CliRunner().invoke(main, ["run", "--model", "unet_gaze", "--data", "synth", "--root", str(tiny_synth), "--split", "all", "--checkpoint", str(random_checkpoint), "--out", str(out), "--seed", "7", "--limit", "6", "--batch-size", "4"])
    assert result.exit_code == 2
    assert "holds a run with other settings" in result.output and "seed" in result.output


def test_target_pred_explains_the_predicted_class(tmp_path, tiny_synth, random_checkpoint):
    run(tmp_path / "pred", tiny_synth, random_checkpoint, "--methods", "gradcam", "--metrics", "nss", "--target", "pred")
    scores = pd.read_parquet(tmp_path / "pred" / "scores")
    assert (scores.target == scores.pred).all()
    assert yaml.safe_load((tmp_path / "pred" / "config.yaml").read_text())["target"] == "pred"
