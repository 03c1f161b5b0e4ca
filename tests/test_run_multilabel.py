"""Multi-label rows end to end: EGD's *__chx CheXpert columns give one row group per positive label."""

import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from gazebench.cli import main
from gazebench.data.egd import EGDDataset
from gazebench.data.manifest import load_manifest
from gazebench.models.checkpoint import save_checkpoint
from gazebench.models.unet_gaze import build_adapter

CHEXPERT = load_manifest("egd").labels["alternatives"]["chexpert"]["names"]


@pytest.fixture(scope="module")
def chexpert_checkpoint(tmp_path_factory):
    torch.manual_seed(1)
    adapter = build_adapter(CHEXPERT, input_size=64)
    path = tmp_path_factory.mktemp("checkpoints") / "unet_gaze_chexpert.pt"
    return save_checkpoint(path, "unet_gaze", adapter.module.state_dict(), {"model": adapter.config}, CHEXPERT)


def run(tmp_path, tiny_synth, checkpoint, *extra):
    args = ["run", "--model", "unet_gaze", "--data", "synth", "--root", str(tiny_synth), "--labels", "chexpert", "--split", "all",
            "--checkpoint", str(checkpoint), "--out", str(tmp_path / "run"), "--methods", "saliency,gradcam", "--metrics", "nss,cc", "--limit", "6", *extra]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return pd.read_parquet(tmp_path / "run" / "scores")


def test_one_row_group_per_positive_label(tmp_path, tiny_synth, chexpert_checkpoint):
    scores = run(tmp_path, tiny_synth, chexpert_checkpoint)
    dataset = EGDDataset(tiny_synth, split="all", grid=224, name="synth", labels="chexpert")
    expected = {}
    for index in range(6):
        sample = dataset[index]
        expected[sample.image_id] = {CHEXPERT[i] for i in torch.nonzero(sample.labels == 1).flatten().tolist()}
    got = scores[(scores.method == "gradcam") & (scores.metric == "nss")].groupby("image_id").target.apply(set).to_dict()
    assert got == expected
    assert any(len(targets) == 2 for targets in expected.values())  # CHF: Cardiomegaly + Edema
    assert scores.label.eq(1).all()
    assert (scores.correct == (scores.prob >= 0.5)).all()  # every target is a true label here


def test_pred_targets_are_the_classes_predicted_positive(tmp_path, tiny_synth, chexpert_checkpoint):
    scores = run(tmp_path, tiny_synth, chexpert_checkpoint, "--target", "pred")
    rows = scores[(scores.method == "saliency") & (scores.metric == "cc")]
    per_image = rows.groupby("image_id")
    assert per_image.size().min() >= 1
    for _, group in per_image:
        if len(group) > 1 or group.prob.iloc[0] >= 0.5:
            assert (group.prob >= 0.5).all()
    assert ((rows.prob >= 0.5) == (rows.label == 1)).eq(rows.correct).all()


def test_a_model_for_other_classes_is_refused_with_both_lists(tmp_path, tiny_synth, random_checkpoint):
    args = ["run", "--model", "unet_gaze", "--data", "synth", "--root", str(tiny_synth), "--labels", "chexpert",
            "--checkpoint", str(random_checkpoint), "--out", str(tmp_path / "run")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert "predicts ['Normal', 'CHF', 'pneumonia']" in result.output and "Cardiomegaly" in result.output
    assert not (tmp_path / "run").exists()
