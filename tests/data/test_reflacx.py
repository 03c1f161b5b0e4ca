"""The REFLACX reader on a tiny release written by tests/fixtures/reflacx_layout.py."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from gazebench.data.gaze import Letterbox, reflacx_density
from gazebench.data.manifest import load_manifest, parse_manifest
from gazebench.data.reflacx import ReflacxDataset, mimic_relative_path
from gazebench.data.sample import collate
from gazebench.errors import UserError
from tests.fixtures.reflacx_layout import (
    IMAGES,
    PHASE_1_LABELS,
    PHASE_3_LABELS,
    Fixation,
    add_fixations,
    drop_column,
    duplicate_reading,
    fixations_path,
    image_path,
    metadata_path,
    reading,
    remove_fixations,
    remove_image,
    remove_metadata,
    replace_fixations,
    set_fixation_value,
    set_metadata_value,
    truncate_image,
    write_reflacx,
)

GRID = 32
DISCARDED = "readings with discarded eye tracking (excluded)"


@pytest.fixture
def release(tmp_path):
    return write_reflacx(tmp_path / "reflacx")


def open_all(root, **kwargs) -> ReflacxDataset:
    return ReflacxDataset(root, split="all", grid=GRID, **kwargs)


def sample_of(dataset: ReflacxDataset, key: str):
    """The Sample of fixture image ``key`` (A-F)."""
    ids = list(dataset.records.image_id)
    return dataset[ids.index(IMAGES[key].dicom_id)]


def labels_by_name(dataset, sample) -> dict[str, float]:
    return dict(zip(dataset.class_names, sample.labels.tolist()))


def expected_density(root, reading_ids, key) -> torch.Tensor:
    """reflacx_density of the readings' fixations read straight from their CSVs (either spelling)."""
    frames = [pd.read_csv(fixations_path(root, r)).rename(columns=lambda c: c.replace("average_", "")) for r in reading_ids]
    fixations = pd.concat(frames, ignore_index=True)
    as_tensor = lambda *columns: torch.tensor(fixations[list(columns)].to_numpy(float))  # noqa: E731
    image = IMAGES[key]
    return reflacx_density(
        as_tensor("x_position")[:, 0],
        as_tensor("y_position")[:, 0],
        (as_tensor("timestamp_end_fixation") - as_tensor("timestamp_start_fixation"))[:, 0],
        as_tensor("angular_resolution_x_pixels_per_degree", "angular_resolution_y_pixels_per_degree"),
        as_tensor("xmin_shown_from_image", "ymin_shown_from_image", "xmax_shown_from_image", "ymax_shown_from_image"),
        Letterbox(image.width, image.height, GRID),
    )


# ---- the clean release ----------------------------------------------------------------------


def test_one_sample_per_image_and_only_the_discarded_reading_is_counted(release):
    dataset = open_all(release)
    assert sorted(dataset.records.image_id) == sorted(image.dicom_id for image in IMAGES.values())
    assert dict(dataset.skips) == {DISCARDED: 1}
    assert dataset.multi_label and dataset.has_gaze
    assert list(dataset.records.columns) == ["image_id", "patient_id", "image_path", "width", "height", "split", "reader"]
    assert set(dataset.records.reader) == {"all"}
    assert dataset.stats() == {
        "items in this split": 6,
        "readings loaded": 10,
        "readings with gaze": 10,
        "images": 6,
        "images read by 2+ radiologists (with gaze)": 3,
        "distinct reader ids": 10,
    }


def test_official_split_maps_validate_to_dev(release):
    images_of = lambda split: sorted(ReflacxDataset(release, split=split, grid=GRID).records.image_id)  # noqa: E731
    assert images_of("test") == sorted(IMAGES[k].dicom_id for k in "ACE")
    assert images_of("dev") == sorted(IMAGES[k].dicom_id for k in "BF")
    assert images_of("train") == [IMAGES["D"].dicom_id]
    table = open_all(release).table
    assert list(table.columns) == ["image_id", "patient_id", "split"]
    assert table.set_index("image_id").loc[IMAGES["E"].dicom_id, "patient_id"] == "18111516"


def test_class_names_are_the_known_label_columns_present_in_manifest_order(release):
    dataset = open_all(release)
    new_in_phase_3 = [n for n in load_manifest("reflacx").labels["columns"]["phase_3"] if n not in PHASE_1_LABELS]
    assert dataset.class_names == PHASE_1_LABELS + new_in_phase_3
    assert set(dataset.class_names) == set(PHASE_1_LABELS) | set(PHASE_3_LABELS)


