"""A run survives unreadable images: each is skipped, counted and named (run.log, summary, report); --strict stops."""

import shutil
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from gazebench.cli import main
from gazebench.data.datasets import open_dataset


def run_args(out, root, checkpoint, *extra):
    return ["run", "--model", "unet_gaze", "--data", "synth", "--root", str(root), "--split", "all", "--checkpoint", str(checkpoint),
            "--methods", "saliency", "--metrics", "nss,cc", "--batch-size", "3", "--limit", "6", "--out", str(out), *extra]


@pytest.fixture(params=["truncated", "empty"])
def damaged_copy(request, tmp_path, tiny_synth):
    """A copy of the tiny dataset whose second image is truncated half-way, or empty (0 bytes)."""
    root = shutil.copytree(tiny_synth, tmp_path / "data")
    dataset = open_dataset("synth", root, "all", 224)
    record = dataset.records.iloc[1]
    image = Path(record.image_path)
    data = image.read_bytes()
    image.write_bytes(data[: len(data) // 2] if request.param == "truncated" else b"")
    return root, str(record.image_id)


def test_an_unreadable_image_is_skipped_counted_and_named(damaged_copy, tmp_path, random_checkpoint):
    root, image_id = damaged_copy
    out = tmp_path / "run"
    result = CliRunner().invoke(main, run_args(out, root, random_checkpoint))
    assert result.exit_code == 0, result.output
    log = (out / "run.log").read_text()
    assert "skipped: 1 unreadable image files" in log
    assert f"skipped: unreadable image {image_id}:" in log
    assert "unreadable image" in result.output, "the summary after the leaderboard names the skip"
    assert "unreadable image" in (out / "leaderboard.md").read_text()
    scores = pd.read_parquet(out / "scores")
    assert image_id not in set(scores.image_id) and scores.image_id.nunique() == 5


def test_strict_stops_at_the_unreadable_image(damaged_copy, tmp_path, random_checkpoint):
    root, image_id = damaged_copy
    result = CliRunner().invoke(main, run_args(tmp_path / "run", root, random_checkpoint, "--strict"))
    assert result.exit_code == 2
    errors = [line for line in result.output.replace("\r", "\n").splitlines() if "gazebench: error: " in line]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    assert image_id in errors[0] and "cannot read image" in errors[0]
