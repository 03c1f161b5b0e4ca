"""Experiment files (``gazebench run --config experiment.yaml``): what a researcher relies on.

One file describes the whole experiment: each model gets its own run directory under ``out``, with
the method parameters in its config.yaml, and ``out/leaderboard.csv`` combines the models; flags
typed on the command line replace the file's values; ``out/experiment.yaml`` repeats the experiment
exactly; a bad file is one line and exit status 2; methods from a set that cannot explain a model
are left out (logged), named ones are refused.  Nothing trains: the models are random checkpoints
at 64 px (unet_gaze predicts gaze, effnet_baseline, the same encoder, does not).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from click.testing import CliRunner

from gazebench.cli import main
from gazebench.errors import UserError
from gazebench.models import effnet_baseline, unet_gaze
from gazebench.models.checkpoint import save_checkpoint
from gazebench.registry import METHODS
from gazebench.run.engine import ready_methods
from gazebench.run.experiment import TOP_KEYS, read_experiment, resolve_experiment
from gazebench.run.request import RunRequest

CLASSES = ["Normal", "CHF", "pneumonia"]
MODELS = ("unet_gaze", "effnet_baseline")
SMOOTHGRAD = {**METHODS.get("smoothgrad").default_params, "n_samples": 4}  # the file's value, the rest filled in
EXPERIMENT = {
    "out": "out",
    "data": {"name": "synth", "root": "data", "split": "all"},
    "models": [{"name": "unet_gaze", "checkpoint": "ckpt/unet_gaze.pt"}, {"name": "effnet_baseline", "checkpoint": "ckpt/effnet_baseline.pt"}],
    "methods": ["saliency", "smoothgrad:n_samples=4", {"gradcam": {}}],  # the three accepted forms
    "metrics": "nss,cc",
    "limit": 4,
}
METHOD_KEYS = ["model", "method", "metric"]


def invoke(*args):
    return CliRunner().invoke(main, [str(arg) for arg in args])


def succeeded(result):
    assert result.exit_code == 0, result.output[-3000:]
    return result


def one_error_line(result) -> str:
    """The one error line (progress bars before it are fine), exit status 2, no traceback."""
    assert result.exit_code == 2, (result.output[-3000:], result.exception)
    lines = [line for line in result.output.replace("\r", "\n").splitlines() if line.strip() and "%|" not in line]
    assert len(lines) == 1 and lines[0].startswith("gazebench: error: "), result.output
    return lines[0]


def write_yaml(path: Path, content) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False))
    return path


def random_checkpoint_of(module, name: str, path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    adapter = module.build_adapter(CLASSES, input_size=64)
    return save_checkpoint(path, name, adapter.module.state_dict(), {"model": adapter.config}, CLASSES)


@pytest.fixture(scope="module")
def experiment_folder(tmp_path_factory, tiny_synth) -> Path:
    """A folder holding experiment.yaml, its data and its two checkpoints, all named relative to the folder."""
    folder = tmp_path_factory.mktemp("experiment")
    shutil.copytree(tiny_synth, folder / "data")
    random_checkpoint_of(unet_gaze, "unet_gaze", folder / "ckpt" / "unet_gaze.pt", seed=0)
    random_checkpoint_of(effnet_baseline, "effnet_baseline", folder / "ckpt" / "effnet_baseline.pt", seed=1)
    write_yaml(folder / "experiment.yaml", EXPERIMENT)
    return folder


@pytest.fixture(scope="module")
def first_run(experiment_folder, tmp_path_factory) -> Path:
    """The experiment run once, from another working directory (the file's relative paths are the file folder's)."""
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GAZEBENCH_HOME", str(tmp_path_factory.mktemp("home")))
        patch.chdir(elsewhere)
        succeeded(invoke("run", "--config", experiment_folder / "experiment.yaml"))
    assert list(elsewhere.iterdir()) == []  # nothing written relative to the working directory
    return experiment_folder / "out"


def config_of(run_dir: Path) -> dict:
    return yaml.safe_load((run_dir / "config.yaml").read_text())


def method_rows(board: pd.DataFrame) -> pd.DataFrame:
    return board[board.role == "method"]


# 1. two models, methods with parameters in the three forms: one run directory each, one combined leaderboard


def test_each_model_gets_its_run_directory_and_the_leaderboard_combines_them(first_run, experiment_folder):
    for model in MODELS:
        config = config_of(first_run / model)
        assert config["model"]["name"] == model
        assert Path(config["model"]["checkpoint"]) == experiment_folder / "ckpt" / f"{model}.pt"
        assert config["methods"] == {"saliency": {}, "smoothgrad": SMOOTHGRAD, "gradcam": {}}
        assert set(config["metrics"]) == {"nss", "cc"}
        assert config["data"]["limit"] == 4 and Path(config["data"]["root"]) == experiment_folder / "data"
    board = pd.read_csv(first_run / "leaderboard.csv")
    methods = method_rows(board)
    assert set(board.model) == set(MODELS)
    assert set(zip(methods.model, methods.method, methods.metric)) == {(m, method, metric) for m in MODELS for method in ("saliency", "smoothgrad", "gradcam") for metric in ("nss", "cc")}
    assert (methods.n == 4).all()
    for model in MODELS:  # each model's rows are its own run's values (not the other model's)
        own = method_rows(pd.read_csv(first_run / model / "leaderboard.csv"))[["method", "metric", "mean"]]
        both = methods[methods.model == model][["method", "metric", "mean"]].merge(own, on=["method", "metric"], suffixes=("", "_own"))
        assert len(both) == 6
        pd.testing.assert_series_equal(both["mean"], both["mean_own"], check_names=False)
    unet, effnet = (methods[methods.model == model].set_index(["method", "metric"])["mean"] for model in MODELS)
    assert not unet.equals(effnet.loc[unet.index])


def test_the_resolved_file_holds_every_value(first_run, experiment_folder):
    resolved = yaml.safe_load((first_run / "experiment.yaml").read_text())
    assert Path(resolved["out"]) == first_run
    assert [(entry["name"], Path(entry["checkpoint"])) for entry in resolved["models"]] == [(model, experiment_folder / "ckpt" / f"{model}.pt") for model in MODELS]
    assert resolved["methods"] == [{"saliency": {}}, {"smoothgrad": SMOOTHGRAD}, {"gradcam": {}}]
    assert resolved["optional_methods"] == []  # all three were named
    assert resolved["limit"] == 4 and resolved["seeds"] == [0]
    assert Path(resolved["data"]["root"]) == experiment_folder / "data" and resolved["data"]["split"] == "all"
    assert set(resolved) <= set(TOP_KEYS)


# 3. the resolved file repeats the experiment exactly, from any working directory


def test_the_resolved_file_repeats_the_experiment(first_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    again = tmp_path / "again"
    succeeded(invoke("run", "--config", first_run / "experiment.yaml", "--out", again))
    assert (again / "leaderboard.csv").read_bytes() == (first_run / "leaderboard.csv").read_bytes()
    for model in MODELS:
        first, repeated = config_of(first_run / model), config_of(again / model)
        assert repeated["methods"] == first["methods"] and repeated["model"] == first["model"] and repeated["data"] == first["data"]
        assert (again / model / "leaderboard.csv").read_bytes() == (first_run / model / "leaderboard.csv").read_bytes()


# 2. flags typed on the command line replace the file's values


def test_flags_override_the_file(experiment_folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "overridden"
    succeeded(invoke("run", "--config", experiment_folder / "experiment.yaml", "--methods", "saliency", "--limit", "2", "--out", out))
    resolved = yaml.safe_load((out / "experiment.yaml").read_text())
    assert resolved["methods"] == [{"saliency": {}}] and resolved["limit"] == 2 and Path(resolved["out"]) == out
    assert [entry["name"] for entry in resolved["models"]] == list(MODELS)  # not overridden: the file's
    assert resolved["metrics"] == "nss,cc"
    for model in MODELS:
        config = config_of(out / model)
        assert config["methods"] == {"saliency": {}} and config["data"]["limit"] == 2
    methods = method_rows(pd.read_csv(out / "leaderboard.csv"))
    assert set(methods.method) == {"saliency"} and set(methods.model) == set(MODELS) and (methods.n == 2).all()
    assert not (experiment_folder / "out" / "overridden").exists()


class Stop(Exception):
    """Raised by the stand-in for run_experiment once the flags have been resolved (nothing runs)."""


@pytest.fixture
def resolved_by_cli(monkeypatch):
    """``gazebench run --config ...`` up to the resolved experiment: what the flags turned into, without running it."""
    import gazebench.api

    seen = {}

    def resolve_only(config, train_missing=True, **overrides):
        seen["experiment"] = resolve_experiment(read_experiment(Path(config)), overrides, base=Path(config).parent)
        raise Stop

    monkeypatch.setattr(gazebench.api, "run_experiment", resolve_only)

    def resolve(*args):
        result = invoke("run", *args)
        assert isinstance(result.exception, Stop), result.output
        return seen["experiment"]

    return resolve


def test_model_checkpoint_seed_and_metrics_flags_override_the_file(experiment_folder, resolved_by_cli):
    checkpoint = experiment_folder / "ckpt" / "unet_gaze.pt"
    experiment = resolved_by_cli("--config", experiment_folder / "experiment.yaml", "--model", "unet_gaze", "--checkpoint", checkpoint, "--seed", "3", "--metrics", "nss", "--batch-size", "2")
    assert [(entry.name, entry.checkpoint) for entry, _ in experiment.requests] == [("unet_gaze", checkpoint)]
    ((_, request),) = experiment.requests
    assert request.seed == 3 and request.metrics == ["nss"] and request.batch_size == 2
    assert request.limit == 4 and request.methods == ["saliency", "smoothgrad", "gradcam"]  # the file's
    assert experiment.resolved["seeds"] == [3] and experiment.resolved["metrics"] == "nss"


def test_relative_paths_on_the_command_line_are_the_working_directorys(experiment_folder, tmp_path, monkeypatch, resolved_by_cli):
    monkeypatch.chdir(tmp_path)
    experiment = resolved_by_cli("--config", experiment_folder / "experiment.yaml", "--out", "mine", "--root", "mydata", "--model", "unet_gaze", "--checkpoint", "my.pt")
    ((entry, request),) = experiment.requests
    assert experiment.out == tmp_path / "mine"
    assert request.root == tmp_path / "mydata" and entry.checkpoint == tmp_path / "my.pt"


# 4. a bad file is one line and exit status 2, before anything is written


@pytest.mark.parametrize(
    "content, message",
    [
        ({**EXPERIMENT, "modles": ["unet_gaze"]}, "unknown key(s) modles; valid keys: " + ", ".join(TOP_KEYS)),
        ({**EXPERIMENT, "models": ["nope"]}, "unknown model 'nope'; choose one of: "),
        ({**EXPERIMENT, "methods": [{"smoothgrad": {"n_sample": 4}}]}, "method smoothgrad has no parameter n_sample; its parameters: n_samples, stdev"),
        ({**EXPERIMENT, "methods": ["saliency", "smoothgrad:n_sample=4"]}, "method smoothgrad has no parameter n_sample; its parameters: n_samples, stdev"),
        ({**EXPERIMENT, "methods": ["nope"]}, "unknown method 'nope'; choose one of: "),
        ({**EXPERIMENT, "models": []}, "the experiment has no models"),
        ({key: value for key, value in EXPERIMENT.items() if key != "models"}, "the experiment has no models"),
        ({**EXPERIMENT, "models": [{"name": "unet_gaze", "weights": "x.pt"}]}, "unknown key(s) weights in unet_gaze; valid keys: name, checkpoint, label_map"),
        ({**EXPERIMENT, "data": {"name": "synth", "rot": "data"}}, "data: unknown key(s) rot; valid keys: name, root, images_root, split, labels, gaze_sigma"),
        ({**EXPERIMENT, "metrics": "nss,nope"}, "unknown metric 'nope'"),
        ("out: out\nmodels: [unet_gaze\n", "is not valid YAML"),
        ("- unet_gaze\n", "must be a mapping of keys"),
    ],
    ids=[
        "unknown-key",
        "unknown-model",
        "unknown-param-mapping",
        "unknown-param-string",
        "unknown-method",
        "empty-models",
        "no-models",
        "unknown-model-key",
        "unknown-data-key",
        "unknown-metric",
        "invalid-yaml",
        "not-a-mapping",
    ],
)
def test_a_bad_file_is_one_line(tmp_path, content, message):
    path = write_yaml(tmp_path / "experiment.yaml", content)
    line = one_error_line(invoke("run", "--config", path))
    assert message in line
    if message.startswith(("unknown key(s) modles", "is not valid YAML", "must be a mapping")):
        assert f"experiment file {path}" in line  # names the file
    assert sorted(child.name for child in tmp_path.iterdir()) == ["experiment.yaml"]  # no out folder


def test_a_missing_file_is_one_line(tmp_path):
    assert one_error_line(invoke("run", "--config", tmp_path / "nowhere.yaml")) == f"gazebench: error: experiment file {tmp_path / 'nowhere.yaml'} does not exist"


def test_checkpoint_without_model_alongside_config_is_refused(experiment_folder, tmp_path):
    line = one_error_line(invoke("run", "--config", experiment_folder / "experiment.yaml", "--checkpoint", experiment_folder / "ckpt" / "unet_gaze.pt", "--out", tmp_path / "out"))
    assert "--checkpoint with --config needs --model" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "bad",
    [{"limit": -1}, {"limit": "four"}, {"batch_size": 0}, {"seeds": ["x"]}, {"data": "synth"}, {"out": None}, {"methods": 5}, {"models": [{"name": "unet_gaze", "checkpoint": 5}]}],
    ids=["limit-negative", "limit-text", "batch-size-0", "seed-text", "data-not-mapping", "out-null", "methods-number", "checkpoint-number"],
)
def test_bad_option_values_are_refused_before_any_work(tmp_path, bad):
    with pytest.raises(UserError):
        resolve_experiment({**EXPERIMENT, **bad}, {}, base=tmp_path)


def test_two_checkpoints_of_one_model_get_their_own_run_directories_or_are_refused_up_front(tmp_path):
    content = {**EXPERIMENT, "models": [{"name": "unet_gaze", "checkpoint": "ckpt/a.pt"}, {"name": "unet_gaze", "checkpoint": "ckpt/b.pt"}]}
    try:
        experiment = resolve_experiment(content, {}, base=tmp_path)
    except UserError:
        return  # refused before any work: fine
    outs = [request.out for _, request in experiment.requests]
    assert len(set(outs)) == len(outs), outs


# 5. several seeds: one run directory per (model, seed), one leaderboard per seed


def test_each_seed_gets_its_runs_and_its_leaderboard(experiment_folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_yaml(
        tmp_path / "seeds.yaml",
        {
            **EXPERIMENT,
            "out": "seeds",
            "data": {**EXPERIMENT["data"], "root": str(experiment_folder / "data")},
            "models": [{"name": model, "checkpoint": str(experiment_folder / "ckpt" / f"{model}.pt")} for model in MODELS],
            "methods": ["smoothgrad:n_samples=2"],
            "metrics": "nss",
            "limit": 2,
            "seeds": [0, 1],
        },
    )
    succeeded(invoke("run", "--config", path))
    out = tmp_path / "seeds"
    assert sorted(child.name for child in out.iterdir() if child.is_dir()) == sorted(f"{model}-seed{seed}" for model in MODELS for seed in (0, 1))
    assert not (out / "leaderboard.csv").exists()
    boards = {}
    for seed in (0, 1):
        board = method_rows(pd.read_csv(out / f"leaderboard-seed{seed}.csv"))
        assert set(board.model) == set(MODELS) and set(board.method) == {"smoothgrad"} and (board.n == 2).all()
        for model in MODELS:
            assert config_of(out / f"{model}-seed{seed}")["seed"] == seed
            own = method_rows(pd.read_csv(out / f"{model}-seed{seed}" / "leaderboard.csv"))
            assert board[board.model == model]["mean"].tolist() == pytest.approx(own["mean"].tolist(), rel=1e-12)  # this seed's run, not the other's
        boards[seed] = board.set_index(METHOD_KEYS)["mean"].sort_index()
    assert not boards[0].equals(boards[1])  # smoothgrad's noise follows the seed


# 6. a method from a set that cannot explain the model is left out (logged); named, it is refused


@pytest.fixture(scope="module")
def adapters():
    torch.manual_seed(0)
    return {"unet_gaze": unet_gaze.build_adapter(CLASSES, input_size=64), "effnet_baseline": effnet_baseline.build_adapter(CLASSES, input_size=64)}


def test_a_set_leaves_out_what_cannot_explain_the_model(adapters, tmp_path):
    request = RunRequest.create("effnet_baseline", "all", "nss", tmp_path / "run")
    methods, left_out = ready_methods(request, adapters["effnet_baseline"])
    assert "model_heatmap" in left_out and "model_heatmap" not in methods and "effnet_baseline" in left_out["model_heatmap"]
    assert {"saliency", "gradcam", "smoothgrad"} <= set(methods)
    methods, left_out = ready_methods(RunRequest.create("unet_gaze", "all", "nss", tmp_path / "run"), adapters["unet_gaze"])
    assert "model_heatmap" in methods and "model_heatmap" not in left_out  # a model with a gaze head keeps it


def test_a_named_method_that_cannot_explain_the_model_is_refused(adapters, tmp_path):
    with pytest.raises(UserError, match="model_heatmap: model effnet_baseline predicts no heatmap"):
        ready_methods(RunRequest.create("effnet_baseline", "saliency,model_heatmap", "nss", tmp_path / "run"), adapters["effnet_baseline"])


def test_the_resolved_file_keeps_which_methods_came_from_a_set(adapters, tmp_path):
    experiment = resolve_experiment({**EXPERIMENT, "methods": ["all"]}, {}, base=tmp_path)
    assert "model_heatmap" in experiment.resolved["optional_methods"]
    path = write_yaml(tmp_path / "resolved.yaml", yaml.safe_dump(experiment.resolved, sort_keys=False))
    again = resolve_experiment(read_experiment(path), {}, base=tmp_path)
    request = next(request for entry, request in again.requests if entry.name == "effnet_baseline")
    assert "model_heatmap" in request.optional_methods and request.method_params == {name: params for item in experiment.resolved["methods"] for name, params in item.items() if params}
    _, left_out = ready_methods(request, adapters["effnet_baseline"])
    assert "model_heatmap" in left_out
    named = resolve_experiment({**EXPERIMENT, "methods": ["saliency", "model_heatmap"]}, {}, base=tmp_path)
    assert named.resolved["optional_methods"] == [] and not named.requests[0][1].optional_methods


def test_a_run_logs_the_left_out_method_and_refuses_a_named_one(experiment_folder, tmp_path):
    model = [{"name": "effnet_baseline", "checkpoint": str(experiment_folder / "ckpt" / "effnet_baseline.pt")}]
    base = {**EXPERIMENT, "data": {**EXPERIMENT["data"], "root": str(experiment_folder / "data")}, "models": model, "metrics": "nss", "limit": 2}
    from_set = write_yaml(tmp_path / "from_set.yaml", {**base, "out": "from_set", "methods": ["saliency", "model_heatmap"], "optional_methods": ["model_heatmap"]})  # as a resolved `all` says it
    succeeded(invoke("run", "--config", from_set))
    log = (tmp_path / "from_set" / "effnet_baseline" / "run.log").read_text()
    assert "left out: method model_heatmap: model_heatmap: model effnet_baseline predicts no heatmap" in log
    assert set(method_rows(pd.read_csv(tmp_path / "from_set" / "leaderboard.csv")).method) == {"saliency"}
    named = write_yaml(tmp_path / "named.yaml", {**base, "out": "named", "methods": ["saliency", "model_heatmap"]})
    line = one_error_line(invoke("run", "--config", named))
    assert "model_heatmap: model effnet_baseline predicts no heatmap" in line
    assert not (tmp_path / "named" / "effnet_baseline" / "scores").exists()
