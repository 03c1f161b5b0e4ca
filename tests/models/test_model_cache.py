"""The model cache (one entry per model, recipe content, --epochs override and seed), saying what
will be trained and for how long, `run --no-train`, and `train --out` checked before any work.

The tiny 12-image synthetic copy stands in for the embedded dataset (same generator and reader),
and the training loop is replaced by one that saves untrained weights: what is tested is where
checkpoints go, what is said, and what `run` picks, not the learning.
"""

import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from gazebench import paths
from gazebench.cli import main
from gazebench.data import DEFAULT_SYNTH_N, DEFAULT_SYNTH_SEED, synth
from gazebench.errors import UserError
from gazebench.models import unet_gaze
from gazebench.models.checkpoint import save_checkpoint, sha256_file
from gazebench.models.training import jobs, loop


@pytest.fixture
def embedded(tiny_synth):
    """$GAZEBENCH_HOME's embedded dataset is the tiny copy (no 600-image generation in a test)."""
    folder = paths.synth_dataset_dir(synth.GENERATOR_VERSION, DEFAULT_SYNTH_N, DEFAULT_SYNTH_SEED)
    folder.parent.mkdir(parents=True, exist_ok=True)
    folder.symlink_to(tiny_synth, target_is_directory=True)
    return folder


@pytest.fixture
def trainings(monkeypatch):
    """Replace the training loop by one that saves untrained weights, and the test evaluation by fixed
    values; records each training's epochs and checkpoint."""
    calls = []

    def fake_train(spec, class_names, train_samples, dev_samples, recipe, seed, out, progress=True, device="cpu"):
        calls.append({"epochs": recipe["training"]["epochs"], "out": Path(out)})
        adapter = spec.build_adapter(class_names=list(class_names), **recipe["model"])
        checkpoint = save_checkpoint(out, spec.name, adapter.module.state_dict(), {"model": dict(recipe["model"])}, class_names)
        return loop.TrainResult(adapter.eval(), checkpoint, 1, 0.5)

    monkeypatch.setattr(jobs, "train", fake_train)
    monkeypatch.setattr(jobs, "evaluate_auroc", lambda adapter, *args, **kwargs: {"per_class": dict.fromkeys(adapter.class_names, 0.5), "mean": 0.5, "ci": {}})
    monkeypatch.setattr(jobs, "estimate_seconds", lambda *args, **kwargs: 42.0)
    return calls


def default_entry(model: str = "unet_gaze") -> Path:
    """The cache entry `run` uses: the model's recipe for the embedded data, as written, seed 0."""
    return jobs.cached_checkpoint(model, unet_gaze.SPEC.recipe_for("synth"), {}, 0)


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_an_epochs_override_gets_its_own_entry_that_run_never_uses(embedded, trainings):
    recipe = unet_gaze.load_recipe("embedded")
    short = invoke("train", "--model", "unet_gaze", "--epochs", 1)
    assert short.exit_code == 0, short.output
    assert f"training unet_gaze on synth: recipe embedded, 1 epochs (--epochs; the recipe says {recipe['training']['epochs']}), seed 0" in short.output
    override = jobs.cached_checkpoint("unet_gaze", recipe, {"epochs": 1}, 0)
    assert override.is_file() and "-epochs1-" in override.name and override != default_entry()
    assert not default_entry().exists()  # the entry `run` uses is untouched
    report = yaml.safe_load(override.with_suffix(".report.yaml").read_text())
    assert (report["recipe"], report["overrides"], report["epochs"]) == ("embedded", {"epochs": 1}, 1)
    assert report["recipe_sha256"] == jobs.recipe_hash(recipe)

    refused = invoke("run", "--model", "unet_gaze", "--no-train", "--methods", "gradcam", "--metrics", "nss", "--limit", 1, "--out", embedded.parent / "run")
    assert refused.exit_code == 2
    (message,) = [line for line in refused.output.splitlines() if line.startswith("gazebench: error: ")]
    assert str(default_entry()) in message and "`gazebench train --model unet_gaze`" in message
    assert not (embedded.parent / "run").exists() and [call["epochs"] for call in trainings] == [1]

    full = invoke("train", "--model", "unet_gaze")
    assert full.exit_code == 0, full.output
    assert [call["epochs"] for call in trainings] == [1, recipe["training"]["epochs"]]
    assert yaml.safe_load(default_entry().with_suffix(".report.yaml").read_text())["overrides"] == {}
    override_sha = sha256_file(override)
    _, used, sha = jobs.adapter_for_run("unet_gaze", None, "synth", None, None, "cpu", train_missing=False)
    assert used == default_entry() and sha == sha256_file(default_entry()) != override_sha