def test_labels_merge_readers_by_certainty_flags_and_text(release):
    dataset = open_all(release)
    a = labels_by_name(dataset, sample_of(dataset, "A"))
    assert a["Atelectasis"] == 1  # 4 and 0: any reader >= 3 is positive
    assert math.isnan(a["Pleural effusion"])  # 2 and 0: uncertain -> ignored
    assert math.isnan(a["Consolidation"])  # 0 and 1: uncertain
    assert a["Pneumothorax"] == 0  # only the discarded reading said 5
    assert a["Support devices"] == 1 and a["Quality issue"] == 0  # booleans in the release
    assert a["Other"] == 1  # '|'-separated text in one reading
    assert math.isnan(a["Enlarged hilum"])  # not a phase-1 column: unknown
    b = labels_by_name(dataset, sample_of(dataset, "B"))
    assert (b["Consolidation"], b["Mass"], b["Other"]) == (1, 0, 0)
    assert math.isnan(b["Nodule"])  # 1, 1, 0
    c = labels_by_name(dataset, sample_of(dataset, "C"))
    assert c["Enlarged hilum"] == 1 and c["Atelectasis"] == 0
    assert math.isnan(c["Quality issue"])  # absent from the phase-2 file
    assert math.isnan(c["Airway wall thickening"])
    e = labels_by_name(dataset, sample_of(dataset, "E"))
    assert e["Hiatal hernia"] == 1 and e["Quality issue"] == 1


def test_a_text_label_absent_from_a_phase_file_is_unknown_not_negative(release):
    drop_column(metadata_path(release, 2), "Other")
    dataset = open_all(release)
    assert math.isnan(labels_by_name(dataset, sample_of(dataset, "C"))["Other"])
    assert labels_by_name(dataset, sample_of(dataset, "B"))["Other"] == 0


def test_each_reading_is_a_separate_reader_keyed_by_its_id(release):
    dataset = open_all(release)
    assert set(sample_of(dataset, "A").readers) == {"P102R000101", "P102R000102"}  # P102R000103 was discarded
    assert set(sample_of(dataset, "B").readers) == {"P103R000201", "P103R000202", "P103R000203"}
    assert set(sample_of(dataset, "D").readers) == {"P300R000401"}
    assert all(sample_of(dataset, k).reader == "all" for k in "ABCDEF")


def test_reader_id_pattern_is_configurable_and_repeats_get_a_suffix(release):
    raw = load_manifest("reflacx").raw
    manifest = parse_manifest({**raw, "reader_id": {"column": "id", "pattern": r"^(P\d{3})R\d{6}$", "group": 1}})
    dataset = open_all(release, manifest=manifest)
    assert set(sample_of(dataset, "A").readers) == {"P102", "P102#2"}
    assert set(sample_of(dataset, "B").readers) == {"P103", "P103#2", "P103#3"}
    assert dataset.stats()["distinct reader ids"] == 4  # P102, P103, P201, P300


def test_merged_density_is_the_density_of_all_readings_fixations(release):
    dataset = open_all(release)
    for key, reading_ids in {"A": ["P102R000101", "P102R000102"], "B": ["P103R000201", "P103R000202", "P103R000203"]}.items():
        sample = sample_of(dataset, key)
        assert torch.allclose(sample.gaze, expected_density(release, reading_ids, key), atol=1e-7)
        assert float(sample.gaze.sum()) == pytest.approx(1.0, abs=1e-5)
        assert len(sample.fixations) == sum(len(reading(r).fixations) for r in reading_ids)
        for reading_id in reading_ids:
            own = sample.readers[reading_id]
            assert torch.allclose(own.gaze, expected_density(release, [reading_id], key), atol=1e-7)
            assert float(own.gaze.sum()) == pytest.approx(1.0, abs=1e-5)
            assert len(own.fixations) == len(reading(reading_id).fixations)
            assert not torch.allclose(own.gaze, sample.gaze)


def test_density_is_weighted_by_fixation_duration(release):
    # P102R000101: fixations at (15, 20) for 0.2 s and (45, 60) for 0.6 s; on the grid (10.2, 8.2) and (22.2, 24.2)
    gaze = sample_of(open_all(release), "A").readers["P102R000101"].gaze
    assert float(gaze[24, 22] / gaze[8, 10]) == pytest.approx(3.0, rel=1e-3)


