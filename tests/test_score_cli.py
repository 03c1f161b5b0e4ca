"""`gazebench score`: gazebench's metrics on .npy arrays made by any other tool."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from gazebench.cli import main
from gazebench.metrics.base import GazeTargets
from gazebench.metrics.centre_bias import gaussian_centre_bias
from gazebench.registry import METRICS

N, SIZE = 5, 24


@pytest.fixture
def arrays(tmp_path):
    rng = np.random.default_rng(3)
    saliency = rng.random((N, SIZE, SIZE)).astype(np.float32)
    gaze = rng.random((N, SIZE, SIZE)) ** 3
    gaze = (gaze / gaze.sum(axis=(1, 2), keepdims=True)).astype(np.float32)
    fixations = (rng.random((N, SIZE, SIZE)) > 0.97).astype(np.uint8)
    fixations[:, 3, 4] = 1
    masks = np.zeros((N, SIZE, SIZE), bool)
    masks[:, 5:15, 6:18] = True
    masks[2] = False  # an empty mask: NaN, never a hit
    paths = {}
    for name, array in dict(saliency=saliency, gaze=gaze, fixations=fixations, masks=masks).items():
        paths[name] = tmp_path / f"{name}.npy"
        np.save(paths[name], array)
    return paths, dict(saliency=saliency, gaze=gaze, fixations=fixations, masks=masks)


def score(tmp_path, *args):
    out = tmp_path / "scores.csv"
    result = CliRunner().invoke(main, ["score", *args, "--out", str(out)])
    return result, out


def test_every_metric_the_inputs_allow_matches_the_metric_itself(tmp_path, arrays):
    paths, values = arrays
    result, out = score(tmp_path, "--saliency", str(paths["saliency"]), "--gaze", str(paths["gaze"]), "--fixations", str(paths["fixations"]), "--masks", str(paths["masks"]))
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out)
    assert list(table["index"]) == list(range(N))
    assert set(table.columns) - {"index"} == set(METRICS.fixed_names())
    fixations = torch.from_numpy(values["fixations"].astype(np.float32))
    targets = GazeTargets(
        density=torch.from_numpy(values["gaze"]),
        fixations=fixations,
        centre_bias=gaussian_centre_bias(SIZE, SIZE),
        negatives=fixations.sum(dim=0, keepdim=True) - fixations,
        mask=torch.from_numpy(values["masks"]),
    )
    maps = torch.from_numpy(values["saliency"])
    for name in METRICS.fixed_names():
        expected = METRICS.get(name)()(maps, targets).double().numpy()
        np.testing.assert_allclose(table[name].to_numpy(), expected, rtol=1e-5, atol=1e-7, err_msg=name)  # the metric returns float32
    assert np.isnan(table["iou"][2]) and np.isnan(table["hit_rate"][2])
    assert "| cc | higher |" in result.output and f"wrote {N} rows" in result.output


def test_without_fixations_only_density_metrics_and_a_named_one_is_refused(tmp_path, arrays):
    paths, _ = arrays
    result, out = score(tmp_path, "--saliency", str(paths["saliency"]), "--gaze", str(paths["gaze"]))
    assert result.exit_code == 0, result.output
    columns = set(pd.read_csv(out).columns) - {"index"}
    assert {"cc", "kl", "ssim", "sim"} <= columns
    assert not columns & {"nss", "auc_judd", "auc_shuffled", "info_gain", "iou", "hit_rate"}
    result, out = score(tmp_path, "--saliency", str(paths["saliency"]), "--gaze", str(paths["gaze"]), "--metrics", "nss")
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0 and "--fixations" in result.output


def test_a_nan_map_gives_a_nan_row_counted_in_the_summary(tmp_path, arrays):
    paths, values = arrays
    saliency = values["saliency"].copy()
    saliency[1, 0, 0] = np.nan
    np.save(paths["saliency"], saliency)
    result, out = score(tmp_path, "--saliency", str(paths["saliency"]), "--gaze", str(paths["gaze"]), "--metrics", "cc,kl")
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out)
    assert table["cc"].isna().tolist() == [False, True, False, False, False]
    assert f"| cc | higher | {table['cc'].mean():.4f} | {N - 1} | 1 |" in result.output


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda p, v: p["gaze"].unlink(), "no such file"),
        (lambda p, v: p["gaze"].write_text("not an array"), "not a readable NumPy .npy array"),
        (lambda p, v: np.save(p["gaze"], v["gaze"][:, :10]), "must match"),
        (lambda p, v: np.save(p["saliency"], v["saliency"][0]), "expected [N, H, W]"),
        (lambda p, v: np.save(p["gaze"], -v["gaze"]), "negative or non-finite"),
        (lambda p, v: np.save(p["masks"], v["masks"] * 3), "only 0/1"),
    ],
)
def test_bad_inputs_give_one_line_exit_2_and_no_output(tmp_path, arrays, change, message):
    paths, values = arrays
    change(paths, values)
    result, out = score(tmp_path, "--saliency", str(paths["saliency"]), "--gaze", str(paths["gaze"]), "--masks", str(paths["masks"]))
    assert result.exit_code == 2, result.output
    assert message in result.output and result.output.strip().count("\n") == 0
    assert not out.exists()
