"""Several runs in one leaderboard: what may be combined, compared on the images every run scored, models marked like with like."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from gazebench.aggregate.leaderboard import build_leaderboard
from gazebench.aggregate.runs import combine_runs
from gazebench.cli import main
from gazebench.errors import UserError
from gazebench.run.store import ROW_SCHEMA, RunStore


def write_run(folder, protocol="p1", dataset="synth", split="test", model="densenet", methods=("gradcam",), images=range(8), offset=0.0):
    """A run directory with one score shard per method in the row schema (nss against the merged gaze)."""
    store = RunStore(folder)
    store.scores.mkdir(parents=True)
    rng = np.random.default_rng(len(str(folder)))
    for index, method in enumerate(methods):
        rows = pd.DataFrame([{"dataset": dataset, "split": split, "image_id": f"i{i}", "patient_id": f"p{i // 2}", "reader": "all", "target": "CHF",
                              "label": 1, "pred": "CHF", "prob": 0.9, "correct": True, "model": model, "checkpoint": "abc", "method": method,
                              "method_params": "{}", "metric": "nss", "value": offset + i / 10 + rng.normal(0, 0.01), "protocol": protocol} for i in images])
        store.write_shard(index, method, rows[list(ROW_SCHEMA)])
    return folder


def test_combine_runs_joins_models_scored_on_the_same_images(tmp_path):
    first = write_run(tmp_path / "a", model="densenet", methods=("gradcam", "saliency"))
    second = write_run(tmp_path / "b", model="unet", methods=("gradcam",))
    combined = combine_runs([first, second])
    assert len(combined.rows) == 24 and list(combined.rows.columns) == list(ROW_SCHEMA) and combined.note is None
    board = build_leaderboard(combined.rows, n_boot=50)
    assert set(zip(board.model, board.method)) == {("densenet", "gradcam"), ("densenet", "saliency"), ("unet", "gradcam")}
    assert set(board.vs_best_model) <= {"best", "ns", "worse", "better", "-"}


@pytest.mark.parametrize(("change", "message"), [
    ({"protocol": "p2"}, r"^the runs use different scoring protocols and cannot share a leaderboard \(.*a: p1; .*b: p2\)$"),
    ({"split": "dev"}, r"^the runs use different datasets or splits .*synth test.*synth dev"),
    ({"dataset": "egd"}, r"^the runs use different datasets or splits"),
    ({"model": "densenet"}, r"all hold model 'densenet' with method 'gradcam'; combine runs of different models or methods$"),
])
def test_combine_runs_refuses_what_cannot_share_a_leaderboard(tmp_path, change, message):
    first = write_run(tmp_path / "a", model="densenet")
    second = write_run(tmp_path / "b", **{"model": "unet", **change})
    with pytest.raises(UserError, match=message):
        combine_runs([first, second])


def test_combine_runs_refuses_a_directory_without_scores(tmp_path):
    with pytest.raises(UserError, match="holds no score rows"):
        combine_runs([write_run(tmp_path / "a"), tmp_path / "empty"])


def test_runs_on_different_images_are_compared_on_the_images_all_of_them_scored(tmp_path):
    # the case: one run on 62 images, one with --limit 16 (here 8 and 4 of them, and 2 extra)
    first = write_run(tmp_path / "a", model="densenet", methods=("gradcam", "saliency"), images=range(8))
    second = write_run(tmp_path / "b", model="unet", methods=("gradcam",), images=[0, 1, 2, 3, 20, 21])
    combined = combine_runs([first, second])
    assert set(combined.rows.image_id) == {"i0", "i1", "i2", "i3"} and len(combined.rows) == 3 * 4
    assert combined.note == (f"the runs scored different images: compared on the 4 units (image, target, reader) all 2 runs scored "
                             f"({first} keeps 4 of 8; {second} keeps 4 of 6)")
    board = build_leaderboard(combined.rows, n_boot=50)
    assert (board.n == 4).all()


def test_runs_that_share_no_image_are_refused_in_one_line(tmp_path):
    first = write_run(tmp_path / "a", model="densenet", images=range(4))
    second = write_run(tmp_path / "b", model="unet", images=range(4, 8))
    with pytest.raises(UserError, match=r"^the runs share no scored image \(units image, target, reader per run: .*a: 4; .*b: 4\); run the models on the same split and images$"):
        combine_runs([first, second])


def test_a_method_only_one_model_ran_is_not_best_among_models(tmp_path):
    # densenet ran gradcam and deeplift, unet only gradcam: deeplift has no other model to be best against
    first = write_run(tmp_path / "a", model="densenet", methods=("gradcam", "deeplift"))
    second = write_run(tmp_path / "b", model="unet", methods=("gradcam",), offset=1.0)
    board = build_leaderboard(combine_runs([first, second]).rows, n_boot=200).set_index(["model", "method"])
    assert board.loc[("densenet", "deeplift"), "vs_best_model"] == "-"
    assert board.loc[("unet", "gradcam"), "vs_best_model"] == "best" and board.loc[("densenet", "gradcam"), "vs_best_model"] == "worse"
    # within densenet's own block deeplift is still ranked against gradcam, on the same images
    assert board.loc["densenet"].vs_best.tolist().count("best") == 1


def test_leaderboard_command_says_which_images_it_compares_on(tmp_path):
    first = write_run(tmp_path / "a", model="densenet", methods=("gradcam",), images=range(8))
    second = write_run(tmp_path / "b", model="unet", methods=("gradcam",), images=range(4))
    result = CliRunner().invoke(main, ["leaderboard", str(first), str(second), "--format", "csv"])
    assert result.exit_code == 0, result.output
    note = f"gazebench: the runs scored different images: compared on the 4 units (image, target, reader) all 2 runs scored ({first} keeps 4 of 8; {second} keeps 4 of 4)"
    assert result.stderr.strip() == note
    board = pd.read_csv(io.StringIO(result.stdout))
    assert board.n.tolist() == [4, 4]
    markdown = CliRunner().invoke(main, ["leaderboard", str(first), str(second)])
    assert note.removeprefix("gazebench: ") in markdown.stdout


def test_leaderboard_command_refuses_runs_without_a_shared_image(tmp_path):
    first = write_run(tmp_path / "a", model="densenet", images=range(4))
    second = write_run(tmp_path / "b", model="unet", images=range(4, 8))
    result = CliRunner().invoke(main, ["leaderboard", str(first), str(second)])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("gazebench: error: the runs share no scored image")
