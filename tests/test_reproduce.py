"""`gazebench reproduce NAME`: a study's runs, tables, figures and report in one resumable command."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from gazebench.cli import main
from gazebench.data import synth
from gazebench.models import densenet
from gazebench.models.checkpoint import save_checkpoint
from gazebench.studies import load_study, study_names

CLASSES = ["Normal", "CHF", "pneumonia"]
SIZE = 64


@pytest.fixture(scope="module")
def study_data(tmp_path_factory):
    """A synthetic copy with a test split of a few images, and random DenseNet / DenseNet-Aug checkpoints at 64 px."""
    folder = tmp_path_factory.mktemp("study")
    root = synth.generate(folder / "data", n=50, seed=5, progress=False)
    checkpoints = {}
    for index, (model, build) in enumerate((("densenet121", densenet.build_adapter), ("densenet_aug", densenet.build_aug_adapter))):
        torch.manual_seed(index)
        adapter = build(CLASSES, input_size=SIZE)
        checkpoints[model] = save_checkpoint(folder / f"{model}.pt", model, adapter.module.state_dict(), {"model": {"input_size": SIZE, "imagenet_weights": None}}, CLASSES)
    return root, checkpoints


def reproduce(root, checkpoints, out, *extra):
    args = ["reproduce", "kim2022", "--data", "synth", "--root", str(root), "--out", str(out), "--limit", "4", "--device", "cpu",
            *[f"--checkpoint={model}={path}" for model, path in checkpoints.items()], *extra]  # fmt: skip
    return CliRunner().invoke(main, args)


def test_every_study_names_a_table_set_and_models():
    from gazebench.report.papers import PAPERS

    assert study_names() == ["karargyris2021", "kim2022", "mimic2023", "shamsul2023", "watanabe2022"]
    for name in study_names():
        study = load_study(name)
        assert study.paper in PAPERS and study.models and study.title


def test_kim2022_writes_its_tables_figures_and_report_and_resumes_without_recomputing(study_data, tmp_path):
    root, checkpoints = study_data
    out = tmp_path / "kim"
    result = reproduce(root, checkpoints, out)
    assert result.exit_code == 0, result.output
    tables = sorted(path.name for path in (out / "tables").iterdir())
    assert tables == sorted(f"kim2022_{name}.{suffix}" for name in ("auroc", "ssim", "regions") for suffix in ("md", "csv", "tex"))
    figures = {path.name for path in (out / "figures").iterdir()}
    assert {"kim2022_regions.png", "kim2022_regions.pdf", "densenet121_examples.png", "densenet_aug_overlays.png"} <= figures
    assert (out / "report.html").is_file() and (out / "study.yaml").is_file()
    assert "| DenseNet | GC |" in result.output and "## Kim, Zhou & Lipton: per-label AUROC" in result.output
    auroc = pd.read_csv(out / "tables" / "kim2022_auroc.csv").set_index("class")
    assert auroc.loc["Edema", "DenseNet paper"] == 0.835  # the poster's number in its place
    assert f"model densenet121 (checkpoint {checkpoints['densenet121']}" in (out / "tables" / "kim2022_ssim.md").read_text()
    shards = sorted((out / "runs").glob("*/scores/*.parquet"))
    assert {path.parent.parent.name for path in shards} == {"densenet121", "densenet_aug"}
    stamps = {path: path.stat().st_mtime_ns for path in shards}
    again = reproduce(root, checkpoints, out)
    assert again.exit_code == 0, again.output
    assert all(path.stat().st_mtime_ns == stamp for path, stamp in stamps.items())  # finished runs are reused


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["reproduce", "kim2099", "--out", "x"], "unknown study 'kim2099'; gazebench reproduces: karargyris2021, kim2022, mimic2023, shamsul2023, watanabe2022"),
        (["reproduce", "kim2022", "--out", "x", "--checkpoint", "densenet121"], "--checkpoint 'densenet121': write MODEL=PATH"),
        (["reproduce", "kim2022", "--out", "x", "--checkpoint", "unet_gaze=a.pt"], "--checkpoint names unet_gaze, which study kim2022 does not use; its models: densenet121, densenet_aug"),
        (["reproduce", "kim2022", "--out", "x", "--checkpoint", "densenet121=missing.pt"], "--checkpoint densenet121=missing.pt: no such file"),
        (["reproduce", "kim2022", "--out", "x", "--data", "egd", "--root", ".", "--no-train"], "no checkpoint for densenet121: pass --checkpoint densenet121=PATH, or drop --no-train"),
    ],
)
def test_mistakes_end_in_one_line_and_exit_2_before_any_work(arguments, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, arguments)
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert not (tmp_path / "x" / "runs").exists()