def test_density_is_drawn_only_inside_the_shown_rectangle(release):
    # P102R000102: one fixation at (30, 40) while only x >= 30 was shown; grid x = 16.2, rectangle from grid x = 16
    gaze = sample_of(open_all(release), "A").readers["P102R000102"].gaze
    assert float(gaze[:, :16].sum()) == 0.0
    assert float(gaze[:, 16:].sum()) == pytest.approx(1.0, abs=1e-5)
    assert divmod(int(gaze.argmax()), GRID) == (16, 16)


def test_both_position_spellings_are_read(release):
    header = pd.read_csv(fixations_path(release, "P201R000302"), nrows=0).columns
    assert "average_x_position" in header and "x_position" not in header
    sample = sample_of(open_all(release), "C")  # 80 x 60: scale 0.4, padded 4 grid pixels at the top
    expected = torch.tensor([[70.5 * 0.4, 10.5 * 0.4 + 4, 0.4], [40.5 * 0.4, 30.5 * 0.4 + 4, 0.2]])
    assert torch.allclose(sample.readers["P201R000302"].fixations, expected, atol=1e-5)
    assert torch.allclose(sample.gaze, expected_density(release, ["P201R000301", "P201R000302"], "C"), atol=1e-7)


def test_lesions_are_the_union_of_confident_ellipses_per_class(release):
    sample = sample_of(open_all(release), "A")
    # Atelectasis: certainty 4 (reading 1) and 3 (reading 2); Consolidation and Pleural effusion only at
    # certainty 2; the discarded reading's Pneumothorax ellipse is not used
    assert set(sample.lesions) == {"Atelectasis"}
    box = Letterbox(60, 80, GRID)
    (sx, sy), (ox, oy) = box.scale, box.offset
    centres = np.arange(GRID) + 0.5
    x, y = np.meshgrid((centres - ox) / sx, (centres - oy) / sy)  # pixel centres in image pixels
    inside = lambda x0, y0, x1, y1: ((x - (x0 + x1) / 2) / ((x1 - x0) / 2)) ** 2 + ((y - (y0 + y1) / 2) / ((y1 - y0) / 2)) ** 2 <= 1  # noqa: E731
    expected = inside(5, 50, 25, 75) | inside(35, 10, 55, 30)
    assert torch.equal(sample.lesions["Atelectasis"], torch.from_numpy(expected))
    assert sample.lesions["Atelectasis"].dtype == torch.bool and bool(sample.lesions["Atelectasis"][25, 10])
    c = sample_of(open_all(release), "C")
    assert set(c.lesions) == {"Enlarged hilum", "Support devices"}  # one ellipse marked for two labels


def test_chest_box_and_transcript_come_from_the_first_reading(release):
    dataset = open_all(release)
    a = sample_of(dataset, "A")
    assert torch.allclose(a.boxes["chest"], torch.tensor([2 * 0.4 + 4, 3 * 0.4, 58 * 0.4 + 4, 77 * 0.4]))
    assert a.transcript == "left basilar atelectasis. no pneumothorax."
    f = sample_of(dataset, "F")
    assert f.transcript is None and f.lesions == {}


def test_images_are_letterboxed_from_the_jpg_tree(release):
    sample = sample_of(open_all(release), "A")  # 60 x 80 -> 24 x 32, 4 grid columns of padding each side
    assert sample.image.shape == (1, GRID, GRID)
    assert float(sample.image[..., :4].abs().max()) == 0 and float(sample.image[..., 28:].abs().max()) == 0
    assert float(sample.image[..., 8:24].mean()) == pytest.approx(200 / 255, abs=0.02)
    batch = collate([sample, sample_of(open_all(release), "C")])
    assert batch.labels.shape == (2, len(open_all(release).class_names)) and batch.readers == ["all", "all"]


def test_image_paths_prefer_the_jpg_and_fall_back_to_the_dicom(tmp_path):
    images = tmp_path / "mimic"
    root = write_reflacx(tmp_path / "reflacx", images_root=images)
    jpg = image_path(images, "D")
    jpg.with_suffix(".dcm").write_bytes(b"placeholder")
    jpg.unlink()
    dataset = ReflacxDataset(root, split="all", grid=GRID, images_root=images)
    paths = dataset.records.set_index("image_id").image_path
    assert paths[IMAGES["D"].dicom_id] == jpg.with_suffix(".dcm")
    assert paths[IMAGES["A"].dicom_id] == image_path(images, "A")
    path = IMAGES["A"].release_path
    assert mimic_relative_path(path).as_posix() == IMAGES["A"].relative_path.with_suffix(".dcm").as_posix()


