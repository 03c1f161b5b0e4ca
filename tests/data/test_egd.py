"""The EGD reader on a tiny release written by the test in the release's exact schema."""

import json
import math
import random

import numpy as np
import pytest
import torch

from gazebench.data.egd import EGDDataset
from gazebench.data.gaze import Letterbox
from gazebench.data.manifest import load_manifest
from gazebench.data.splits import patient_split
from gazebench.errors import UserError
from tests.fixtures import egd_layout as egd

PATIENTS = egd.patient_ids(5)
CHEXPERT_NAMES = load_manifest("egd").labels["alternatives"]["chexpert"]["names"]


@pytest.fixture
def release(tmp_path):
    return tmp_path, egd.write_egd(tmp_path)


def test_reads_labels_gaze_masks_and_counts_dropped_fixations(release):
    root, master = release
    dataset = EGDDataset(root, split="all", grid=32)
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


def test_fixture_follows_the_release_schema(release):
    root, master = release
    assert len(master.columns) == 59
    assert len(egd.read_csv(root, "fixations.csv").columns) == 37 and len(egd.read_csv(root, "eye_gaze.csv").columns) == 37
    assert list(egd.read_csv(root, "bounding_boxes.csv").columns) == ["dicom_id", "bbox_name", "x1", "x2", "y1", "y2"]
    folder = root / "audio_segmentation_transcripts" / master.dicom_id[0]
    assert sorted(p.name for p in folder.iterdir()) == ["aortic_knob.png", "left_lung.png", "mediastanum.png", "right_lung.png", "transcript.json"]
    assert sorted(p.name for p in (root / "inclusion_exclusion_criteria_outputs").iterdir()) == ["CHF.csv", "normals.csv", "pneumonia.csv"]


def test_split_is_patient_level_and_documented():
    make_split = patient_split(PATIENTS)
    shuffled = sorted(PATIENTS)
    random.Random(42).shuffle(shuffled)
    assert [p for p in shuffled if make_split[p] == "train"] == shuffled[:4]
    assert [p for p in shuffled if make_split[p] == "test"] == shuffled[4:]


def test_images_of_a_patient_share_a_split(release):
    root, _ = release
    dataset = EGDDataset(root, split="all", grid=32)
    assert dataset.table.groupby("patient_id").split.nunique().max() == 1


# ---------------------------------------------------------------------- labels


def test_default_labels_are_the_three_classes_single_label(release):
    root, _ = release
    dataset = EGDDataset(root, split="all", grid=32)
    assert dataset.class_names == ["Normal", "CHF", "pneumonia"] and dataset.multi_label is False
    assert [dataset[i].label for i in range(6)] == [0, 1, 2, 0, 1, 2]


@pytest.mark.parametrize("policy, uncertain", [("ignore", math.nan), ("zeros", 0.0), ("ones", 1.0)])
def test_chexpert_labels_follow_the_uncertain_policy(release, policy, uncertain):
    root, _ = release
    dataset = EGDDataset(root, split="all", grid=32, labels="chexpert", uncertain=policy)
    assert dataset.class_names == CHEXPERT_NAMES and len(CHEXPERT_NAMES) == 14 and dataset.multi_label is True
    labels = dataset[0].labels  # atelectasis 1, cardiomegaly 0, consolidation -1, edema blank, the rest blank
    assert labels[CHEXPERT_NAMES.index("Atelectasis")] == 1
    assert labels[CHEXPERT_NAMES.index("Cardiomegaly")] == 0
    consolidation = float(labels[CHEXPERT_NAMES.index("Consolidation")])
    assert math.isnan(consolidation) if math.isnan(uncertain) else consolidation == uncertain
    assert labels[CHEXPERT_NAMES.index("Edema")] == 0  # blank = not mentioned = negative
    assert int(torch.nan_to_num(labels).sum()) == 1 + (uncertain == 1.0)
    assert dataset[1].labels.tolist() == [float(name == "Cardiomegaly") for name in CHEXPERT_NAMES]  # a CHF image


