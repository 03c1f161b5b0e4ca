"""The MIMIC-CXR-JPG reader on tiny releases written by the tests in the release's exact schema."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from gazebench.data.datasets import open_dataset
from gazebench.data.mimic import MimicDataset
from gazebench.errors import UserError
from tests.fixtures.mimic_layout import CHEXPERT_CLASSES, LABEL_FILES, METADATA_FILE, SPLIT_FILE, MimicImage, write_mimic_jpg

CHEXPERT = LABEL_FILES["chexpert"]


def open_mimic(root, split="all", **options):
    return MimicDataset(root, split=split, grid=48, require_gaze=False, **options)


def edit_csv(path, change):
    """Rewrite a release CSV as ``change(frame)`` (read as text, blanks kept blank)."""
    change(pd.read_csv(path, dtype=str, keep_default_na=False)).to_csv(path, index=False)


def set_cell(frame, study_id, column, value):
    frame.loc[frame.study_id == study_id, column] = value
    return frame


def duplicate_first_row(frame):
    return pd.concat([frame, frame.iloc[:1]], ignore_index=True)


def labels_of(dataset, study_id):
    row = dataset.records.index[dataset.records.study_id == study_id][0]
    return dict(zip(dataset.class_names, dataset[row].labels.tolist()))


# ---------------------------------------------------------------------- reading


def test_reads_frontal_images_of_each_official_split(tmp_path):
    release = write_mimic_jpg(tmp_path)
    sizes = {split: len(open_mimic(tmp_path, split)) for split in ("train", "dev", "test", "all")}
    assert sizes == {"train": 2, "dev": 1, "test": 2, "all": 5}  # LATERAL and LL skipped
    dataset = open_mimic(tmp_path, "all")
    assert dataset.skips["non-frontal views (skipped)"] == 2
    assert sum(dataset.skips.values()) == 2
    assert dataset.table.set_index("image_id").split.to_dict() == {
        i.dicom_id: {"train": "train", "validate": "dev", "test": "test"}[i.split] for i in release.images if i.view in ("PA", "AP")
    }
    assert dataset.class_names == CHEXPERT_CLASSES and dataset.multi_label and not dataset.has_gaze
    assert dataset.convention is None
    assert list(dataset.records.columns[:6]) == ["image_id", "patient_id", "study_id", "image_path", "width", "height"]
    assert set(dataset.records.reader) == {"all"}
    assert dataset.stats()["frontal images with labels and a split"] == 5
    assert dataset.stats()["patients"] == 3


def test_sample_is_letterboxed_without_gaze(tmp_path):
    release = write_mimic_jpg(tmp_path)
    dataset = open_mimic(tmp_path, "test")
    image = release.image("50000004", "PA")  # 48 x 32: letterboxed onto 48 x 48 with 8 rows of padding
    row = int(np.flatnonzero(dataset.records.image_id == image.dicom_id)[0])
    assert (dataset.records.width[row], dataset.records.height[row]) == (48, 32)  # from the metadata
    sample = dataset[row]
    assert sample.image_id == image.dicom_id and sample.patient_id == "11000011"
    assert sample.image.shape == (1, 48, 48)
    assert float(sample.image[0, :8].abs().max()) == 0 and float(sample.image[0, 40:].abs().max()) == 0
    assert float(sample.image[0, 24, 0]) < 0.05 and float(sample.image[0, 24, 47]) > 0.95  # the gradient
    assert sample.labels.shape == (14,) and sample.labels.dtype == torch.float32
    assert float(sample.gaze.abs().sum()) == 0 and sample.gaze.shape == (48, 48)
    assert sample.fixations.shape == (0, 3) and sample.regions == {}


def test_opens_through_the_dataset_registry(tmp_path):
    write_mimic_jpg(tmp_path)
    dataset = open_dataset("mimic", tmp_path, "test", 32, require_gaze=False)
    assert isinstance(dataset, MimicDataset) and len(dataset) == 2 and dataset[0].image.shape == (1, 32, 32)


def test_reads_the_gzipped_tables_physionet_serves(tmp_path):
    write_mimic_jpg(tmp_path, compress=True)
    assert not (tmp_path / METADATA_FILE).exists()
    assert len(open_mimic(tmp_path, "all")) == 5


def test_images_root_may_be_another_folder(tmp_path):
    release = write_mimic_jpg(tmp_path / "tables", write_images=False)
    write_mimic_jpg(tmp_path / "jpg", images=release.images)
    with pytest.raises(UserError, match="pass --images-root"):
        open_mimic(tmp_path / "tables", "test")
    assert len(open_mimic(tmp_path / "tables", "test", images_root=tmp_path / "jpg")) == 2


def test_needs_no_gaze_request(tmp_path):
    write_mimic_jpg(tmp_path)
    with pytest.raises(UserError, match=r"MIMIC-CXR-JPG has no eye-gaze data.*--data egd or --data reflacx"):
        MimicDataset(tmp_path)


# ---------------------------------------------------------------------- labels


@pytest.mark.parametrize("policy, uncertain", [("ignore", math.nan), ("zeros", 0.0), ("ones", 1.0)])
def test_label_policy_for_positive_negative_uncertain_and_blank(tmp_path, policy, uncertain):
    write_mimic_jpg(tmp_path)
    labels = labels_of(open_mimic(tmp_path, "test", uncertain=policy), "50000004")
    assert labels["Atelectasis"] == 1.0  # 1
    assert labels["Cardiomegaly"] == 0.0  # 0
    assert labels["Edema"] == 0.0  # blank: not mentioned
    assert labels["Consolidation"] == uncertain or (math.isnan(uncertain) and math.isnan(labels["Consolidation"]))  # -1


def test_labels_follow_the_study_of_each_image(tmp_path):
    write_mimic_jpg(tmp_path)
    dataset = open_mimic(tmp_path, "test")
    assert torch.equal(dataset[0].labels.nan_to_num(-9), dataset[1].labels.nan_to_num(-9))  # PA and AP of 50000004
    train = open_mimic(tmp_path, "train")
    assert labels_of(train, "50000001")["Atelectasis"] == 1.0  # the fixture's first study: its first class
    assert labels_of(train, "50000002")["Cardiomegaly"] == 1.0 and labels_of(train, "50000002")["Atelectasis"] == 0.0


def test_negbio_labels(tmp_path):
    write_mimic_jpg(tmp_path)
    labels = labels_of(open_mimic(tmp_path, "test", labels="negbio"), "50000004")
    assert (labels["Atelectasis"], labels["Cardiomegaly"]) == (0.0, 1.0)


def test_negbio_file_is_needed_only_when_asked_for(tmp_path):
    write_mimic_jpg(tmp_path)
    (tmp_path / LABEL_FILES["negbio"]).unlink()
    assert len(open_mimic(tmp_path, "test")) == 2
    with pytest.raises(UserError, match=r"missing file .*mimic-cxr-2.0.0-negbio.csv"):
        open_mimic(tmp_path, "test", labels="negbio")


def test_unknown_label_source_or_policy_lists_the_choices(tmp_path):
    write_mimic_jpg(tmp_path)
    with pytest.raises(UserError, match="choose one of: chexpert, negbio"):
        open_mimic(tmp_path, labels="radgraph")
    with pytest.raises(UserError, match="choose one of: ignore, zeros, ones"):
        open_mimic(tmp_path, uncertain="maybe")


def test_unparsable_label_value_becomes_unknown_and_is_counted(tmp_path):
    write_mimic_jpg(tmp_path)
    edit_csv(tmp_path / CHEXPERT, lambda f: set_cell(f, "50000004", "Cardiomegaly", "yes"))
    frame = pd.read_csv(tmp_path / CHEXPERT, dtype=str)
    assert frame.loc[frame.study_id == "50000004", "Cardiomegaly"].item() == "yes"
    dataset = open_mimic(tmp_path, "test")
    assert math.isnan(labels_of(dataset, "50000004")["Cardiomegaly"])
    assert labels_of(dataset, "50000004")["Atelectasis"] == 1.0
    assert dataset.skips[f"unparsable label values in {CHEXPERT} (label unknown: NaN)"] == 1
    assert len(dataset) == 2


def test_out_of_range_label_value_is_unparsable(tmp_path):
    write_mimic_jpg(tmp_path)
    edit_csv(tmp_path / CHEXPERT, lambda f: set_cell(f, "50000004", "Fracture", "2.0"))
    dataset = open_mimic(tmp_path, "test")
    assert math.isnan(labels_of(dataset, "50000004")["Fracture"])
    assert dataset.skips[f"unparsable label values in {CHEXPERT} (label unknown: NaN)"] == 1


# ---------------------------------------------------------------------- bad input


@pytest.mark.parametrize("file", [CHEXPERT, SPLIT_FILE, METADATA_FILE])
def test_missing_table_names_the_file(tmp_path, file):
    write_mimic_jpg(tmp_path)
    (tmp_path / file).unlink()
    with pytest.raises(UserError, match=rf"missing file .*{file}; is --root the folder"):
        open_mimic(tmp_path)


@pytest.mark.parametrize("file, column", [(CHEXPERT, "Pneumothorax"), (SPLIT_FILE, "split"), (METADATA_FILE, "ViewPosition"), (METADATA_FILE, "Rows")])
def test_missing_column_names_the_file_and_column(tmp_path, file, column):
    write_mimic_jpg(tmp_path)
    edit_csv(tmp_path / file, lambda f: f.drop(columns=[column]))
    with pytest.raises(UserError, match=rf"{file} lacks the column\(s\) {column}"):
        open_mimic(tmp_path)


def test_missing_root_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="does not exist; pass --root .*MIMIC-CXR-JPG 2.1.0"):
        open_mimic(tmp_path / "nowhere")


def test_duplicated_ids_are_counted_and_the_first_kept(tmp_path):
    write_mimic_jpg(tmp_path)
    for file in (METADATA_FILE, SPLIT_FILE, CHEXPERT):
        edit_csv(tmp_path / file, duplicate_first_row)
    dataset = open_mimic(tmp_path, "all")
    assert len(dataset) == 5 and dataset.records.image_id.is_unique
    assert dataset.skips[f"duplicated dicom_id rows in {METADATA_FILE} (first kept)"] == 1
    assert dataset.skips[f"duplicated dicom_id rows in {SPLIT_FILE} (first kept)"] == 1
    assert dataset.skips[f"duplicated (subject_id, study_id) rows in {CHEXPERT} (first kept)"] == 1


def test_missing_image_is_skipped_and_counted_in_its_split_only(tmp_path):
    release = write_mimic_jpg(tmp_path)
    (tmp_path / release.image("50000004", "AP").path).unlink()
    test = open_mimic(tmp_path, "test")
    assert list(test.records.image_id) == [release.image("50000004", "PA").dicom_id]
    assert test.skips["images listed in the metadata but missing on disk (skipped)"] == 1
    train = open_mimic(tmp_path, "train")
    assert len(train) == 2 and "images listed in the metadata but missing on disk (skipped)" not in train.skips
    assert len(train.table) == 5  # the split table lists every usable image, on disk or not


def test_no_image_of_the_split_on_disk_is_a_user_error(tmp_path):
    write_mimic_jpg(tmp_path, write_images=False)
    with pytest.raises(UserError, match=r"none of the 2 images of split test were found under .*pass --images-root"):
        open_mimic(tmp_path, "test")


def test_corrupt_jpg_is_a_user_error_when_read(tmp_path):
    release = write_mimic_jpg(tmp_path)
    (tmp_path / release.image("50000004", "PA").path).write_bytes(b"\xff\xd8 not really a jpeg")
    dataset = open_mimic(tmp_path, "test")  # sizes come from the metadata: nothing is decoded yet
    row = int(np.flatnonzero(dataset.records.image_id == release.image("50000004", "PA").dicom_id)[0])
    with pytest.raises(UserError, match=r"cannot read image .*\.jpg.*replace or remove the file"):
        dataset[row]


def test_images_without_labels_or_split_are_counted(tmp_path):
    release = write_mimic_jpg(tmp_path)
    edit_csv(tmp_path / CHEXPERT, lambda f: f[f.study_id != "50000003"])
    dropped = release.image("50000001").dicom_id
    edit_csv(tmp_path / SPLIT_FILE, lambda f: f[f.dicom_id != dropped])
    dataset = open_mimic(tmp_path, "all")
    assert len(dataset) == 3
    assert dataset.skips[f"images whose study has no row in {CHEXPERT} (skipped)"] == 1
    assert dataset.skips[f"images without a row in {SPLIT_FILE} (skipped)"] == 1
    assert len(open_mimic(tmp_path, "dev")) == 0


def test_unknown_split_value_blank_view_and_bad_size_are_counted(tmp_path):
    images = [
        MimicImage("10000001", "50000011", "PA", "holdout"),
        MimicImage("10000002", "50000012", "", "test"),
        MimicImage("10000003", "50000013", "AP", "test"),
        MimicImage("10000004", "50000014", "PA", "test"),
    ]
    write_mimic_jpg(tmp_path, images=images)
    edit_csv(tmp_path / METADATA_FILE, lambda f: set_cell(f, "50000013", "Rows", "tall"))
    dataset = open_mimic(tmp_path, "all")
    assert list(dataset.records.study_id) == ["50000014"]
    assert dataset.skips[f"images with an unknown split value in {SPLIT_FILE} (skipped)"] == 1
    assert dataset.skips["images without a ViewPosition (skipped)"] == 1
    assert dataset.skips[f"images with a blank or unparsable Rows/Columns in {METADATA_FILE} (skipped)"] == 1
    assert dataset.skips[f"unparsable values in {METADATA_FILE} column Rows (treated as missing)"] == 1
