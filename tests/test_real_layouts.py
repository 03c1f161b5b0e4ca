"""`run` and `train` end to end on test-made copies of the real releases (EGD, REFLACX, MIMIC-CXR-JPG)."""

import pandas as pd
import pytest
import torch
import yaml
from click.testing import CliRunner

from gazebench.cli import main
from gazebench.models.checkpoint import save_checkpoint
from gazebench.models.unet_gaze import build_adapter
from tests.fixtures.egd_layout import write_egd
from tests.fixtures.mimic_layout import write_mimic_jpg
from tests.fixtures.reflacx_layout import write_reflacx

SMALL = ["--methods", "saliency,gradcam", "--metrics", "nss,cc", "--batch-size", "4"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def random_checkpoint(path, class_names):
    torch.manual_seed(0)
    adapter = build_adapter(list(class_names), input_size=64)
    return save_checkpoint(path, "unet_gaze", adapter.module.state_dict(), {"model": adapter.config}, list(class_names))


@pytest.fixture(scope="module")
def egd_copy(tmp_path_factory):
    folder = tmp_path_factory.mktemp("egd")
    write_egd(folder / "egd-cxr", images_root=folder / "mimic-cxr-jpg")
    return folder / "egd-cxr", folder / "mimic-cxr-jpg"


def test_run_on_an_egd_release_with_images_elsewhere(tmp_path, egd_copy, random_checkpoint):
    root, images = egd_copy
    out = tmp_path / "run"
    result = invoke("run", "--model", "unet_gaze", "--data", "egd", "--root", root, "--images-root", images, "--split", "all",
                    "--checkpoint", random_checkpoint, "--out", out, *SMALL)
    assert result.exit_code == 0, result.output
    scores = pd.read_parquet(out / "scores")
    assert set(scores.dataset) == {"egd"} and scores.protocol.str.contains("egd-sigma150px-unweighted").all()
    assert scores.image_id.nunique() == 6
    assert "PhysioNet Credentialed Health Data" in (out / "DATA_USE.md").read_text()
    assert set(pd.read_csv(out / "splits.csv").split) <= {"train", "dev", "test"}
    assert "fixations off the displayed image (-1, dropped)" in (out / "run.log").read_text()


def test_gaze_sigma_changes_the_protocol_and_the_scores(tmp_path, egd_copy, random_checkpoint):
    root, images = egd_copy
    args = ["run", "--model", "unet_gaze", "--data", "egd", "--root", root, "--images-root", images, "--split", "all",
            "--checkpoint", random_checkpoint, *SMALL]
    assert invoke(*args, "--out", tmp_path / "a").exit_code == 0
    assert invoke(*args, "--out", tmp_path / "b", "--gaze-sigma", "30").exit_code == 0
    a, b = (pd.read_parquet(tmp_path / name / "scores") for name in ("a", "b"))
    assert b.protocol.str.contains("sigma30px").all()
    cc = lambda s: s[s.metric == "cc"].sort_values(["image_id", "method"]).value.to_numpy()  # noqa: E731
    assert not (cc(a) == cc(b)).all()


@pytest.fixture(scope="module")
def egd_training_copy(tmp_path_factory):
    folder = tmp_path_factory.mktemp("egd_train")
    write_egd(folder / "egd-cxr", n_patients=12, images_root=folder / "mimic-cxr-jpg")  # 12 patients: 9 train, 1 dev, 2 test
    return folder / "egd-cxr", folder / "mimic-cxr-jpg"


def test_train_on_an_egd_release(tmp_path, egd_training_copy):
    root, images = egd_training_copy
    out = tmp_path / "models" / "unet_gaze_egd.pt"
    result = invoke("train", "--model", "unet_gaze", "--data", "egd", "--root", root, "--images-root", images, "--epochs", "1", "--out", out)
    assert result.exit_code == 0, result.output
    assert out.is_file() and "test one-vs-rest AUROC (95% CI, patient bootstrap)" in result.output
    record = yaml.safe_load(out.with_suffix(".report.yaml").read_text())
    assert record["data"] == "egd" and record["test_bootstrap"]["replicates"] == 1000
    assert set(record["test_auroc_ci95"]) == {"Normal", "CHF", "pneumonia"}
    assert (out.parent / "DATA_USE.md").is_file()


def test_train_several_seeds_writes_one_checkpoint_each_and_their_spread(tmp_path, egd_training_copy):
    root, images = egd_training_copy
    out = tmp_path / "unet_gaze_egd.pt"
    result = invoke("train", "--model", "unet_gaze", "--data", "egd", "--root", root, "--images-root", images, "--epochs", "1",
                    "--seed", "1", "--seed", "2", "--out", out)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "unet_gaze_egd-seed1.pt").is_file() and (tmp_path / "unet_gaze_egd-seed2.pt").is_file()
    assert "over 2 seeds (1, 2): test AUROC mean ± sd" in result.output
    assert yaml.safe_load((tmp_path / "unet_gaze_egd-seed2.report.yaml").read_text())["seed"] == 2


