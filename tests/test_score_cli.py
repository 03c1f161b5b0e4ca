"""`gazebench score`: gazebench's metrics on .npy arrays made by any other tool."""

from __future__ import annotations

import errno
import os
from pathlib import Path

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
    for name, array in {"saliency": saliency, "gaze": gaze, "fixations": fixations, "masks": masks}.items():
        paths[name] = tmp_path / f"{name}.npy"
        np.save(paths[name], array)
    return paths, {"saliency": saliency, "gaze": gaze, "fixations": fixations, "masks": masks}


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
        (lambda p, v: p["gaze"].write_text("not an array"), "is not a valid .npy file"),
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


def save(tmp_path, name, array):
    path = tmp_path / f"{name}.npy"
    np.save(path, array)
    return str(path)


def gaussian_blob(size=64, sigma=2.0):
    rows, cols = np.mgrid[:size, :size] - size / 2
    return np.exp(-(rows**2 + cols**2) / (2 * sigma**2))


def test_float64_maps_are_scored_in_float64_not_rounded_to_float32(tmp_path):
    """A Gaussian blob with fixations in its tail, where float32 rounds the values to 0 (ties)."""
    from tests.metrics.reference import auc_judd_reference

    blob = gaussian_blob()
    fixations = np.zeros_like(blob)
    fixations[32, 2:62:4] = fixations[2:62:4, 32] = 1
    expected = auc_judd_reference(blob, fixations)
    rounded = auc_judd_reference(blob.astype(np.float32).astype(np.float64), fixations)
    assert abs(expected - rounded) > 0.005  # float32 would show
    maps, gaze = np.stack([blob, blob]), np.stack([blob / blob.sum()] * 2)
    result, out = score(tmp_path, "--saliency", save(tmp_path, "s", maps), "--gaze", save(tmp_path, "g", gaze), "--fixations", save(tmp_path, "f", np.stack([fixations] * 2)), "--metrics", "auc_judd")
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(pd.read_csv(out)["auc_judd"], expected, rtol=0, atol=1e-12)


def test_a_map_close_to_constant_in_float64_keeps_its_scores(tmp_path, arrays):
    """``1 + 1e-9 x`` is constant in float32 (NaN everywhere); in float64 it scores as ``x``."""
    paths, values = arrays
    x = values["saliency"].astype(np.float64)
    options = ["--gaze", str(paths["gaze"]), "--fixations", str(paths["fixations"]), "--metrics", "cc,nss,auc_judd,sim"]
    result, out = score(tmp_path, "--saliency", save(tmp_path, "x", x), *options)
    assert result.exit_code == 0, result.output
    plain = pd.read_csv(out)
    result, out = score(tmp_path, "--saliency", save(tmp_path, "near", 1 + 1e-9 * x), *options)
    assert result.exit_code == 0, result.output
    near = pd.read_csv(out)
    assert not near.isna().any().any()
    np.testing.assert_allclose(near.to_numpy(), plain.to_numpy(), rtol=0, atol=1e-5)


def test_a_centre_bias_of_any_scale_gives_the_same_scores(tmp_path, arrays):
    paths, _ = arrays
    bias = gaussian_blob(SIZE, SIZE / 4) + 0.01
    tables = []
    for scale in (1.0, 2.0**1020, 2.0**-1000):
        result, out = score(tmp_path, "--saliency", str(paths["saliency"]), "--gaze", str(paths["gaze"]), "--fixations", str(paths["fixations"]), "--centre-bias", save(tmp_path, "b", np.ldexp(bias, int(np.log2(scale)))), "--metrics", "info_gain,cc_cb,kl_cb")
        assert result.exit_code == 0, result.output
        tables.append(pd.read_csv(out))
    for table in tables[1:]:
        pd.testing.assert_frame_equal(table, tables[0], rtol=1e-12)