def test_chexpert_labels_need_the_chx_columns(release):
    root, _ = release
    egd.drop_column(root, "master_sheet.csv", "edema__chx")
    with pytest.raises(UserError, match=r"lacks the CheXpert column\(s\) edema__chx; use --labels classes"):
        EGDDataset(root, split="all", grid=32, labels="chexpert")
    with pytest.raises(UserError, match="unknown EGD label set 'negbio'"):
        EGDDataset(root, split="all", grid=32, labels="negbio")


# ---------------------------------------------------------------------- boxes, transcripts, images


def test_bounding_boxes_honour_the_x1_x2_y1_y2_column_order(release):
    root, _ = release
    box = EGDDataset(root, split="all", grid=32)[0].boxes["cardiac silhouette"]  # x1=10, x2=30, y1=50, y2=90
    # 80x100 image on a 32 grid: height 100 -> 32 (0.32 per pixel), width 80 -> 26 (0.325), centred at x + 3
    assert box.tolist() == pytest.approx([10 * 0.325 + 3, 50 * 0.32, 30 * 0.325 + 3, 90 * 0.32])
    assert Letterbox(80, 100, 32).scale == (0.325, 0.32) and Letterbox(80, 100, 32).offset == (3, 0)


def test_inverted_boxes_are_dropped_and_counted(release):
    root, _ = release
    egd.set_cells(root, "bounding_boxes.csv", "x2", [0], "5")  # cardiac silhouette of image 0: x2 < x1
    dataset = EGDDataset(root, split="all", grid=32)
    assert dataset.skips["bounding boxes with a missing, unparsable or inverted coordinate (dropped)"] == 1
    assert "cardiac silhouette" not in dataset[0].boxes and "cardiac silhouette" in dataset[1].boxes


def test_transcripts_are_read_and_optional(release, tmp_path):
    root, master = release
    assert EGDDataset(root, split="all", grid=32)[0].transcript == egd.TRANSCRIPT
    bare = tmp_path / "bare"
    egd.write_egd(bare, transcripts=False, boxes=False)
    sample = EGDDataset(bare, split="all", grid=32)[0]
    assert sample.transcript is None and sample.regions == {} and sample.boxes == {}


def test_a_damaged_transcript_is_a_clear_error(release):
    root, master = release
    (root / "audio_segmentation_transcripts" / master.dicom_id[0] / "transcript.json").write_text(json.dumps({"text": "x"}))
    with pytest.raises(UserError, match="cannot read the transcript .*transcript.json"):
        EGDDataset(root, split="all", grid=32)[0]


@pytest.mark.parametrize("dicom", [False, True], ids=["mimic-cxr-jpg", "mimic-cxr-dicom"])
def test_images_are_found_through_path_under_images_root(tmp_path, dicom):
    root, images = tmp_path / "egd", tmp_path / ("mimic-cxr" if dicom else "mimic-cxr-jpg")
    master = egd.write_egd(root, images_root=images, dicom=dicom)
    assert egd.image_path(images, master, 1, ".dcm" if dicom else ".jpg").is_file()
    with pytest.raises(UserError, match="none of the images in .*master_sheet.csv were found under .*pass --images-root"):
        EGDDataset(root, split="all", grid=32)
    dataset = EGDDataset(root, split="all", grid=32, images_root=images)
    assert len(dataset) == 6 and dataset.records.image_path[1].suffix == (".dcm" if dicom else ".jpg")
    assert (dataset.records.width[1], dataset.records.height[1]) == (80, 100)
    image = dataset[1].image  # a flat grey of level 80 (of 255), letterboxed with black side bars
    assert float(image[0, 16, 16]) == pytest.approx(egd.grey_value(1) / 255, abs=0.01)
    assert float(image[0, 16, 0]) == 0.0


# ---------------------------------------------------------------------- bad inputs


def test_missing_column_names_the_file_and_column(release):
    root, _ = release
    egd.drop_column(root, "master_sheet.csv", "CHF")
    with pytest.raises(UserError, match=r"master_sheet.csv lacks the column\(s\) CHF"):
        EGDDataset(root, split="all", grid=32)


