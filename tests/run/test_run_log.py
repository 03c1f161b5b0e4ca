"""run.log puts what matters first and counts each thing once, for the directory as a whole.

A method whose maps are constant (an all-zero Grad-CAM) is a warning at the top; a metric the
data cannot define for some images (no lesion mask for a Normal image) is one note per metric,
not a NaN warning for every method; a rerun and a resumed run give the same log.
"""

import torch
from click.testing import CliRunner

from gazebench.cli import main
from gazebench.methods.base import Method
from gazebench.registry import METHODS


class DeadOnFirstImages(Method):
    """All-zero maps for the first two images of each batch, the input elsewhere."""

    name = "dead_on_two"
    kind = "gradient"

    def attribute(self, adapter, inputs, targets, seeds, extra=()):
        maps = inputs[:, :1].clone() + 1e-3 * torch.arange(inputs.shape[-1], dtype=inputs.dtype, device=inputs.device)
        maps[:2] = 0
        return maps


def run(out, root, checkpoint, methods="saliency,dead_on_two"):
    args = ["run", "--model", "unet_gaze", "--data", "synth", "--root", str(root), "--split", "all", "--checkpoint", str(checkpoint),
            "--methods", methods, "--batch-size", "3", "--limit", "6", "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return result


def test_constant_maps_come_first_and_by_design_nans_are_one_note_per_metric(monkeypatch, tmp_path, tiny_synth, random_checkpoint):
    METHODS.names()
    monkeypatch.setitem(METHODS._entries, DeadOnFirstImages.name, DeadOnFirstImages)
    out = tmp_path / "run"
    result = run(out, tiny_synth, random_checkpoint)
    lines = (out / "run.log").read_text().splitlines()
    assert lines[1].startswith("warning: dead_on_two: 4 map(s) constant (e.g. all zero), every metric NaN; left out of the leaderboard")
    assert not any(line.startswith("warning: saliency") for line in lines), "saliency's maps are fine: no warning for them"
    assert not any("/iou:" in line or "/hit_rate:" in line for line in lines), "NaNs the data cause are not per-method warnings"
    undefined = [line for line in lines if line.startswith("note: iou is undefined for")]
    assert len(undefined) == 1 and "no localisation mask for the explained class" in undefined[0]
    assert "4 map(s) constant" in result.output, "the summary printed after the leaderboard repeats the warnings"
    assert "4 map(s) constant" in (out / "leaderboard.md").read_text()
    rerun = run(out, tiny_synth, random_checkpoint)
    assert (out / "run.log").read_text().splitlines() == lines, "a rerun neither appends nor loses lines"
    assert rerun.output.count("4 map(s) constant") == 1


def test_a_resumed_run_counts_the_whole_directory(monkeypatch, tmp_path, tiny_synth, random_checkpoint):
    METHODS.names()
    monkeypatch.setitem(METHODS._entries, DeadOnFirstImages.name, DeadOnFirstImages)
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    run(whole, tiny_synth, random_checkpoint)
    run(resumed, tiny_synth, random_checkpoint)
    for shard in sorted((resumed / "scores").glob("batch00000-*.parquet")):  # as if killed after the second batch
        shard.unlink()
    run(resumed, tiny_synth, random_checkpoint)
    assert (resumed / "run.log").read_text().splitlines()[1:] == (whole / "run.log").read_text().splitlines()[1:]
