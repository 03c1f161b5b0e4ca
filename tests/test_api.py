"""The Python API: wrap a model that exists only as code, benchmark it, find the run directory."""

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from torch import nn

from gazebench.api import run_benchmark, wrap_model
from gazebench.errors import UserError
from gazebench.models.checkpoint import state_dict_sha256

CLASSES = ["Normal", "CHF", "pneumonia"]


class TinyCNN(nn.Module):
    def __init__(self, n_classes: int = 3):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
        )  # fmt: skip
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(16, n_classes)

    def forward(self, x):
        return self.head(self.pool(self.features(x)).flatten(1))


def tiny_model(n_classes: int = 3) -> TinyCNN:
    torch.manual_seed(0)
    return TinyCNN(n_classes)


def test_wrap_model_builds_an_adapter_and_finds_the_cam_layer_by_name_object_or_rule():
    model = tiny_model()
    by_name = wrap_model(model, CLASSES, "features", input_size=32, name="tiny")
    assert by_name.cam_layer is model.features and by_name.class_names == CLASSES and by_name.input_size == 32
    assert wrap_model(model, CLASSES, model.features[4], input_size=32).cam_layer is model.features[4]
    assert wrap_model(model, CLASSES, None, input_size=32).cam_layer is model.features  # the rule: last 4-D map
    grey = wrap_model(model, CLASSES, "features", input_size=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    inputs = grey.preprocess(torch.full((1, 1, 48, 48), 0.75))
    assert inputs.shape == (1, 3, 32, 32) and torch.allclose(inputs, torch.ones_like(inputs))


def test_wrap_model_mistakes_are_one_line_user_errors():
    model = tiny_model()
    with pytest.raises(UserError, match=r"^custom: the model returns \(2, 3\) for 2 images, but 2 class logits per image were expected$"):
        wrap_model(model, ["a", "b"], "features", input_size=32)
    with pytest.raises(UserError, match=r"cam_layer Conv2d is not a module inside the model"):
        wrap_model(model, CLASSES, nn.Conv2d(1, 1, 1), input_size=32)
    with pytest.raises(UserError, match=r"mean and std need one value per input channel"):
        wrap_model(model, CLASSES, "features", mean=(0.5,), std=(0.2, 0.2))
    with pytest.raises(UserError, match=r"^custom: the model fails on a \[2, 1, 32, 32\] input \(.*\); check input_size and mean/std"):
        wrap_model(model, CLASSES, "features", input_size=32, mean=(0.5,), std=(0.2,))
    with pytest.raises(UserError, match=r"class names must be a non-empty list without repeats"):
        wrap_model(model, ["a", "a", "b"], "features", input_size=32)
    assert model.training  # the check's forward pass restored the training mode


@pytest.fixture(scope="module")
def benchmark_run(tiny_synth, tmp_path_factory):
    model = tiny_model()
    adapter = wrap_model(model, CLASSES, "features", input_size=32, name="tiny")
    out = tmp_path_factory.mktemp("api") / "run"
    leaderboard = run_benchmark(adapter, root=tiny_synth, split="all", methods="saliency,gradcam", metrics="nss", out=out, limit=4, batch_size=4)
    return model, out, leaderboard


def test_run_benchmark_returns_the_leaderboard_and_fills_the_run_directory(benchmark_run):
    model, out, leaderboard = benchmark_run
    methods = leaderboard[leaderboard.role == "method"]
    assert sorted(zip(methods.method, methods.metric)) == [("gradcam", "nss"), ("saliency", "nss")]
    assert methods.n.tolist() == [4, 4]
    assert ((methods.ci_low <= methods["mean"]) & (methods["mean"] <= methods.ci_high)).all()
    assert set(leaderboard[leaderboard.role == "floor"].method) == {"centre_bias", "uniform", "edges"}
    pd.testing.assert_frame_equal(pd.read_csv(out / "leaderboard.csv"), leaderboard.reset_index(drop=True), check_dtype=False)
    scores = pd.read_parquet(out / "scores")
    assert len(scores) == 20 and set(scores.model) == {"tiny"} and set(scores.method) == {"saliency", "gradcam", "centre_bias", "uniform", "edges"}
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["model"]["name"] == "tiny" and config["model"]["class_names"] == CLASSES
    assert config["model"]["checkpoint_sha256"] == state_dict_sha256(model)
    assert set(scores.checkpoint) == {state_dict_sha256(model)[:12]}
    assert config["data"]["split"] == "all" and config["data"]["limit"] == 4
    assert (out / "run.log").is_file() and (out / "leaderboard.md").is_file()


def test_run_benchmark_maps_other_classes_with_the_default_label_map(tiny_synth, tmp_path):
    outputs = ["No Finding", "Edema", "Cardiomegaly", "Pneumonia", "Consolidation"]
    adapter = wrap_model(tiny_model(len(outputs)), outputs, "features", input_size=32, name="chexpert_style")
    leaderboard = run_benchmark(adapter, root=tiny_synth, split="all", methods="saliency", metrics="nss", out=tmp_path / "run", limit=2)
    assert leaderboard[leaderboard.method == "saliency"].n.tolist() == [2]
    scores = pd.read_parquet(tmp_path / "run" / "scores")
    assert set(scores.target) <= set(CLASSES) and set(scores.pred) <= set(CLASSES)


def test_run_benchmark_rejects_unknown_options_and_names(tiny_synth, tmp_path):
    adapter = wrap_model(tiny_model(), CLASSES, "features", input_size=32)
    with pytest.raises(UserError, match=r"^run_benchmark: unknown options \['epochs'\]; choose from: batch_size, device, "):
        run_benchmark(adapter, root=tiny_synth, out=tmp_path / "run", epochs=3)
    with pytest.raises(UserError, match=r"unknown method 'nope'"):
        run_benchmark(adapter, root=tiny_synth, methods="saliency,nope", out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_api_and_cli_default_to_the_same_run_directory(tiny_synth, tmp_path, monkeypatch):
    """``torchvision:resnet50``: both front doors make ``runs/torchvision__resnet50-...`` (no ':' in a folder name)."""
    from click.testing import CliRunner

    from gazebench.cli import main
    from gazebench.models.checkpoint import save_checkpoint
    from gazebench.registry import MODELS

    torch.manual_seed(0)
    adapter = MODELS.get("torchvision:resnet50").build_adapter(class_names=CLASSES, input_size=32)
    checkpoint = save_checkpoint(tmp_path / "resnet50.pt", "torchvision:resnet50", adapter.module.state_dict(), {"model": adapter.config}, CLASSES)
    options = {"split": "all", "methods": "saliency", "metrics": "nss", "limit": "2"}
    for front_door in ("cli", "api"):
        (tmp_path / front_door).mkdir()
        monkeypatch.chdir(tmp_path / front_door)
        if front_door == "cli":
            arguments = ["run", "--model", "torchvision:resnet50", "--checkpoint", str(checkpoint), "--root", str(tiny_synth)]
            result = CliRunner().invoke(main, arguments + [f"--{key}={value}" for key, value in options.items()])
            assert result.exit_code == 0, result.output
        else:
            run_benchmark(adapter, root=tiny_synth, **{**options, "limit": 2})
    expected = "torchvision__resnet50-synth-all-seed0"
    for front_door in ("cli", "api"):
        runs = tmp_path / front_door / "runs"
        assert [path.name for path in runs.iterdir()] == [expected] and (runs / expected / "leaderboard.csv").is_file()
    cli_scores, api_scores = (pd.read_parquet(tmp_path / door / "runs" / expected / "scores") for door in ("cli", "api"))
    np.testing.assert_array_equal(cli_scores.value, api_scores.value)  # the same weights give the same numbers through either door
