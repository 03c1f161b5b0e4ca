"""The sanity check (cascading model-parameter randomisation): ranks, layers, cascade, verdicts, files, CLI."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from click.testing import CliRunner
from scipy.stats import spearmanr
from torch import nn

from gazebench.cli import main
from gazebench.data.datasets import open_dataset
from gazebench.methods.base import Method
from gazebench.models.base import ModelAdapter
from gazebench.registry import METHODS
from gazebench.api import sanity_check
from gazebench.metrics.ops import average_ranks
from gazebench.run.sanity import forward_order, layer_groups, pair_batches, randomised_cascade, reinitialise, spearman
from tests.fixtures.tiny_models import TinyCNN as SharedTinyCNN

CLASSES = ["Normal", "CHF", "pneumonia"]
GRID = 32


class TinyCNN(SharedTinyCNN):
    """The shared tiny CNN plus ``unused``: parameters that forward never calls."""

    def __init__(self):
        super().__init__()
        self.unused = nn.Linear(2, 2)


def tiny_adapter() -> ModelAdapter:
    torch.manual_seed(0)
    module = TinyCNN().eval()
    return ModelAdapter(name="tiny", module=module, class_names=CLASSES, cam_layer=module.conv2, input_size=GRID)


class ImageItself(Method):
    """A model-independent 'explanation': the input image (must fail the check)."""

    name = "image_itself"

    def attribute(self, adapter, inputs, targets, seeds, extra=()):
        return inputs[:, :1]


class ConstantMap(Method):
    """A dead map (all zeros): every similarity is undefined."""

    name = "constant_map"

    def attribute(self, adapter, inputs, targets, seeds, extra=()):
        return torch.zeros_like(inputs[:, :1])


@pytest.fixture
def toy_methods(monkeypatch):
    METHODS.names()  # load the built-in methods first
    monkeypatch.setitem(METHODS._entries, ImageItself.name, ImageItself)
    monkeypatch.setitem(METHODS._entries, ConstantMap.name, ConstantMap)


@pytest.fixture(scope="module", autouse=True)
def module_home(tmp_path_factory):
    """The module-scoped fixtures below never read or write the user's cache either."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GAZEBENCH_HOME", str(tmp_path_factory.mktemp("gazebench_home")))
        yield


@pytest.fixture(scope="module")
def dataset(tiny_synth):
    return open_dataset("synth", tiny_synth, "all", GRID)


def state(adapter: ModelAdapter) -> dict[str, torch.Tensor]:
    return {name: value.clone() for name, value in adapter.module.state_dict().items()}


# --- Spearman ---------------------------------------------------------------------------------