def test_the_cache_key_follows_the_recipe_settings_not_its_description():
    recipe = unet_gaze.load_recipe("embedded")
    key = jobs.recipe_key(recipe, {})
    assert key.startswith("embedded-") and default_entry().name == f"{key}-seed0.pt"
    assert jobs.recipe_key({**recipe, "description": "reworded", "departures": []}, {}) == key
    faster = {**recipe, "training": {**recipe["training"], "lr": 0.01}}
    assert jobs.recipe_key(faster, {}) != key
    assert jobs.recipe_key(recipe, jobs.recipe_overrides(recipe, recipe["training"]["epochs"])) == key  # --epochs equal to the recipe's
    assert jobs.recipe_key(recipe, jobs.recipe_overrides(recipe, 1)) == key.replace("embedded-", "embedded-epochs1-")


def test_run_says_what_it_trains_and_how_long_before_training_once(embedded, trainings, monkeypatch, capsys):
    said_before, fake_train = [], jobs.train

    def train_noting_stderr(*args, **kwargs):
        said_before.append(capsys.readouterr().err)
        return fake_train(*args, **kwargs)

    monkeypatch.setattr(jobs, "train", train_noting_stderr)
    epochs = unet_gaze.load_recipe("embedded")["training"]["epochs"]
    _, used, _ = jobs.adapter_for_run("unet_gaze", None, "synth", None, None, "cpu")
    assert used == default_entry() and [call["out"] for call in trainings] == [default_entry()]
    lines = said_before[0].strip().splitlines()
    assert lines[0].startswith("no trained unet_gaze for the embedded data in the model cache yet: training it once")
    assert lines[-1] == (
        f"training unet_gaze on synth: recipe embedded, {epochs} epochs, seed 0, 9 train / 1 dev / 2 test images, on cpu, "
        f"into {default_entry()}; expected about 42 s (an estimate from one timed training step; early stopping may end it sooner)"
    )
    jobs.adapter_for_run("unet_gaze", None, "synth", None, None, "cpu")
    assert len(trainings) == 1  # the cached model is reused


def under_a_file(tmp_path: Path) -> Path:
    (tmp_path / "file.txt").touch()
    return tmp_path / "file.txt" / "model.pt"


def unwritable_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        (folder / "probe").touch()
    except PermissionError:
        return folder
    pytest.skip("this user writes into read-only folders (root)")


@pytest.mark.parametrize(
    "make_out, problem",
    [
        (lambda tmp: tmp, "is a folder; give the file to write"),
        (under_a_file, "--out .*file.txt/model.pt: .*file.txt is a file, not a folder"),
        (lambda tmp: unwritable_folder(tmp) / "model.pt", "--out .*model.pt cannot be written \\(permission denied"),
    ],
    ids=["a-folder", "under-a-file", "read-only-folder"],
)
def test_train_refuses_an_unwritable_out_before_reading_any_data(tmp_path, tiny_synth, trainings, monkeypatch, make_out, problem):
    out = make_out(tmp_path)
    monkeypatch.setattr(jobs, "open_dataset", lambda *args, **kwargs: pytest.fail("data read before --out was checked"))
    result = invoke("train", "--model", "unet_gaze", "--root", tiny_synth, "--out", out)
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert result.output.startswith("gazebench: error: ") and re.search(problem, result.output)
    with pytest.raises(UserError, match=problem):
        jobs.train_job("unet_gaze", "synth", tiny_synth, None, 1, 0, out, device="cpu")
    assert trainings == []