@pytest.fixture(scope="module")
def reflacx_copy(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reflacx")
    write_reflacx(folder / "reflacx", images_root=folder / "mimic-cxr-jpg")
    return folder / "reflacx", folder / "mimic-cxr-jpg"


def test_run_on_a_reflacx_release_scores_each_reader_and_the_merged_gaze(tmp_path, reflacx_copy):
    from gazebench.data.reflacx import ReflacxDataset

    root, images = reflacx_copy
    dataset = ReflacxDataset(root, split="all", grid=224, images_root=images)
    checkpoint = random_checkpoint(tmp_path / "reflacx.pt", dataset.class_names)
    out = tmp_path / "run"
    result = invoke("run", "--model", "unet_gaze", "--data", "reflacx", "--root", root, "--images-root", images, "--split", "all",
                    "--checkpoint", checkpoint, "--out", out, *SMALL)
    assert result.exit_code == 0, result.output
    scores = pd.read_parquet(out / "scores")
    assert scores.protocol.str.contains("reflacx-sigma1deg-duration-weighted").all()
    merged = scores[scores.reader == "all"]
    several = {dataset[i].image_id: set(dataset[i].readers) for i in range(len(dataset)) if len(dataset[i].readers) > 1}
    assert several, "the fixture has images read by several radiologists"
    for image_id, readers in several.items():
        rows = scores[(scores.image_id == image_id) & (scores.method == "gradcam") & (scores.metric == "nss")]
        assert set(rows.reader) == readers | {"all"}
    assert set(scores[scores.reader != "all"].image_id) == set(several)
    ceiling = scores[scores.method == "inter_observer"]  # other readers' gaze against each reader's: per-reader rows only
    assert len(ceiling) and (ceiling.reader != "all").all() and set(ceiling.image_id) == set(several)
    assert ceiling[ceiling.metric == "cc"].value.notna().all()
    leaderboard = pd.read_csv(out / "leaderboard.csv")
    n_merged = len(merged[(merged.method == "gradcam") & (merged.metric == "nss")])
    cell = leaderboard[(leaderboard.method == "gradcam") & (leaderboard.metric == "nss")].set_index("gaze")
    assert cell.n["merged"] <= n_merged and cell.n["single reader"] == len(scores[(scores.reader != "all") & (scores.method == "gradcam") & (scores.metric == "nss")].value.dropna())
    assert leaderboard[leaderboard.method == "inter_observer"].gaze.eq("single reader").all()
    assert "discarded" in (out / "run.log").read_text()
    assert (out / "DATA_USE.md").is_file()


def test_train_on_a_reflacx_release(tmp_path):
    root, images = tmp_path / "reflacx", tmp_path / "mimic-cxr-jpg"
    write_reflacx(root, images_root=images)
    metadata = sorted(root.glob("main_data/metadata_phase_*.csv"))
    dicom_ids = sorted(set(pd.concat([pd.read_csv(path) for path in metadata]).dicom_id))
    official = {d: "train" if k < 3 else "validate" if k == 3 else "test" for k, d in enumerate(dicom_ids)}
    for path in metadata:  # spread the six images over the three official splits
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        frame["split"] = frame.dicom_id.map(official)
        frame.to_csv(path, index=False)
    out = tmp_path / "unet_gaze_reflacx.pt"
    result = invoke("train", "--model", "unet_gaze", "--data", "reflacx", "--root", root, "--images-root", images, "--epochs", "1", "--out", out)
    assert result.exit_code == 0, result.output
    record = yaml.safe_load(out.with_suffix(".report.yaml").read_text())
    assert record["data"] == "reflacx" and "Atelectasis" in record["test_auroc"]


def test_mimic_trains_but_does_not_run_without_gaze(tmp_path):
    root = tmp_path / "mimic-cxr-jpg"
    write_mimic_jpg(root)
    result = invoke("run", "--model", "unet_gaze", "--data", "mimic", "--root", root, "--out", tmp_path / "run")
    assert result.exit_code == 2 and "MIMIC-CXR-JPG has no eye-gaze data" in result.output
    assert not (tmp_path / "run").exists()
    out = tmp_path / "unet_gaze_mimic.pt"
    trained = invoke("train", "--model", "unet_gaze", "--data", "mimic", "--root", root, "--epochs", "1", "--out", out)
    assert trained.exit_code == 0, trained.output
    assert yaml.safe_load(out.with_suffix(".report.yaml").read_text())["data"] == "mimic"
    assert (out.parent / "DATA_USE.md").is_file()
