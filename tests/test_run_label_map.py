"""`run` with a model whose classes differ from the data's: label maps and --target pred."""

import pandas as pd
import torch
import yaml
from click.testing import CliRunner

from gazebench.cli import main
from gazebench.data.manifest import load_manifest
from gazebench.models.checkpoint import save_checkpoint
from gazebench.models.unet_gaze import build_adapter

CHEXPERT = load_manifest("egd").labels["alternatives"]["chexpert"]["names"]
SMALL = ["--methods", "gradcam", "--metrics", "nss", "--split", "all", "--limit", "4", "--batch-size", "4"]


def checkpoint_for(path, classes):
    torch.manual_seed(2)
    adapter = build_adapter(classes, input_size=64)
    return save_checkpoint(path, "unet_gaze", adapter.module.state_dict(), {"model": adapter.config}, classes)


def run(tiny_synth, checkpoint, out, *extra):
    result = CliRunner().invoke(main, ["run", "--model", "unet_gaze", "--root", str(tiny_synth), "--checkpoint", str(checkpoint), "--out", str(out), *SMALL, *extra])
    return result


def test_a_chexpert_model_is_scored_on_egd_classes_through_the_default_map(tmp_path, tiny_synth):
    result = run(tiny_synth, checkpoint_for(tmp_path / "chexpert.pt", CHEXPERT), tmp_path / "run")
    assert result.exit_code == 0, result.output
    scores = pd.read_parquet(tmp_path / "run" / "scores")
    assert set(scores.target) <= {"Normal", "CHF", "pneumonia"} and scores.label.eq(1).all()
    config = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert config["model"]["label_map"]["classes"]["CHF"] == ["Edema", "Cardiomegaly"]
    assert config["model"]["class_names"] == ["Normal", "CHF", "pneumonia"]


def test_a_user_label_map_file_replaces_the_default(tmp_path, tiny_synth):
    mapping = tmp_path / "map.yaml"
    mapping.write_text(yaml.safe_dump({"classes": {"Normal": ["No Finding"], "CHF": ["Cardiomegaly"], "pneumonia": ["Lung Opacity"]}}))
    result = run(tiny_synth, checkpoint_for(tmp_path / "chexpert.pt", CHEXPERT), tmp_path / "run", "--label-map", str(mapping))
    assert result.exit_code == 0, result.output
    config = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert config["model"]["label_map"]["classes"]["pneumonia"] == ["Lung Opacity"]


def test_target_pred_explains_the_models_own_classes(tmp_path, tiny_synth):
    own = ["Atelectasis", "Pneumonia", "Fracture"]  # no default map fits these outputs
    checkpoint = checkpoint_for(tmp_path / "own.pt", own)
    refused = run(tiny_synth, checkpoint, tmp_path / "refused")
    assert refused.exit_code == 2
    assert "['Atelectasis', 'Pneumonia', 'Fracture']" in refused.output and "'CHF'" in refused.output
    assert not (tmp_path / "refused").exists()
    result = run(tiny_synth, checkpoint, tmp_path / "run", "--target", "pred")
    assert result.exit_code == 0, result.output
    scores = pd.read_parquet(tmp_path / "run" / "scores")
    assert set(scores.target) <= set(own) and (scores.target == scores.pred).all()
    assert scores.label.eq(0).all() and not scores.correct.any()  # none of these is an EGD class