def test_missing_fixations_file_is_a_clear_error(release):
    root, _ = release
    egd.drop_file(root, "fixations.csv")
    with pytest.raises(UserError, match="missing file .*fixations.csv"):
        EGDDataset(root, split="all", grid=32)


def test_unparsable_numbers_are_dropped_and_counted(release):
    root, _ = release
    egd.set_cells(root, "fixations.csv", "X_ORIGINAL", [0], "abc")  # image 0's fixation at (20, 30)
    egd.set_cells(root, "master_sheet.csv", "CHF", [1], "abc")  # image 1 is CHF: no class left
    dataset = EGDDataset(root, split="all", grid=32)
    assert dataset.skips["fixations with an unparsable or blank number (dropped)"] == 1
    assert dataset.skips["unparsable values in master_sheet.csv column CHF (treated as missing)"] == 1
    assert dataset.skips["images without exactly one of Normal/CHF/pneumonia set to 1"] == 1
    assert len(dataset) == 5 and dataset[0].fixations.shape == (1, 3)


def test_missing_images_and_images_without_gaze_are_counted(release):
    root, master = release
    egd.delete_image(egd.image_path(root, master, 1))
    egd.drop_fixations(root, master.dicom_id[2])
    dataset = EGDDataset(root, split="all", grid=32)
    assert len(dataset) == 4
    assert dataset.skips["images listed in master_sheet.csv but missing on disk"] == 1
    assert dataset.skips["images without any fixation on the image (skipped)"] == 1
    everything = EGDDataset(root, split="all", grid=32, require_gaze=False)
    assert len(everything) == 5 and everything.stats()["images without gaze"] == 1
    without = everything[list(everything.records.image_id).index(master.dicom_id[2])]
    assert without.fixations.shape == (0, 3) and float(without.gaze.sum()) == 0


def test_fixations_of_unknown_images_are_dropped_and_counted(release):
    root, master = release
    egd.add_unknown_fixations(root, count=3)
    egd.delete_image(egd.image_path(root, master, 4))  # its 3 fixations not at -1 now have no image
    dataset = EGDDataset(root, split="all", grid=32)
    assert dataset.skips["fixations of images not in master_sheet.csv or not on disk (dropped)"] == 3 + 3
    assert len(dataset) == 5


def test_duplicated_ids_keep_the_first_row_and_are_counted(release):
    root, _ = release
    egd.duplicate_row(root, "master_sheet.csv", 3)
    dataset = EGDDataset(root, split="all", grid=32)
    assert dataset.skips["duplicated dicom_id rows in master_sheet.csv (first kept)"] == 1
    assert len(dataset) == 6 and dataset.records.image_id.is_unique


def test_truncated_image_fails_on_loading_with_its_name(release):
    root, master = release
    path = egd.image_path(root, master, 2)
    egd.truncate_image(path)
    dataset = EGDDataset(root, split="all", grid=32)  # the header still gives the size
    with pytest.raises(UserError, match=f"cannot read image {path}.*replace or remove the file"):
        dataset[2]


def test_unreadable_image_opens_and_its_item_is_a_one_line_unreadable_image(release):
    """A garbled header does not stop the reader at open: the item raises UnreadableImage (run skips and counts it)."""
    from gazebench.data.images import UnreadableImage

    root, master = release
    path = egd.image_path(root, master, 2)
    egd.garble_image(path)
    dataset = EGDDataset(root, split="all", grid=32)
    index = list(dataset.records.image_path.map(str)).index(str(path))
    with pytest.raises(UnreadableImage, match=f"cannot read image {path}") as error:
        dataset[index]
    assert "\n" not in str(error.value)


def test_unknown_split_and_missing_root(tmp_path):
    with pytest.raises(UserError, match="unknown split 'validate'"):
        EGDDataset(tmp_path, split="validate")
    with pytest.raises(UserError, match="does not exist"):
        EGDDataset(tmp_path / "nowhere")
