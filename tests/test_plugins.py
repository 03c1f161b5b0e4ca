"""Plugins (docs/plugins.md): the example plugin's method, metric, model and dataset, and an installed plugin end to end.

The example package (tests/plugins/gazebench_example_plugin) is imported from its source for the
property tests; the slow test installs it, and a plugin that fails to import
(tests/plugins/gazebench_broken_plugin), with pip into temporary folders and runs the command line on
them: the plugin's names appear, a run scores the plugin's method and metric on the plugin's model and
dataset, and the broken plugin costs one warning line, nothing else.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from captum.attr import NoiseTunnel, Saliency
from torch import nn

from gazebench.errors import UserError
from gazebench.methods.base import image_seed
from gazebench.metrics.base import GazeTargets
from gazebench.metrics.scoring import score_maps
from gazebench.models.base import ModelAdapter
from gazebench.registry import METHODS, METRICS
from tests.fixtures.tiny_models import TinyCNN

ROOT = Path(__file__).parents[1]
PLUGINS = ROOT / "tests" / "plugins"
EXAMPLE = PLUGINS / "gazebench_example_plugin"
GUIDE = ROOT / "docs" / "plugins.md"
CLASSES = ["Normal", "CHF", "pneumonia"]
GRID = 32
CLOSE = {"rtol": 1e-5, "atol": 1e-7}


@pytest.fixture
def plugin(monkeypatch):
    """The example plugin's package, imported from its source folder."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    import gazebench_example_plugin.dataset
    import gazebench_example_plugin.methods
    import gazebench_example_plugin.metrics
    import gazebench_example_plugin.model

    return gazebench_example_plugin


@pytest.fixture
def tiny() -> ModelAdapter:
    torch.manual_seed(0)
    module = TinyCNN()
    return ModelAdapter(name="tiny", module=module.eval(), class_names=["a", "b", "c"], cam_layer=module.conv2, input_size=GRID)


