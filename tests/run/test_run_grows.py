"""A run directory grows: methods and metrics added later are computed alone and join the outputs.

Scores are stored per (batch, method) shard, and each shard records the metrics it was scored
with, so adding a method computes its shards only, and adding a metric (a plugin installed since,
making ``--metrics all`` longer) extends each shard by that metric, leaving the stored values as
they were.
"""

import pandas as pd
import yaml
from click.testing import CliRunner

from gazebench.cli import main
from gazebench.metrics.map_metrics import NSS
from gazebench.registry import METRICS

KEYS = ["image_id", "target", "reader", "method", "metric"]


def run(out, root, checkpoint, methods, metrics):
    args = ["run", "--model", "unet_gaze", "--data", "synth", "--root", str(root), "--split", "all", "--checkpoint", str(checkpoint),
            "--methods", methods, "--metrics", metrics, "--batch-size", "3", "--limit", "6", "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return result


def rows(out):
    return pd.read_parquet(out / "scores").sort_values(KEYS).reset_index(drop=True)


def test_adding_methods_and_metrics_computes_only_what_is_missing(tmp_path, tiny_synth, random_checkpoint):
    out = tmp_path / "growing"
    run(out, tiny_synth, random_checkpoint, "saliency", "nss")
    first = rows(out)
    saliency_shards = {path: path.stat().st_mtime_ns for path in (out / "scores").glob("*-saliency.parquet")}
    run(out, tiny_synth, random_checkpoint, "gradcam", "nss")  # a method added: only its shards are new
    assert all(path.stat().st_mtime_ns == stamp for path, stamp in saliency_shards.items())
    run(out, tiny_synth, random_checkpoint, "saliency,gradcam", "nss,cc")  # a metric added to every shard
    grown = rows(out)
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert sorted(config["methods"]) == ["gradcam", "saliency"] and sorted(config["metrics"]) == ["cc", "nss"]
    kept = grown.merge(first, on=KEYS, suffixes=("", "_before"))
    assert len(kept) == len(first)
    pd.testing.assert_series_equal(kept.value, kept.value_before, check_names=False)  # stored values untouched
    fresh = tmp_path / "fresh"
    run(fresh, tiny_synth, random_checkpoint, "saliency,gradcam", "nss,cc")
    pd.testing.assert_frame_equal(grown, rows(fresh))
    assert set(pd.read_csv(out / "leaderboard.csv").metric) == {"nss", "cc"}
    assert (out / "leaderboard.csv").read_bytes() == (fresh / "leaderboard.csv").read_bytes()


class NSSCopy(NSS):
    """A metric plugin installed after the run (the same values as nss under another name)."""

    name = "nss_plugin"


def test_a_metric_plugin_installed_later_does_not_lock_the_run_out(monkeypatch, tmp_path, tiny_synth, random_checkpoint):
    out = tmp_path / "run"
    run(out, tiny_synth, random_checkpoint, "saliency", "all")
    before = rows(out)
    monkeypatch.setitem(METRICS._entries, NSSCopy.name, NSSCopy)
    run(out, tiny_synth, random_checkpoint, "saliency", "all")
    after = rows(out)
    plugin = after[after.metric == "nss_plugin"].reset_index(drop=True)
    nss = after[after.metric == "nss"].reset_index(drop=True)
    pd.testing.assert_series_equal(plugin.value, nss.value, check_names=False)
    pd.testing.assert_frame_equal(after[after.metric != "nss_plugin"].reset_index(drop=True), before)
    assert "nss_plugin" in set(pd.read_csv(out / "leaderboard.csv").metric)