def reference_spearman(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """scipy.stats.spearmanr per pair of maps (NaN for a constant map)."""
    values = []
    for a, b in zip(first, second):
        if np.ptp(a) == 0 or np.ptp(b) == 0:
            values.append(math.nan)
        else:
            values.append(spearmanr(a.ravel(), b.ravel()).statistic)
    return np.array(values)


def test_fast_spearman_matches_scipy_with_ties():
    generator = torch.Generator().manual_seed(0)
    first = torch.rand(6, 20, 20, generator=generator, dtype=torch.float64)
    second = first + 0.3 * torch.rand(6, 20, 20, generator=generator, dtype=torch.float64)
    first[1] = (first[1] * 4).floor()  # heavy ties
    second[2] = (second[2] - 0.5).clamp_min(0)  # ReLU-style: many tied zeros
    second[3] = -first[3]  # perfect inverse
    first[4] = 0.25  # constant: undefined
    fast = spearman(first, second).numpy()
    slow = reference_spearman(first.numpy(), second.numpy())
    np.testing.assert_allclose(fast, slow, atol=1e-6, equal_nan=True)
    assert math.isnan(fast[4]) and fast[3] == pytest.approx(-1.0)


def test_average_ranks_match_scipy_rankdata():
    from scipy.stats import rankdata

    values = torch.tensor([[3.0, 1.0, 3.0, 2.0, 1.0, 3.0], [0.0, 0.0, 0.0, 0.0, 5.0, -1.0]])
    np.testing.assert_array_equal(average_ranks(values).numpy(), rankdata(values.numpy(), axis=1))


def test_non_finite_pixel_gives_nan():
    maps = torch.rand(2, 8, 8, dtype=torch.float64)
    broken = maps.clone()
    broken[0, 0, 0] = math.nan
    values = spearman(maps, broken)
    assert math.isnan(values[0]) and values[1] == pytest.approx(1.0)


# --- layers and the cascade --------------------------------------------------------------------


def test_layer_groups_are_contiguous_top_first_and_at_most_steps():
    names = [f"layer{i}" for i in range(10)]  # forward order
    groups = layer_groups(names, 4)
    assert [len(group) for group in groups] == [2, 2, 3, 3]
    assert [name for group in groups for name in group] == names[::-1]
    assert layer_groups(names[:3], 8) == [["layer2"], ["layer1"], ["layer0"]]


def test_forward_order_skips_layers_the_classifier_never_calls(dataset):
    adapter = tiny_adapter()
    batches, _ = pair_batches(adapter, dataset, 4, 4, 0, torch.device("cpu"))
    called, unused = forward_order(adapter, batches[0])
    assert called == ["conv1", "conv2", "fc"] and unused == ["unused"]


def differing_layers(adapter: ModelAdapter, trained: dict[str, torch.Tensor]) -> set[str]:
    return {name.rpartition(".")[0] for name, value in adapter.module.state_dict().items() if not torch.equal(value, trained[name])}


def test_cascade_randomises_exactly_the_top_k_groups_deterministically_and_leaves_the_caller_alone():
    adapter = tiny_adapter()
    trained = state(adapter)
    groups = [["fc"], ["conv2"], ["conv1"]]
    seen = {}
    for step, randomised in randomised_cascade(adapter, groups, seed=5):
        assert differing_layers(randomised, trained) == {name for group in groups[:step] for name in group}
        seen[step] = state(randomised)
    again = {step: state(randomised) for step, randomised in randomised_cascade(adapter, groups, seed=5)}
    other = state(list(randomised_cascade(adapter, groups, seed=6))[-1][1])
    assert all(torch.equal(seen[step][name], again[step][name]) for step in seen for name in trained)
    assert not torch.equal(seen[3]["fc.weight"], other["fc.weight"])
    assert all(torch.equal(value, adapter.module.state_dict()[name]) for name, value in trained.items())


def test_reinitialise_without_reset_parameters_draws_normal_weights_and_zero_biases():
    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(4000))
            self.bias = nn.Parameter(torch.ones(3))

    module = Scale()
    reinitialise(module, seed=1)
    assert module.weight.std().item() == pytest.approx(0.02, rel=0.05) and torch.all(module.bias == 0)
    twin = Scale()
    reinitialise(twin, seed=1)
    assert torch.equal(module.weight, twin.weight)


# --- the check -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checked(dataset, tmp_path_factory):
    METHODS.names()
    METHODS._entries[ImageItself.name] = ImageItself
    METHODS._entries[ConstantMap.name] = ConstantMap
    try:
        adapter = tiny_adapter()
        before = state(adapter)
        out = tmp_path_factory.mktemp("sanity")
        result = sanity_check(adapter, dataset, ["saliency", "gradcam", "image_itself", "constant_map"], limit=6, batch_size=4, device="cpu", seed=0, steps=3, threshold=0.5, out=out)
    finally:
        del METHODS._entries[ImageItself.name], METHODS._entries[ConstantMap.name]
    return result, adapter, before, out


def cell(result, method: str, step: int, measure: str = "spearman") -> pd.Series:
    rows = result.summary
    return rows[(rows.method == method) & (rows.step == step) & (rows.measure == measure)].iloc[0]


def test_step_zero_is_identical_for_every_method(checked):
    result, *_ = checked
    for method in ("saliency", "gradcam", "image_itself"):
        for measure in ("spearman", "ssim"):
            assert cell(result, method, 0, measure)["mean"] == pytest.approx(1.0, abs=1e-6)


