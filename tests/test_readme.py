"""The README's promises: the set-up commands, a test command that needs nothing outside the clone, its examples work."""

import re
from pathlib import Path

import torch
from torch import nn

from gazebench.models.base import ModelAdapter
from gazebench.registry import Registry

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text()


def test_quick_start_has_the_main_command_and_the_test_command():
    assert "pip install . && gazebench run --model unet_gaze --methods all" in README
    assert 'pip install ".[test]" && python -m pytest' in README
    assert 'pip install ".[test]" && python -m pytest' in (Path(__file__).parents[1] / ".ci" / "run").read_text()


def test_quick_start_gives_the_cpu_only_install_and_the_fast_test_path():
    assert "pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu\npip install . && gazebench run" in README
    assert 'python -m pytest -m "not slow"' in README


def test_the_test_command_needs_nothing_outside_the_clone():
    """The [test] extra holds what the tests import (statsmodels: the Holm reference); the NIH images ship in tests/."""
    extra = re.search(r"^test = \[(.*?)\]", (ROOT / "pyproject.toml").read_text(), re.MULTILINE).group(1)  # no tomllib on Python 3.10
    assert set(re.findall(r'"([\w.-]+)', extra)) >= {"pytest", "pytest-benchmark", "hypothesis", "statsmodels"}
    samples = ROOT / "tests" / "data" / "nih_cxr14_samples"
    assert sorted(path.name for path in samples.iterdir()) == ["00000001_000.png", "00027426_000.png", "NOTICE.md"]
    assert "https://nihcc.app.box.com/v/ChestXray-NIHCC" in (samples / "NOTICE.md").read_text()


def test_plugin_example_registers_and_makes_maps():
    code = re.search(r"```python\n# my_plugin.py\n(.*?)```", README, re.DOTALL).group(1)
    namespace: dict = {}
    exec(compile(code, "my_plugin.py", "exec"), namespace)
    registry = Registry("methods")
    method_class = registry.register()(namespace["GradientTimesSign"])
    assert registry.names() == ["gradient_x_sign"]
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1)
    module = nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    adapter = ModelAdapter("tiny", module, ["a", "b", "c"], conv, input_size=16)
    images = torch.rand(2, 1, 32, 32)
    maps = method_class()(adapter, images, torch.tensor([0, 2]), seeds=[1, 2], grid=24)
    assert maps.shape == (2, 24, 24) and bool((maps >= 0).all()) and float(maps.sum()) > 0


def test_python_api_example_runs(tmp_path, monkeypatch, tiny_synth):
    """The README's notebook example, on the tiny synthetic copy (the real one is 600 images)."""
    import gazebench.api

    code = re.search(r"```python\n# my_model_benchmark.py\n(.*?)```", README, re.DOTALL).group(1)
    real_run = gazebench.api.run_benchmark
    monkeypatch.setattr(gazebench.api, "run_benchmark", lambda adapter, **kw: real_run(adapter, **{**kw, "root": tiny_synth, "split": "all", "limit": 4}))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "my_model_benchmark.py", "exec"), namespace)
    board = namespace["leaderboard"]
    assert set(board.method) == {"saliency", "gradcam", "centre_bias", "uniform", "edges"} and set(board.metric) == {"nss", "cc"}
    assert (tmp_path / "runs" / "tiny" / "leaderboard.csv").is_file()


def test_metric_plugin_example_scores_maps():
    from gazebench.metrics.base import GazeTargets

    code = re.search(r"```python\n# my_metric.py\n(.*?)```", README, re.DOTALL).group(1)
    namespace: dict = {}
    exec(compile(code, "my_metric.py", "exec"), namespace)
    registry = Registry("metrics")
    metric = registry.register()(namespace["PeakDensity"])()
    assert registry.names() == ["peak_density"]
    density = torch.zeros(2, 8, 8)
    density[:, 2, 3], density[:, 5, 5] = 0.75, 0.25
    maps = torch.zeros(2, 8, 8)
    maps[0, 2, 3] = maps[1, 5, 5] = 1.0
    values = metric(maps, GazeTargets(density=density))
    torch.testing.assert_close(values, torch.tensor([1.0, 1 / 3]))
    assert torch.isnan(metric(maps, GazeTargets(density=torch.zeros(2, 8, 8)))).all()
