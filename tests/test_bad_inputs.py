"""Every class of user mistake, through the command line: one line naming the problem, exit 2, nothing written.

The README ("The command line"): a mistake you can make -- an unknown model, method, metric or
dataset, a missing data folder or file, an unreadable checkpoint, a missing column -- prints one
line naming the problem and the valid choices, and exits with status 2; nothing is written.  To
those the issue adds a corrupt image and gaze entirely outside the image.  Each test checks the
message, the exit code, and that the --out folder was not created (or, when it existed, that its
files are untouched and nothing was added).  No model is trained: the failures come before a
model is needed, or from a checkpoint the test writes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from gazebench.cli import main
from gazebench.models.checkpoint import save_checkpoint
from gazebench.models.unet_gaze import build_adapter
from gazebench.registry import DATASETS, METHODS, METRICS, MODELS
from tests.fixtures import egd_layout as egd
from tests.fixtures import mimic_layout, reflacx_layout

CLASSES = ["Normal", "CHF", "pneumonia"]
LOCK = ".lock"  # the run folder's lock file (a refused run removes the one it created)


def invoke(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_line(result, *words: str) -> str:
    """Exit 2, no traceback, and stderr is one line ``gazebench: error: ...`` holding every word."""
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("gazebench: error: "), result.stderr
    for word in words:
        assert word in result.stderr, (word, result.stderr)
    return result.stderr


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes); {} when it does not exist."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()} if Path(folder).exists() else {}


@pytest.fixture
def release(tmp_path) -> Path:
    """A tiny EGD release (4 images; use --split all)."""
    root = tmp_path / "egd"
    egd.write_egd(root, n_patients=3)
    return root


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    """A valid unet_gaze checkpoint (random weights, input 32): the runs below fail before or at loading it."""
    torch.manual_seed(0)
    adapter = build_adapter(CLASSES, input_size=32)
    return save_checkpoint(tmp_path / "unet_gaze.pt", "unet_gaze", adapter.module.state_dict(), {"model": adapter.config}, CLASSES)


@pytest.fixture
def previous_run(tmp_path) -> Path:
    """An existing --out folder holding a file of an earlier run."""
    folder = tmp_path / "previous"
    folder.mkdir()
    (folder / "leaderboard.md").write_text("an earlier leaderboard\n")
    return folder


def run(root: Path, checkpoint: Path, out: Path, *extra: str, data: str = "egd"):
    return invoke("run", "--model", "unet_gaze", "--data", data, "--root", root, "--split", "all", "--checkpoint", checkpoint, "--out", out, "--device", "cpu", *extra)


def assert_untouched(before: dict[str, bytes], folder: Path) -> None:
    after = snapshot(folder)
    assert after == before, sorted(after)


# ---------------------------------------------------------------------- unknown names


def choices(registry) -> str:
    return ", ".join(registry.names())


UNKNOWN = [
    (["run", "--model", "nope"], f"unknown model 'nope'; choose one of: {choices(MODELS)}"),
    (["run", "--model", "unet_gaze", "--methods", "saliency,nope"], "unknown method 'nope'; choose one of:"),
    (["run", "--model", "unet_gaze", "--metrics", "kl,nope"], f"unknown metric 'nope'; choose one of: {choices(METRICS)}"),
    (["run", "--model", "unet_gaze", "--data", "nope"], f"unknown dataset 'nope'; choose one of: {choices(DATASETS)}"),
    (["train", "--model", "nope"], "unknown model 'nope'; choose one of:"),
    (["train", "--model", "unet_gaze", "--data", "nope"], "unknown dataset 'nope'; choose one of:"),
    (["sanity", "--model", "unet_gaze", "--methods", "nope"], "unknown method 'nope'; choose one of:"),
    (["data", "check", "--dataset", "nope"], "unknown dataset 'nope'; choose one of:"),
    (["data", "prepare", "--dataset", "nope"], "unknown dataset 'nope'; choose one of:"),
    (["list", "nope"], "'nope' is not one of 'datasets', 'methods', 'metrics', 'models'"),
]


@pytest.mark.parametrize("args, message", UNKNOWN, ids=[" ".join(a[:1] + a[-2:]) for a, _ in UNKNOWN])
def test_an_unknown_name_lists_the_choices(tmp_path, args, message):
    out = tmp_path / "out"
    takes_out = args[0] in ("run", "train", "sanity")
    result = invoke(*args, *(["--out", out] if takes_out else []))
    assert_one_line(result, message)
    assert not out.exists() and not (tmp_path / "out.report.yaml").exists()


def test_an_unknown_metric_of_score_lists_the_choices(tmp_path):
    arrays = {name: tmp_path / f"{name}.npy" for name in ("saliency", "gaze")}
    for path in arrays.values():
        np.save(path, np.full((2, 8, 8), 1 / 64))
    out = tmp_path / "scores.csv"
    result = invoke("score", "--saliency", arrays["saliency"], "--gaze", arrays["gaze"], "--metrics", "nope", "--out", out)
    assert_one_line(result, f"unknown metric 'nope'; choose one of: {choices(METRICS)}")
    assert not out.exists()


def test_an_unknown_name_leaves_an_existing_run_folder_untouched(previous_run):
    before = snapshot(previous_run)
    assert_one_line(invoke("run", "--model", "unet_gaze", "--methods", "nope", "--out", previous_run), "unknown method 'nope'")
    assert snapshot(previous_run) == before
    assert METHODS.names()  # the registry the message lists


# ---------------------------------------------------------------------- missing data folder


@pytest.mark.parametrize("command", ["run", "train", "train into a new folder", "sanity", "prepare"])
def test_a_missing_data_folder_names_it_and_the_option(tmp_path, command, checkpoint):
    nowhere, out = tmp_path / "nowhere", tmp_path / "out"
    common = ["--data", "egd", "--root", nowhere]
    args = {
        "run": ["run", "--model", "unet_gaze", *common, "--checkpoint", checkpoint, "--out", out],
        "train": ["train", "--model", "unet_gaze", *common, "--epochs", "1", "--out", out],
        "train into a new folder": ["train", "--model", "unet_gaze", *common, "--epochs", "1", "--out", out / "model.pt"],
        "sanity": ["sanity", "--model", "unet_gaze", *common, "--checkpoint", checkpoint, "--out", out],
        "prepare": ["data", "prepare", "--dataset", "egd", "--root", nowhere, "--workers", "0"],
    }[command]
    assert_one_line(invoke(*args), f"data directory {nowhere} does not exist", "--root")
    assert not out.exists() and not nowhere.exists()


def test_data_check_of_a_missing_folder_reports_it_and_exits_2(tmp_path):
    nowhere = tmp_path / "nowhere"
    result = invoke("data", "check", "--dataset", "reflacx", "--root", nowhere, "--workers", "0")
    assert_one_line(result, f"reflacx at {nowhere} cannot be used as it is")
    assert f"data directory {nowhere} does not exist" in result.stdout and not nowhere.exists()


def test_real_data_without_root_names_the_option(tmp_path, checkpoint):
    out = tmp_path / "out"
    assert_one_line(invoke("run", "--model", "unet_gaze", "--data", "reflacx", "--checkpoint", checkpoint, "--out", out), "--data reflacx needs --root")
    assert not out.exists()


def test_a_missing_data_folder_leaves_an_existing_run_folder_untouched(tmp_path, checkpoint, previous_run):
    before = snapshot(previous_run)
    assert_one_line(run(tmp_path / "nowhere", checkpoint, previous_run), "does not exist")
    assert_untouched(before, previous_run)


# ---------------------------------------------------------------------- a file of the release missing


def test_egd_without_fixations_csv_names_the_file(release, checkpoint, tmp_path):
    (release / "fixations.csv").unlink()
    out = tmp_path / "out"
    assert_one_line(run(release, checkpoint, out), f"missing file {release / 'fixations.csv'}", "--root")
    assert not out.exists()
    check = invoke("data", "check", "--dataset", "egd", "--root", release, "--workers", "0")
    assert_one_line(check, f"egd at {release} cannot be used as it is")
    assert "missing file fixations.csv" in check.stdout


def test_reflacx_without_metadata_names_the_files_expected(tmp_path, checkpoint):
    root = reflacx_layout.write_reflacx(tmp_path / "reflacx")
    reflacx_layout.remove_metadata(root, 1, 2, 3)
    out = tmp_path / "out"
    assert_one_line(run(root, checkpoint, out, data="reflacx"), "no REFLACX metadata file found", "metadata_phase_1.csv")
    assert not out.exists()


def test_mimic_without_its_split_file_names_it_and_prepares_nothing(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("GAZEBENCH_HOME", str(home))
    root = tmp_path / "mimic"
    mimic_layout.write_mimic_jpg(root)
    (root / mimic_layout.SPLIT_FILE).unlink()
    assert_one_line(invoke("data", "prepare", "--dataset", "mimic", "--root", root, "--workers", "0"), f"missing file {root / mimic_layout.SPLIT_FILE}")
    assert snapshot(home) == {}


# ---------------------------------------------------------------------- a wrong or missing column


def test_a_renamed_column_names_the_file_and_the_column(release, checkpoint, tmp_path, previous_run):
    egd.write_csv(release, "fixations.csv", egd.read_csv(release, "fixations.csv").rename(columns={"X_ORIGINAL": "x_original"}))
    out = tmp_path / "out"
    assert_one_line(run(release, checkpoint, out), f"{release / 'fixations.csv'} lacks the column(s) X_ORIGINAL", "expected at least: DICOM_ID, FPOGD, X_ORIGINAL, Y_ORIGINAL")
    assert not out.exists()
    before = snapshot(previous_run)
    assert_one_line(run(release, checkpoint, previous_run), "lacks the column(s) X_ORIGINAL")
    assert_untouched(before, previous_run)


def test_missing_position_columns_name_both_spellings(tmp_path, checkpoint):
    root = reflacx_layout.write_reflacx(tmp_path / "reflacx")
    reflacx_layout.drop_column(reflacx_layout.fixations_path(root, "P300R000401"), "y_position")
    out = tmp_path / "out"
    assert_one_line(run(root, checkpoint, out, data="reflacx"), "P300R000401/fixations.csv lacks the column(s) x_position/y_position or average_x_position/average_y_position")
    assert not out.exists()


def test_a_table_that_is_not_csv_names_the_file(release, checkpoint, tmp_path):
    master = release / "master_sheet.csv"
    master.write_bytes(master.read_bytes() + "caf\xe9,\xff\n".encode("latin-1"))  # a row that is not UTF-8
    out = tmp_path / "out"
    assert_one_line(run(release, checkpoint, out), f"cannot parse {release / 'master_sheet.csv'} as CSV", "replace the file with the release's copy")
    assert not out.exists()


# ---------------------------------------------------------------------- an unreadable checkpoint


def other_model_checkpoint(path: Path) -> Path:
    return save_checkpoint(path, "effnet_baseline", {"weight": torch.zeros(1)}, {"model": {}}, CLASSES)


def weights_of_another_network(path: Path) -> Path:
    return save_checkpoint(path, "unet_gaze", {"not.a.layer": torch.zeros(3)}, {"model": {"input_size": 32}}, CLASSES)


def truncated(path: Path, valid: Path) -> Path:
    path.write_bytes(valid.read_bytes()[: valid.stat().st_size // 2])
    return path


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda path, valid: path.write_bytes(b"\x00garbage\xff" * 50) and path, ["cannot read checkpoint", "not an intact gazebench checkpoint", "gazebench train --model unet_gaze"]),
        (truncated, ["cannot read checkpoint", "not an intact gazebench checkpoint"]),
        (lambda path, valid: torch.save({"weights": torch.zeros(2)}, path) or path, ["cannot read checkpoint", "not a gazebench-checkpoint-1 file"]),
        (lambda path, valid: other_model_checkpoint(path), ["is for model 'effnet_baseline', not 'unet_gaze'"]),
        (lambda path, valid: weights_of_another_network(path), ["does not fit model 'unet_gaze'"]),
        (lambda path, valid: path.with_name("absent.pt"), ["checkpoint not found", "absent.pt", "gazebench train --model unet_gaze"]),
    ],
    ids=["garbage bytes", "truncated", "another format", "another model", "another network's weights", "absent"],
)
def test_an_unreadable_checkpoint_is_one_line(release, checkpoint, tmp_path, previous_run, make, words):
    bad = make(tmp_path / "bad.pt", checkpoint)
    out = tmp_path / "out"
    assert_one_line(run(release, bad, out), str(bad), *words)
    assert not out.exists()
    before = snapshot(previous_run)
    assert_one_line(run(release, bad, previous_run), str(bad))
    assert_untouched(before, previous_run)


# ---------------------------------------------------------------------- gaze outside the image


def test_gaze_entirely_outside_the_image_is_counted_and_run_stops_saying_so(release, checkpoint, tmp_path):
    fixations = egd.read_csv(release, "fixations.csv")
    fixations["X_ORIGINAL"] = "500"  # every image is 80 px wide
    egd.write_csv(release, "fixations.csv", fixations)
    out = tmp_path / "out"
    assert_one_line(run(release, checkpoint, out), "split 'all' of egd has no image with gaze to score")
    assert not out.exists()
    check = invoke("data", "check", "--dataset", "egd", "--root", release, "--workers", "0")
    assert check.exit_code == 0, check.output
    assert f"fixations beyond the image's width or height (dropped): {len(fixations) - 4}" in check.stdout  # the -1 rows are counted apart
    assert "fixations off the displayed image (-1, dropped): 4" in check.stdout
    assert "no usable gaze (images with gaze: 0)" in check.stdout


# ---------------------------------------------------------------------- a corrupt image


def test_data_check_names_each_corrupt_image_and_exits_2_when_none_decodes(release):
    """Run and train skip and count an image that does not decode (another test's subject); `data check` names it."""
    master = egd.read_csv(release, "master_sheet.csv")
    paths = [egd.image_path(release, master, index) for index in range(len(master))]
    egd.truncate_image(paths[1])  # the header (and size) reads, the pixels do not
    egd.garble_image(paths[2])  # not an image at all
    check = invoke("data", "check", "--dataset", "egd", "--root", release, "--workers", "0")
    assert check.exit_code == 0, check.output
    assert "2 unreadable image(s)" in check.stdout and str(paths[1]) in check.stdout and str(paths[2]) in check.stdout
    for path in paths:
        egd.garble_image(path)
    check = invoke("data", "check", "--dataset", "egd", "--root", release, "--workers", "0")
    assert check.exit_code == 2 and "Traceback" not in check.output
    # the last line of stderr (before it: the decoding progress bar, drawn with carriage returns)
    assert check.stderr.endswith("\n") and check.stderr.splitlines()[-1] == f"gazebench: error: egd at {release} cannot be used as it is; fix the errors listed above"
    assert f"none of the {len(paths)} images checked decodes" in check.stdout