def images_and_seeds(count: int, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    images = torch.rand(count, 1, GRID, GRID, generator=torch.Generator().manual_seed(100 + offset))
    return images, torch.arange(offset, offset + count) % 3, [image_seed(7, f"img{offset + i}") for i in range(count)]


# --------------------------------------------------------------------------- the guide shows the package's files


def test_every_file_the_guide_shows_is_the_example_plugins_file():
    """Each code block of docs/plugins.md that starts with ``# gazebench_example_plugin/...`` is that file, verbatim."""
    blocks = re.findall(r"```\w+\n# (gazebench_example_plugin/\S+)\n(.*?)```", GUIDE.read_text(), re.DOTALL)
    shown = {name: text for name, text in blocks}
    package = ["methods.py", "metrics.py", "model.py", "dataset.py", "local_egd.yaml"]
    assert set(shown) == {"gazebench_example_plugin/pyproject.toml", *(f"gazebench_example_plugin/gazebench_example_plugin/{name}" for name in package)}
    for name, text in shown.items():
        assert (PLUGINS / name).read_text() == text, f"docs/plugins.md shows another {name} than tests/plugins/{name}"


# --------------------------------------------------------------------------- the method: vargrad


def test_vargrad_equals_captums_noise_tunnel_with_the_same_noise(plugin, tiny, monkeypatch):
    """The raw map is Captum's NoiseTunnel(Saliency, nt_type="vargrad", abs=False) fed gazebench's per-image noise."""
    from gazebench.methods.gradient import gaussian_noise

    method = plugin.methods.VarGrad(n_samples=5, stdev=0.2)
    images, targets, seeds = images_and_seeds(3)
    inputs = tiny.preprocess(images)
    ours = method.attribute(tiny, inputs, targets, seeds)
    noise = gaussian_noise(inputs, seeds, 5, 0.2)
    monkeypatch.setattr(torch, "normal", lambda mean, std: noise)  # NoiseTunnel's draw: [B * n, C, S, S], image-major
    reference = NoiseTunnel(Saliency(tiny.module)).attribute(inputs.clone().requires_grad_(True), nt_type="vargrad", nt_samples=5, stdevs=1.0, target=targets, abs=False)
    assert ours.shape == inputs.shape
    torch.testing.assert_close(ours, reference.detach(), **CLOSE)


def test_vargrad_maps_do_not_depend_on_batch_chunks_or_neighbours(plugin, tiny):
    method = plugin.methods.VarGrad(n_samples=3)
    images, targets, seeds = images_and_seeds(3)
    batched = method(tiny, images, targets, seeds, GRID)
    single = torch.cat([method(tiny, images[i : i + 1], targets[i : i + 1], seeds[i : i + 1], GRID) for i in range(3)])
    torch.testing.assert_close(batched, single, **CLOSE)
    for rows in (1, 4):  # --max-batch-elements
        method.max_rows = rows
        torch.testing.assert_close(method(tiny, images, targets, seeds, GRID), batched, **CLOSE)
    others, other_targets, other_seeds = images_and_seeds(2, offset=9)
    with_others = method(tiny, torch.cat([images[:1], others]), torch.cat([targets[:1], other_targets]), seeds[:1] + other_seeds, GRID)
    torch.testing.assert_close(with_others[0], batched[0], **CLOSE)


def test_vargrad_draws_its_noise_from_the_image_seeds(plugin, tiny):
    method = plugin.methods.VarGrad(n_samples=4)
    images, targets, seeds = images_and_seeds(2)
    first = method(tiny, images, targets, seeds, GRID)
    assert torch.equal(first, method(tiny, images, targets, seeds, GRID))
    assert not torch.allclose(first, method(tiny, images, targets, [seed + 1 for seed in seeds], GRID))
    assert first.shape == (2, GRID, GRID) and bool((first >= 0).all()) and float(first.sum()) > 0
    assert all(parameter.grad is None and parameter.requires_grad for parameter in tiny.module.parameters())


def test_vargrad_holds_a_models_extra_inputs_fixed_row_by_row(plugin):
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4, 3)

        def forward(self, x, extra):
            return self.fc(self.conv(x).relu().mean((2, 3))) * extra[:, :1]

    torch.manual_seed(0)
    network = Scaled().eval()
    adapter = ModelAdapter("scaled", network, ["a", "b", "c"], network.conv, input_size=GRID, extra_inputs=lambda batch: ())
    images, targets, seeds = images_and_seeds(2)
    extra = torch.tensor([[1.0], [3.0]])
    maps = plugin.methods.VarGrad(n_samples=4)(adapter, images, targets, seeds, GRID, extra=(extra,))
    for row in range(2):
        fixed = ModelAdapter("fixed", _FixedExtra(network, extra[row : row + 1]), ["a", "b", "c"], network.conv, input_size=GRID)
        alone = plugin.methods.VarGrad(n_samples=4)(fixed, images[row : row + 1], targets[row : row + 1], seeds[row : row + 1], GRID)
        torch.testing.assert_close(maps[row], alone[0], **CLOSE)


class _FixedExtra(nn.Module):
    def __init__(self, network, extra_row):
        super().__init__()
        self.network, self.extra_row = network, extra_row

    def forward(self, x):
        return self.network(x, self.extra_row.expand(len(x), -1))


def test_vargrad_parameters_are_typed_checked_and_take_captums_names(plugin):
    VarGrad = plugin.methods.VarGrad
    method = VarGrad(nt_samples=6, stdevs=1)
    assert method.params == {"n_samples": 6, "stdev": 1.0} and method.passes() == (6, 6)
    for params, message in [
        ({"n_samples": 1}, "vargrad: n_samples must be >= 2"),
        ({"stdev": 0.0}, "vargrad: stdev must be > 0"),
        ({"n_samples": 2.5}, "vargrad: n_samples must be an int"),
        ({"samples": 4}, "vargrad has no parameter samples; its parameters: n_samples, stdev"),
    ]:
        with pytest.raises(UserError, match=re.escape(message)):
            VarGrad(**params)