class Unpickled:
    """Leaves a file behind if it is ever unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize(
    "content, message",
    [
        (lambda tmp: np.ones((2, 4, 4), complex), "holds complex numbers (complex128)"),
        (lambda tmp: np.full((2, 4, 4), "a"), "holds strings"),
        (lambda tmp: np.array([[[Unpickled(tmp / "unpickled")]]], dtype=object), "holds Python objects"),
        (lambda tmp: np.ones((2, 4, 4), np.longdouble), "floats wider than float64"),
        (lambda tmp: bytes(range(256)) * 4, "is not a valid .npy file (it does not start with NumPy's .npy header)"),
        (lambda tmp: np.lib.format.MAGIC_PREFIX + b"\x01\x00garbage", "is not a valid .npy file"),
        (lambda tmp: "truncated", "is not a valid .npy file (truncated"),
    ],
)
def test_a_file_that_is_not_an_array_of_real_numbers_is_refused(tmp_path, arrays, content, message):
    paths, _ = arrays
    made = content(tmp_path)
    if isinstance(made, bytes):
        paths["saliency"].write_bytes(made)
    elif isinstance(made, str):
        paths["saliency"].write_bytes(paths["saliency"].read_bytes()[:-100])
    else:
        np.save(paths["saliency"], made, allow_pickle=True)
    result, out = score(tmp_path, "--saliency", str(paths["saliency"]), "--gaze", str(paths["gaze"]))
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"gazebench: error: --saliency {paths['saliency']} ") and message in result.stderr
    assert result.stderr.count("\n") == 1 and "allow_pickle" not in result.stderr
    assert not out.exists() and not (tmp_path / "unpickled").exists()


@pytest.mark.parametrize("shape, problem", [((0, SIZE, SIZE), "no maps"), ((N, 0, SIZE), "no pixels")])
def test_empty_arrays_are_refused(tmp_path, shape, problem):
    result, out = score(tmp_path, "--saliency", save(tmp_path, "s", np.zeros(shape)), "--gaze", save(tmp_path, "g", np.zeros(shape)))
    assert result.exit_code == 2 and problem in result.stderr and result.stderr.count("\n") == 1
    assert not out.exists()


def test_ssim_is_left_out_of_all_for_maps_smaller_than_its_window_and_refused_when_named(tmp_path):
    rng = np.random.default_rng(0)
    options = ["--saliency", save(tmp_path, "s", rng.random((2, 8, 8))), "--gaze", save(tmp_path, "g", rng.random((2, 8, 8)))]
    result, out = score(tmp_path, *options)
    assert result.exit_code == 0, result.output
    assert "ssim" not in pd.read_csv(out).columns and "left out: ssim (maps of 8x8 are smaller than its 11x11 window)" in result.output
    result, _ = score(tmp_path, *options, "--metrics", "cc,ssim")
    assert result.exit_code == 2 and "metric ssim: maps of 8x8 are smaller than its 11x11 window" in result.stderr


def test_an_unusable_out_is_refused_before_any_work(tmp_path, arrays, monkeypatch):
    import gazebench.run.arrays

    paths, _ = arrays
    monkeypatch.setattr(gazebench.run.arrays, "score_arrays", lambda *a: pytest.fail("scored before checking --out"))
    (tmp_path / "a_file").write_text("")
    for out, message in [(tmp_path, "is a folder"), (tmp_path / "a_file" / "scores.csv", "is a file, not a folder")]:
        result = CliRunner().invoke(main, ["score", "--saliency", str(paths["saliency"]), "--gaze", str(paths["gaze"]), "--out", str(out)])
        assert result.exit_code == 2, result.output
        assert result.stderr.startswith("gazebench: error: --out ") and message in result.stderr and result.stderr.count("\n") == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_refused_before_any_work(tmp_path, arrays):
    paths, _ = arrays
    folder = tmp_path / "read_only"
    folder.mkdir(mode=0o555)
    result = CliRunner().invoke(main, ["score", "--saliency", str(paths["saliency"]), "--gaze", str(paths["gaze"]), "--out", str(folder / "scores.csv")])
    assert result.exit_code == 2 and "cannot be written" in result.stderr and result.stderr.count("\n") == 1


def test_a_failed_write_is_one_line_not_a_traceback(tmp_path, arrays, monkeypatch):
    import gazebench.report.arrays

    def no_space(path, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    paths, _ = arrays
    monkeypatch.setattr(gazebench.report.arrays, "write_atomic", no_space)
    result, out = score(tmp_path, "--saliency", str(paths["saliency"]), "--gaze", str(paths["gaze"]), "--metrics", "cc")
    assert result.exit_code == 2, result.output
    assert result.stderr == f"gazebench: error: cannot write to {out}: no space left on device; no scores were written: choose another --out or free some space\n"