# ---- bad inputs -----------------------------------------------------------------------------


def test_all_metadata_files_missing_is_a_user_error(release):
    remove_metadata(release, 1, 2, 3)
    with pytest.raises(UserError, match=r"no REFLACX metadata file found .*metadata_phase_1\.csv"):
        open_all(release)


def test_a_missing_phase_file_is_allowed(release):
    remove_metadata(release, 2)
    dataset = open_all(release)
    assert IMAGES["C"].dicom_id not in set(dataset.records.image_id) and len(dataset) == 5


def test_missing_metadata_column_names_the_file_and_column(release):
    drop_column(metadata_path(release, 3), "image_size_x")
    with pytest.raises(UserError, match=r"metadata_phase_3\.csv lacks the column\(s\) image_size_x"):
        open_all(release)


def test_missing_fixation_columns_are_named(release):
    drop_column(fixations_path(release, "P300R000401"), "timestamp_end_fixation")
    with pytest.raises(UserError, match=r"P300R000401/fixations\.csv lacks the column\(s\) timestamp_end_fixation"):
        open_all(release)


def test_missing_position_columns_name_both_spellings(release):
    drop_column(fixations_path(release, "P300R000401"), "y_position")
    with pytest.raises(UserError, match=r"x_position/y_position or average_x_position/average_y_position"):
        open_all(release)


def test_empty_or_ragged_fixations_file(release):
    path = fixations_path(release, "P103R000202")
    path.write_text(path.read_text() + "1.0,2.0,3.0\n" + ",".join(["9"] * 18) + "\n")  # short row, long row
    dataset = open_all(release)
    assert dataset.skips["fixations.csv rows with more fields than its header (dropped)"] == 1
    assert dataset.skips["fixations with a blank or unparsable number (dropped)"] == 1  # the short row's blanks
    path.write_text("")
    with pytest.raises(UserError, match=r"cannot parse .*P103R000202/fixations\.csv as CSV \(the file is empty\)"):
        open_all(release)


def test_unparsable_metadata_value_excludes_the_reading(release):
    set_metadata_value(release, "P300R000401", "image_size_x", "sixty")
    dataset = open_all(release)
    assert dataset.skips["readings with a blank or unparsable image_size_x (excluded)"] == 1
    assert IMAGES["D"].dicom_id not in set(dataset.table.image_id)


def test_unparsable_or_out_of_range_label_is_unknown_and_counted(release):
    set_metadata_value(release, "P102R000101", "Atelectasis", "four")
    set_metadata_value(release, "P300R000501", "Hiatal hernia", "7")
    dataset = open_all(release)
    assert dataset.skips["label values that did not parse or are out of range (label unknown)"] == 2
    assert math.isnan(labels_by_name(dataset, sample_of(dataset, "A"))["Atelectasis"])  # NaN and 0
    assert math.isnan(labels_by_name(dataset, sample_of(dataset, "E"))["Hiatal hernia"])


def test_unparsable_fixation_number_drops_that_fixation(release):
    set_fixation_value(release, "P102R000101", 0, "x_position", "n/a")
    set_fixation_value(release, "P103R000201", 1, "angular_resolution_y_pixels_per_degree", "")
    dataset = open_all(release)
    assert dataset.skips["fixations with a blank or unparsable number (dropped)"] == 2
    assert len(sample_of(dataset, "A").readers["P102R000101"].fixations) == 1


def test_fixations_off_the_image_are_dropped_and_counted(release):
    add_fixations(release, "P102R000101", [Fixation(-1, -1, 0.3), Fixation(60, 10, 0.3), Fixation(10, 80, 0.3), Fixation(59, 79, 0.3)])
    dataset = open_all(release)
    assert dataset.skips["fixations outside the image (x or y < 0 or beyond its width or height, dropped)"] == 3
    assert len(sample_of(dataset, "A").readers["P102R000101"].fixations) == 3  # the two of the fixture and (59, 79)


def test_fixations_with_non_positive_duration_are_dropped(release):
    set_fixation_value(release, "P103R000203", 0, "timestamp_end_fixation", "1.0")  # start is 1.0
    dataset = open_all(release)
    assert dataset.skips["fixations with a non-positive duration or angular resolution (dropped)"] == 1
    assert len(sample_of(dataset, "B").readers["P103R000203"].fixations) == 1


