"""What --methods accepts: names, sets, parameters (checked before any work), and what `list methods` shows."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from gazebench.cli import main
from gazebench.errors import UserError
from gazebench.methods.specs import STUDY_SETS, parse_value, select_methods, set_members, split_items
from gazebench.registry import METHODS


def test_parameters_follow_their_method_and_library_names_are_accepted():
    selection = select_methods("smoothgrad:nt_samples=25,stdevs=0.1,gradcam")
    assert selection.names == ["smoothgrad", "gradcam"]
    assert selection.params == {"smoothgrad": {"nt_samples": 25, "stdevs": 0.1}}
    method = METHODS.get("smoothgrad")(**selection.params["smoothgrad"])
    assert method.params == {"n_samples": 25, "stdev": 0.1}  # Captum's names mapped onto ours
    assert not selection.optional  # named on their own: refused, not left out, when they cannot explain a model


def test_values_are_read_as_numbers_booleans_or_text():
    assert [parse_value(text) for text in ("25", "0.1", "1e-3", "true", "False", "black")] == [25, 0.1, 0.001, True, False, "black"]
    assert split_items("a:k=1,j=x,b,c:z=2") == [("a", {"k": 1, "j": "x"}), ("b", {}), ("c", {"z": 2})]


def test_sets_expand_in_order_and_their_methods_are_optional():
    selection = select_methods("kim2022")
    assert selection.names == list(STUDY_SETS["kim2022"]) == ["saliency", "gradcam", "deeplift", "conductance", "gradshap", "smoothgrad"]
    assert selection.optional == frozenset(selection.names)
    assert set(select_methods("shamsul2023").names) == {"lime", "kernelshap", "gradcam", "lrp"}
    cam = select_methods("cam").names
    assert {"gradcam", "gradcam_plus_plus", "scorecam", "xgradcam", "hirescam", "layercam", "eigencam"} <= set(cam)
    assert all(METHODS.get(name).family == "cam" for name in cam)
    assert select_methods("all").names == METHODS.fixed_names()


def test_a_method_named_beside_its_set_takes_its_parameters_and_is_no_longer_optional():
    selection = select_methods(["kim2022", {"smoothgrad": {"n_samples": 4}}])
    assert selection.names.count("smoothgrad") == 1 and selection.params == {"smoothgrad": {"n_samples": 4}}
    assert "smoothgrad" not in selection.optional and "saliency" in selection.optional


@pytest.mark.parametrize(
    "spec, message",
    [
        ("smoothgrad:samples=3", "method smoothgrad has no parameter samples; its parameters: n_samples, stdev"),
        ("gradcam:x=1", "method gradcam has no parameter x; its parameters: none"),
        ("smoothgrad:n_samples=0", "method smoothgrad: n_samples must be >= 1, got 0"),
        ("smoothgrad:n_samples=2.5", "method smoothgrad: n_samples must be an int, got 2.5"),
        ("gradshap:baseline=grey", "method gradshap: baseline must be one of black, zero, got 'grey'"),
        ("deeplift:approximate=3", "method deeplift: approximate must be a bool, got 3"),
        ("n_samples=3,smoothgrad", "comes before any method"),
        ("smoothgrad,smoothgrad:n_samples=3", "method smoothgrad is given twice"),
        ("kim2022:n_samples=3", "set kim2022 takes no parameters"),
        ("nope", "unknown method 'nope'; choose one of: "),
        ("smoothgrad:n_samples", "is not METHOD:key=value"),
        ("", "no methods given"),
    ],
)
def test_bad_specs_are_one_line_user_errors(spec, message):
    with pytest.raises(UserError) as error:
        select_methods(spec)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_the_cli_refuses_a_bad_parameter_with_exit_2_before_any_work(tmp_path):
    result = CliRunner().invoke(main, ["run", "--model", "unet_gaze", "--methods", "smoothgrad:nt_samples=25,stdevs=0.1,gradcam:window=3", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert result.output.strip() == "gazebench: error: method gradcam has no parameter window; its parameters: none"
    assert not (tmp_path / "run").exists()


def test_list_methods_shows_family_cost_library_and_sets():
    result = CliRunner().invoke(main, ["list", "methods"])
    assert result.exit_code == 0
    rows = {line.split("|")[1].strip(): [cell.strip() for cell in line.split("|")[2:-1]] for line in result.output.splitlines() if line.startswith("| ") and not line.startswith("| method")}
    assert set(rows) == set(METHODS.fixed_names())
    assert rows["smoothgrad"] == ["gradient", "8 / 8", "captum", "abs", "n_samples=8, stdev=0.15"]
    assert rows["lime"][:4] == ["perturbation", "64 / 0", "captum + scikit-image", "abs"]
    assert rows["scorecam"][:3] == ["cam", "1 + min(C, 16) / 0", "grad-cam"]
    assert rows["lrp"][:3] == ["relevance", "1 / 1", "zennit"]
    assert rows["model_heatmap"][:3] == ["model", "1 / 0", "gazebench"]
    assert f"set kim2022: {', '.join(set_members('kim2022'))}" in result.output


def test_the_parameters_reach_the_maps():
    """A parameter given on the command line changes the map (n_samples is not decorative)."""
    from gazebench.models.base import ModelAdapter
    from tests.fixtures.tiny_models import TinyCNN

    torch.manual_seed(0)
    network = TinyCNN().eval()
    adapter = ModelAdapter("tiny", network, ["a", "b", "c"], network.relu2, input_size=32)
    images = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    targets, seeds = torch.tensor([0, 1]), [11, 12]
    few = METHODS.get("smoothgrad")(n_samples=2)(adapter, images, targets, seeds, 32)
    many = METHODS.get("smoothgrad")(**select_methods("smoothgrad:nt_samples=6").params["smoothgrad"])(adapter, images, targets, seeds, 32)
    assert not torch.allclose(few, many)
