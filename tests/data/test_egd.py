"""The EGD reader on a tiny fixture written by the test in the release's schema."""

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from gazebench.data.egd import ANATOMY_MASKS, EGDDataset
from gazebench.data.splits import patient_split
from gazebench.errors import UserError

PATIENTS = ["10000001", "10000002", "10000003", "10000004", "10000005"]


def make_egd(root, width=80, height=100):
    """Five patients, six images (patient 1 has two), fixations incl. -1 and beyond-image ones."""
    rows, fixations = [], []
    for index, patient in enumerate(PATIENTS + [PATIENTS[0]]):
        dicom_id = f"{index:08x}-aaaaaaaa-bbbbbbbb-cccccccc-dddddddd"
        path = f"files/p{patient[:2]}/p{patient}/s5000000{index}/{dicom_id}.dcm"
        label = index % 3
        rows.append({"dicom_id": dicom_id, "path": path, "study_id": f"5000000{index}", "patient_id": patient, "Normal": int(label == 0), "CHF": int(label == 1), "pneumonia": int(label == 2)})
        image_path = root / path.replace(".dcm", ".jpg")
        image_path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((height, width), 40 * (label + 1), np.uint8)).save(image_path)
        masks = root / "audio_segmentation_transcripts" / dicom_id
        masks.mkdir(parents=True)
        for file in ANATOMY_MASKS.values():
            mask = np.zeros((height, width), np.uint8)
            mask[10:50, 5:40] = 255
            Image.fromarray(mask).save(masks / file)
        for x, y in [(20, 30), (60, 70), (-1, -1), (width + 5, 10)]:
            fixations.append({"DICOM_ID": dicom_id, "FPOGD": 0.3, "X_ORIGINAL": x, "Y_ORIGINAL": y})
    pd.DataFrame(rows).to_csv(root / "master_sheet.csv", index=False)
    pd.DataFrame(fixations).to_csv(root / "fixations.csv", index=False)
    return pd.DataFrame(rows)


def test_reads_labels_gaze_masks_and_counts_dropped_fixations(tmp_path):
    master = make_egd(tmp_path)
    dataset = EGDDataset(tmp_path, split="all", grid=32)
    assert len(dataset) == 6
    assert dataset.skips["fixations off the displayed image (-1, dropped)"] == 6
    assert dataset.skips["fixations beyond the image's width or height (dropped)"] == 6
    sample = dataset[0]
    assert sample.image.shape == (1, 32, 32) and 0 <= float(sample.image.min()) <= float(sample.image.max()) <= 1
    assert sample.label == int(np.argmax(master.loc[0, ["Normal", "CHF", "pneumonia"]].to_numpy()))
    assert float(sample.gaze.sum()) == pytest.approx(1.0, abs=1e-5)
    assert sample.fixations.shape == (2, 3)
    assert set(sample.regions) == {"left_lung", "right_lung", "mediastinum", "aortic_knob"}
    assert sample.regions["left_lung"].dtype == torch.bool and sample.regions["left_lung"].any()


def test_split_is_patient_level_and_documented():
    make_split = patient_split(PATIENTS)
    shuffled = sorted(PATIENTS)
    import random

    random.Random(42).shuffle(shuffled)
    assert [p for p in shuffled if make_split[p] == "train"] == shuffled[:4]
    assert [p for p in shuffled if make_split[p] == "test"] == shuffled[4:]


def test_images_of_a_patient_share_a_split(tmp_path):
    make_egd(tmp_path)
    dataset = EGDDataset(tmp_path, split="all", grid=32)
    assert dataset.table.groupby("patient_id").split.nunique().max() == 1


def test_missing_column_names_the_file_and_column(tmp_path):
    make_egd(tmp_path)
    master = pd.read_csv(tmp_path / "master_sheet.csv").drop(columns=["CHF"])
    master.to_csv(tmp_path / "master_sheet.csv", index=False)
    with pytest.raises(UserError, match=r"master_sheet.csv lacks the column\(s\) CHF"):
        EGDDataset(tmp_path, split="all", grid=32)


def test_missing_fixations_file_is_a_clear_error(tmp_path):
    make_egd(tmp_path)
    (tmp_path / "fixations.csv").unlink()
    with pytest.raises(UserError, match="missing file .*fixations.csv"):
        EGDDataset(tmp_path, split="all", grid=32)


def test_missing_images_and_images_without_gaze_are_counted(tmp_path):
    master = make_egd(tmp_path)
    (tmp_path / master.path[1].replace(".dcm", ".jpg")).unlink()
    fixations = pd.read_csv(tmp_path / "fixations.csv")
    fixations[fixations.DICOM_ID != master.dicom_id[2]].to_csv(tmp_path / "fixations.csv", index=False)
    dataset = EGDDataset(tmp_path, split="all", grid=32)
    assert len(dataset) == 4
    assert dataset.skips["images listed in master_sheet.csv but missing on disk"] == 1
    assert dataset.skips["images without any fixation on the image (skipped)"] == 1


def test_unknown_split_and_missing_root(tmp_path):
    with pytest.raises(UserError, match="unknown split 'validate'"):
        EGDDataset(tmp_path, split="validate")
    with pytest.raises(UserError, match="does not exist"):
        EGDDataset(tmp_path / "nowhere")