def test_vargrad_refuses_a_model_that_cuts_the_gradient_naming_the_module(plugin, tiny):
    class Detach(nn.Module):
        def forward(self, x):
            return x.detach()

    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Sequential(nn.ReLU(), Detach()), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).train()
    adapter = ModelAdapter("cut", module, ["a", "b", "c"], module[0], input_size=GRID)
    with pytest.raises(UserError, match=r"^method vargrad cannot explain model cut: module '1\.1' \(Detach\) cuts the gradient to the input$"):
        plugin.methods.VarGrad().check_model(adapter)
    assert all(part.training for part in module.modules())  # the probe restores the training flags
    plugin.methods.VarGrad().check_model(tiny)  # an ordinary model passes


# --------------------------------------------------------------------------- the metric: fixations_in_top


def fixations_in_top_by_hand(saliency: np.ndarray, counts: np.ndarray, area: float) -> float:
    """The definition, one image at a time: the fixations on pixels at least the k-th largest value."""
    k = math.ceil(area * saliency.size)
    threshold = np.sort(saliency.ravel())[::-1][k - 1]
    return float(counts[saliency >= threshold].sum() / counts.sum())


def test_fixations_in_top_equals_the_definition_and_is_nan_where_undefined(plugin):
    generator = torch.Generator().manual_seed(0)
    maps = torch.rand(6, 20, 24, generator=generator)
    maps[1] = (maps[1] * 4).round()  # ties at the threshold
    counts = (torch.rand(6, 20, 24, generator=generator) > 0.9).float() * torch.randint(1, 3, (6, 20, 24), generator=generator)
    maps[3], counts[4], maps[5, 2, 2] = 0.5, 0.0, math.nan  # constant map, no fixations, a NaN pixel
    for area in (0.2, 0.05, 1.0):
        metric = plugin.metrics.FixationsInTop(area=area)
        values = metric(maps, GazeTargets(fixations=counts))
        expected = [fixations_in_top_by_hand(maps[i].numpy(), counts[i].numpy(), area) for i in range(3)]
        torch.testing.assert_close(values[:3], torch.tensor(expected, dtype=values.dtype))
        assert values[3:].isnan().all()
        one_at_a_time = torch.cat([metric(maps[i : i + 1], GazeTargets(fixations=counts[i : i + 1])) for i in range(6)])
        torch.testing.assert_close(values, one_at_a_time, equal_nan=True)


def test_fixations_in_top_scores_in_chunks_like_the_builtin_metrics(plugin):
    generator = torch.Generator().manual_seed(1)
    maps, counts = torch.rand(40, 16, 16, generator=generator), (torch.rand(40, 16, 16, generator=generator) > 0.8).float()
    metrics = {"fixations_in_top": plugin.metrics.FixationsInTop(), "nss": METRICS.get("nss")()}
    scores = score_maps(maps, GazeTargets(fixations=counts), metrics, chunk=7)
    torch.testing.assert_close(scores["fixations_in_top"], metrics["fixations_in_top"](maps, GazeTargets(fixations=counts)).double())
    with pytest.raises(ValueError, match=r"area must be in \(0, 1\]"):
        plugin.metrics.FixationsInTop(area=0.0)


# --------------------------------------------------------------------------- the model and the dataset