def test_image_missing_on_disk_is_counted(release):
    remove_image(release, "B")
    dataset = open_all(release)
    assert dataset.skips["images listed in the metadata but missing on disk (skipped)"] == 1
    assert IMAGES["B"].dicom_id not in set(dataset.table.image_id) and dataset.stats()["readings loaded"] == 7


def test_no_image_found_at_all_is_a_user_error(release, tmp_path):
    with pytest.raises(UserError, match="none of the REFLACX images were found under .*--images-root"):
        open_all(release, images_root=tmp_path / "elsewhere")


@pytest.mark.parametrize("damage", ["truncated", "not an image"])
def test_unreadable_image_is_a_user_error_when_its_sample_is_read(release, damage):
    if damage == "truncated":
        truncate_image(release, "A")
    else:
        image_path(release, "A").write_bytes(b"this is not a JPEG")
    dataset = open_all(release)  # opening reads no pixels; the sample does
    sample_of(dataset, "B")
    with pytest.raises(UserError, match=r"cannot read image .*\.jpg"):
        sample_of(dataset, "A")


def test_reading_without_fixations_file_loses_its_gaze_not_its_labels(release):
    remove_fixations(release, "P102R000102")
    dataset = open_all(release)
    assert dataset.skips["readings without a fixations.csv (no gaze)"] == 1
    a = sample_of(dataset, "A")
    assert set(a.readers) == {"P102R000101"}
    assert torch.allclose(a.gaze, expected_density(release, ["P102R000101"], "A"), atol=1e-7)
    assert math.isnan(labels_by_name(dataset, a)["Consolidation"])  # still merged with the reading's 1
    assert bool(a.lesions["Atelectasis"][8, 22])  # and its ellipse kept


def test_image_without_fixations_is_skipped_or_kept_with_zero_gaze(release):
    remove_fixations(release, "P300R000401")
    dataset = open_all(release)
    assert dataset.skips["images without any usable fixation (skipped)"] == 1
    assert IMAGES["D"].dicom_id not in set(dataset.table.image_id)
    kept = open_all(release, require_gaze=False)
    assert "images without any usable fixation (skipped)" not in kept.skips
    d = sample_of(kept, "D")
    assert float(d.gaze.abs().sum()) == 0 and d.fixations.shape == (0, 3) and d.readers == {}
    assert labels_by_name(kept, d)["Lung nodule or mass"] == 1


def test_reading_with_only_unusable_fixations_has_no_gaze(release):
    replace_fixations(release, "P300R000601", [Fixation(-1, -1, 0.3), Fixation(70, 10, 0.3)])
    dataset = open_all(release)
    assert dataset.skips["readings with no usable fixation (no gaze)"] == 1
    assert dataset.skips["images without any usable fixation (skipped)"] == 1
    assert IMAGES["F"].dicom_id not in set(dataset.records.image_id)


def test_duplicated_reading_ids_keep_the_first(release):
    duplicate_reading(release, "P103R000201", Consolidation="0")
    dataset = open_all(release)
    assert dataset.skips["duplicated reading ids (first kept)"] == 1
    b = sample_of(dataset, "B")
    assert len(b.readers) == 3 and labels_by_name(dataset, b)["Consolidation"] == 1


def test_discarded_reading_is_counted_and_never_scored(release):
    for require_gaze in (True, False):
        dataset = open_all(release, require_gaze=require_gaze)
        assert dataset.skips[DISCARDED] == 1
        assert "readings without a fixations.csv (no gaze)" not in dataset.skips
        a = sample_of(dataset, "A")
        assert "P102R000103" not in a.readers and labels_by_name(dataset, a)["Pneumothorax"] == 0
        assert "Pneumothorax" not in a.lesions


def test_unknown_and_disagreeing_splits_are_counted(release):
    set_metadata_value(release, "P300R000501", "split", "holdout")
    set_metadata_value(release, "P103R000202", "split", "test")
    dataset = open_all(release)
    assert dataset.skips["readings with an unknown split value (excluded)"] == 1
    assert dataset.skips["images whose readings disagree on the split (first reading's used)"] == 1
    splits = dataset.table.set_index("image_id").split
    assert splits[IMAGES["B"].dicom_id] == "dev" and IMAGES["E"].dicom_id not in splits.index


def test_bad_split_or_root_is_a_user_error(release, tmp_path):
    with pytest.raises(UserError, match="unknown split 'validate'"):
        ReflacxDataset(release, split="validate")
    with pytest.raises(UserError, match="does not exist"):
        ReflacxDataset(tmp_path / "nowhere")