def test_model_independent_method_fails_and_gradients_pass(checked):
    result, *_ = checked
    assert result.failing == ["image_itself"]
    assert result.verdicts["image_itself"] == "image_itself: FAILS — maps survive randomisation (Spearman 1.00 at full randomisation > 0.5)"
    assert result.verdicts["saliency"].startswith("saliency: passes — Spearman")
    saliency = [cell(result, "saliency", step)["mean"] for step in range(4)]
    assert saliency[-1] < saliency[1] < saliency[0] and saliency[-1] < 0.5
    assert cell(result, "image_itself", 3)["mean"] == pytest.approx(1.0)


def test_constant_maps_give_counted_nan_not_a_crash(checked):
    result, *_ = checked
    dead = cell(result, "constant_map", 3)
    assert math.isnan(dead["mean"]) and dead["n"] == 0 and dead["n_nan"] == 6
    assert result.verdicts["constant_map"].startswith("constant_map: undetermined")


def test_the_callers_adapter_is_untouched(checked):
    _, adapter, before, _ = checked
    assert all(torch.equal(value, adapter.module.state_dict()[name]) for name, value in before.items())


def test_output_files(checked):
    result, _, _, out = checked
    table = pd.read_csv(out / "sanity.csv", keep_default_na=False, na_values=["NaN", "nan", ""])
    assert list(table.columns) == ["method", "step", "label", "layers", "measure", "mean", "ci_low", "ci_high", "n", "n_nan"]
    assert len(table) == 4 * 4 * 2
    assert table[table.step == 3].layers.iloc[0] == "conv1"
    assert set(table.label) == {"trained", "fc", "conv2", "conv1"}
    low, high = table[(table.method == "saliency") & (table.step == 3) & (table.measure == "spearman")][["ci_low", "ci_high"]].iloc[0]
    assert low <= cell(result, "saliency", 3)["mean"] <= high
    markdown = (out / "sanity.md").read_text()
    assert "- image_itself: FAILS — maps survive randomisation" in markdown
    assert "NaN: constant_map step 3 spearman: 6 of 6 pairs" in markdown
    assert "Left as trained: 1 parameterised module(s)" in markdown
    assert (out / "sanity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["layer_groups"] == [["fc"], ["conv2"], ["conv1"]] and config["unused_layers"] == ["unused"] and config["threshold"] == 0.5


def test_same_seed_same_numbers(checked, dataset, toy_methods):
    result, *_ = checked
    again = sanity_check(tiny_adapter(), dataset, ["saliency"], limit=6, batch_size=3, device="cpu", seed=0, steps=3)
    first = result.summary[result.summary.method == "saliency"].reset_index(drop=True)
    pd.testing.assert_frame_equal(first, again.summary.reset_index(drop=True))


# --- command line -------------------------------------------------------------------------------


def test_cli_writes_the_outputs_and_prints_the_verdicts(tmp_path, tiny_synth, random_checkpoint):
    out = tmp_path / "sanity"
    args = ["sanity", "--model", "unet_gaze", "--checkpoint", str(random_checkpoint), "--root", str(tiny_synth), "--split", "all"]
    result = CliRunner().invoke(main, [*args, "--methods", "saliency", "--limit", "2", "--steps", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "saliency: passes" in result.output or "saliency: FAILS" in result.output
    assert {"sanity.csv", "sanity.md", "sanity.png", "config.yaml"} <= {path.name for path in out.iterdir()}
    assert yaml.safe_load((out / "config.yaml").read_text())["model"]["name"] == "unet_gaze"


def test_cli_unknown_method_is_one_line_and_exit_2(tmp_path):
    out = tmp_path / "sanity"
    result = CliRunner().invoke(main, ["sanity", "--model", "unet_gaze", "--methods", "saliency,nope", "--out", str(out)])
    assert result.exit_code == 2
    assert result.output.strip().startswith("gazebench: error: unknown method 'nope'; choose one of:")
    assert len(result.output.strip().splitlines()) == 1 and not out.exists()


def test_labels_leave_out_the_path_every_layer_shares():
    from gazebench.aggregate.sanity import group_label, shared_prefix

    names = ["net.head.fc", "net.body.block2.conv", "net.body.block1.conv"]
    assert shared_prefix(names) == "net."
    assert shared_prefix(["fc", "conv"]) == ""
    assert group_label(names[1:], "net.") == "body.block2.conv … body.block1.conv (2)"