def test_small_cnn_and_local_egd_read_train_and_explain_together(plugin, tiny_synth):
    from gazebench.data.sample import collate

    spec = plugin.model.SPEC
    adapter = spec.build_adapter(class_names=CLASSES, **spec.recipe_for("synth")["model"])
    assert adapter.input_size == 128 and adapter.cam_layer is adapter.module.features and adapter.mean == (0.5,)
    dataset = plugin.dataset.LocalEGDDataset(tiny_synth, split="all", grid=GRID)
    assert dataset.name == "local_egd" and dataset.manifest.title == "Local gaze collection (EGD layout)" and dataset.convention.sigma == 150
    assert dataset.class_names == CLASSES and len(dataset) > 0
    batch = collate([dataset[i] for i in range(2)])
    loss = spec.loss(adapter, batch)
    assert loss.dim() == 0 and torch.isfinite(loss)
    maps = METHODS.get("gradcam")()(adapter, batch.images, batch.labels.argmax(1), [0, 1], GRID)
    assert maps.shape == (2, GRID, GRID)
    with pytest.raises(UserError, match="Local gaze collection"):
        plugin.dataset.LocalEGDDataset(tiny_synth / "nowhere")


# --------------------------------------------------------------------------- installed, on the command line


def install(package: str, target: Path) -> None:
    """``pip install --target`` from a copy of the package's source (the build leaves build/ and *.egg-info beside it)."""
    source = target.parent / f"{package}-source"
    shutil.copytree(PLUGINS / package, source, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index", "--target", str(target), str(source)]
    subprocess.run(command, check=True, capture_output=True, text=True)


def gazebench(pythonpath: list[Path], *args: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, pythonpath))}
    return subprocess.run([sys.executable, "-m", "gazebench.cli", *args], check=False, capture_output=True, text=True, env=environment, cwd=ROOT, timeout=600)


def lines_naming(process: subprocess.CompletedProcess, name: str) -> list[str]:
    return [line for line in re.split(r"[\r\n]+", process.stdout + process.stderr) if name in line]


@pytest.mark.slow
def test_an_installed_plugin_runs_and_a_broken_one_costs_one_warning_line(tmp_path, tiny_synth, monkeypatch):
    good, broken = tmp_path / "good", tmp_path / "broken"
    install("gazebench_example_plugin", good)
    install("gazebench_broken_plugin", broken)

    listed = gazebench([good, broken], "list")
    assert listed.returncode == 0, listed.stderr
    for kind, name in [("methods", "vargrad"), ("metrics", "fixations_in_top"), ("models", "small_cnn"), ("datasets", "local_egd")]:
        assert re.search(rf"\b{name}\b", listed.stdout), f"{kind}: {name} not listed"
    (warning,) = lines_naming(listed, "broken_saliency")
    assert "failed to load" in warning

    torch.manual_seed(0)
    monkeypatch.syspath_prepend(str(good))
    from gazebench_example_plugin.model import NAME, build_adapter

    from gazebench.models.checkpoint import save_checkpoint

    adapter = build_adapter(CLASSES, input_size=64)  # random weights: nothing trains
    checkpoint = save_checkpoint(tmp_path / "small_cnn.pt", NAME, adapter.module.state_dict(), {"model": adapter.config}, CLASSES)
    out = tmp_path / "run"
    args = ["run", "--model", "small_cnn", "--checkpoint", str(checkpoint), "--data", "local_egd", "--root", str(tiny_synth), "--split", "all", "--limit", "4", "--batch-size", "4"]
    ran = gazebench([good, broken], *args, "--methods", "vargrad:n_samples=4,saliency", "--metrics", "fixations_in_top,nss", "--out", str(out))
    assert ran.returncode == 0, ran.stderr[-3000:]
    (warning,) = lines_naming(ran, "broken_saliency")
    assert "failed to load" in warning
    board = pd.read_csv(out / "leaderboard.csv")
    methods = board[board.role == "method"]
    assert set(methods.method) == {"vargrad", "saliency"} and set(methods.metric) == {"fixations_in_top", "nss"}
    assert methods.n.eq(4).all() and methods["mean"].notna().all()
    scores = pd.read_parquet(out / "scores")
    assert set(scores.dataset) == {"local_egd"} and set(scores.model) == {"small_cnn"}
    assert scores.protocol.str.endswith("-egd-sigma150px-unweighted").all()
