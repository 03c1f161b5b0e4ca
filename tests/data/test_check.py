"""``gazebench data check``'s engine on tiny releases written in the exact schemas, clean and broken."""

from pathlib import Path

import pytest
from click.testing import CliRunner

from gazebench.cli import main
from gazebench.data import check, synth
from gazebench.data.check import DECODE_SAMPLE, CheckReport, _StructureCheck, check_dataset
from gazebench.data.egd import EGDDataset
from gazebench.data.manifest import parse_manifest
from gazebench.errors import UserError
from tests.fixtures import egd_layout as egd
from tests.fixtures.mimic_layout import write_mimic_jpg
from tests.fixtures.reflacx_layout import write_reflacx

CLEAN_WARNINGS = [
    "fixations off the displayed image (-1, dropped): 6",
    "fixations beyond the image's width or height (dropped): 6",
]


def one(messages: list[str], text: str) -> str:
    """The single message containing ``text`` (fails listing them all otherwise)."""
    found = [m for m in messages if text in m]
    assert len(found) == 1, f"{text!r} in {messages}"
    return found[0]


@pytest.fixture
def release(tmp_path):
    root = tmp_path / "egd"
    master = egd.write_egd(root)
    return root, master


def test_clean_release_is_usable_with_right_stats(release):
    root, _ = release
    report = check_dataset("egd", root)
    assert report.errors == []
    assert sorted(report.warnings) == sorted(CLEAN_WARNINGS)
    assert report.usable and report.usable_images == 6
    assert report.stats["images in master_sheet.csv"] == 6
    assert report.stats["fixations in fixations.csv"] == 24
    assert report.stats["images with gaze"] == 6 and report.stats["images without gaze"] == 0
    assert report.stats["images decoded"] == 6 and report.stats["unreadable images"] == 0
    assert report.counts == {"images": (6, 1083)}
    assert one(report.notes, "this copy has 6 images; the official release (1.0.0) has 1083 images")


def test_format_has_header_sections_aligned_stats_and_verdict(release):
    root, _ = release
    text = check_dataset("egd", root).format()
    lines = text.splitlines()
    assert lines[0] == "gazebench data check: Eye Gaze Data for Chest X-rays (egd-cxr) 1.0.0 (egd)"
    assert lines[1] == f"root:        {root}"
    for section in ("errors (0)", "warnings (2)", "notes (1)", "stats", "counts (this copy of the official release)"):
        assert section in lines
    assert lines[lines.index("errors (0)") + 1] == "  (none)"
    stats = lines[lines.index("stats") + 1 : lines.index("counts (this copy of the official release)") - 1]
    assert len({line.rindex("  ") for line in stats}) == 1  # the values start in one column
    assert "  images with gaze" in text and "  images  6 of 1083" in text
    assert lines[-1] == "usable: yes"


def test_missing_fixations_file_is_an_error_and_not_usable(release):
    root, _ = release
    egd.drop_file(root, "fixations.csv")
    report = check_dataset("egd", root)
    assert one(report.errors, "missing file fixations.csv").endswith("Download it from https://physionet.org/content/egd-cxr/1.0.0/")
    assert not report.usable
    assert report.format().splitlines()[-1] == "usable: no"
    assert one(report.notes, "the content (reader, images) was not checked")


def test_missing_column_is_an_error_naming_file_and_column(release):
    root, _ = release
    egd.drop_column(root, "master_sheet.csv", "CHF")
    report = check_dataset("egd", root)
    message = one(report.errors, "master_sheet.csv lacks the column(s) CHF")
    assert "Replace the file with the release's copy" in message
    assert not report.usable


def test_optional_column_missing_is_a_note(release):
    root, _ = release
    egd.drop_column(root, "fixations.csv", "FPOGS")
    report = check_dataset("egd", root)
    assert report.usable and report.errors == []
    assert one(report.notes, "fixations.csv has no optional column(s) FPOGS")


def test_unparsable_numbers_are_counted_per_column(release):
    root, _ = release
    egd.set_cells(root, "fixations.csv", "X_ORIGINAL", [0, 1], "abc")
    egd.set_cells(root, "fixations.csv", "FPOGD", [4], "n/a")
    report = check_dataset("egd", root)
    assert one(report.warnings, "fixations.csv column X_ORIGINAL: 2 value(s) are not numbers (e.g. 'abc')")
    assert one(report.warnings, "fixations.csv column FPOGD: 1 value(s) are not numbers (e.g. 'n/a')")
    assert one(report.warnings, "fixations with an unparsable or blank number (dropped): 3")
    assert report.usable


def test_unparsable_label_is_counted(release):
    root, _ = release
    egd.set_cells(root, "master_sheet.csv", "edema__chx", [1], "maybe")
    report = check_dataset("egd", root)
    assert one(report.warnings, "master_sheet.csv column edema__chx: 1 value(s) are not labels (1, 0, -1 or blank) (e.g. 'maybe')")


def test_fixations_at_minus_one_and_outside_the_image_are_counted(release):
    root, master = release
    egd.set_cells(root, "fixations.csv", "X_ORIGINAL", [0], "-1")  # a fixation on the image moves off it
    egd.set_cells(root, "fixations.csv", "Y_ORIGINAL", [1], "500")  # ... and one below the image
    report = check_dataset("egd", root)
    assert one(report.warnings, "fixations off the displayed image (-1, dropped): 7")
    assert one(report.warnings, "fixations beyond the image's width or height (dropped): 7")


def test_ids_only_in_fixations_are_reported(release):
    root, _ = release
    unknown = egd.add_unknown_fixations(root, count=2)
    report = check_dataset("egd", root)
    assert one(report.warnings, f"1 dicom_id value(s) of fixations.csv not in master_sheet.csv (e.g. '{unknown}'); their rows are not used")
    assert one(report.warnings, "fixations of images not in master_sheet.csv or not on disk (dropped): 2")
    assert report.usable


def test_images_without_fixations_are_reported(release):
    root, master = release
    egd.drop_fixations(root, master.dicom_id[2])
    report = check_dataset("egd", root)
    assert one(report.warnings, f"1 dicom_id value(s) of master_sheet.csv with no row in fixations.csv (e.g. '{master.dicom_id[2]}')")
    assert report.stats["images without gaze"] == 1 and report.stats["images with gaze"] == 5
    assert report.usable


def test_missing_image_is_counted_and_the_rest_stays_usable(release):
    root, master = release
    egd.delete_image(egd.image_path(root, master, 1))
    report = check_dataset("egd", root)
    assert one(report.warnings, "images listed in master_sheet.csv but missing on disk: 1")
    assert report.stats["images on disk with labels"] == 5 and report.usable_images == 5
    assert report.usable


def test_truncated_image_is_a_warning_naming_it_and_saying_what_run_does(release):
    """Run and train skip and count an unreadable image, so the copy stays usable: a warning, not an error."""
    root, master = release
    path = egd.image_path(root, master, 3)
    egd.truncate_image(path)
    report = check_dataset("egd", root)
    message = one(report.warnings, f"image {master.dicom_id[3]} does not decode")
    assert str(path) in message and "replace or remove the file" in message
    assert one(report.warnings, "1 unreadable image(s): run and train skip and count them (--strict stops)")
    assert report.stats["unreadable images"] == 1 and report.stats["images decoded"] == 5
    assert report.errors == [] and report.usable


def test_every_image_is_decoded_so_one_outside_the_quick_sample_is_found(tmp_path):
    """20 images: the 16-image sample of ``--quick`` (and of data check before) misses image 2."""
    root = tmp_path / "egd"
    master = egd.write_egd(root, n_patients=19)
    reader = EGDDataset(root, split="all", grid=32, require_gaze=False)
    path = Path(reader.records.image_path.iloc[2])
    egd.truncate_image(path)
    quick = check_dataset("egd", root, decode=DECODE_SAMPLE)
    assert quick.stats["unreadable images (sample)"] == 0 and quick.stats["images decoded (sample)"] == 16
    assert one(quick.notes, "only 16 of 20 images were decoded (--quick)")
    full = check_dataset("egd", root)
    assert full.stats["images decoded"] == 19 and full.stats["unreadable images"] == 1
    assert str(path) in one(full.warnings, f"image {reader.records.image_id.iloc[2]} does not decode")
    assert len(master) == 20 and full.usable


def test_worker_processes_find_the_same(release):
    root, master = release
    for index in (1, 4):
        egd.truncate_image(egd.image_path(root, master, index))
    alone, parallel = check_dataset("egd", root, workers=0), check_dataset("egd", root, workers=2)
    assert parallel.findings == alone.findings and parallel.stats == alone.stats
    assert parallel.stats["unreadable images"] == 2


def test_unreadable_images_are_listed_up_to_a_cap_and_the_rest_counted(release, monkeypatch):
    root, master = release
    monkeypatch.setattr(check, "UNREADABLE_LISTED", 2)
    for index in (0, 2, 4):
        egd.truncate_image(egd.image_path(root, master, index))
    report = check_dataset("egd", root)
    assert one(report.warnings, "3 unreadable image(s): run and train skip and count them (--strict stops)")
    assert len([w for w in report.warnings if "does not decode" in w]) == 2
    assert one(report.warnings, "... and 1 more unreadable image(s), not listed")
    assert report.usable


def test_no_image_that_decodes_is_an_error(release):
    root, master = release
    for index in range(len(master)):
        egd.truncate_image(egd.image_path(root, master, index))
    report = check_dataset("egd", root)
    assert one(report.errors, "none of the 6 images checked decodes")
    assert report.stats["unreadable images"] == 6 and report.stats["images decoded"] == 0
    assert not report.usable


def test_an_item_that_fails_otherwise_is_an_error_since_run_stops_on_it(release, monkeypatch):
    root, master = release
    broken = master.dicom_id[2]

    def transcript(self, image_id):
        if image_id == broken:
            raise UserError("cannot read the transcript x.json (bad); replace it with the release's copy")

    monkeypatch.setattr(EGDDataset, "_transcript", transcript)
    report = check_dataset("egd", root)
    assert one(report.errors, f"item {broken} cannot be loaded: cannot read the transcript x.json (bad)").endswith("run and train stop on it")
    assert not report.usable


def test_cli_check_decodes_every_image_and_quick_samples(tmp_path):
    root = tmp_path / "egd"
    egd.write_egd(root, n_patients=19)
    egd.truncate_image(Path(EGDDataset(root, split="all", grid=32, require_gaze=False).records.image_path.iloc[2]))
    full = CliRunner().invoke(main, ["data", "check", "--dataset", "egd", "--root", str(root), "--workers", "0"])
    assert full.exit_code == 0, full.output
    assert "1 unreadable image(s): run and train skip and count them (--strict stops)" in full.output
    assert full.output.rstrip().endswith("usable: yes")
    quick = CliRunner().invoke(main, ["data", "check", "--dataset", "egd", "--root", str(root), "--quick"])
    assert quick.exit_code == 0 and "unreadable image(s)" not in quick.output and "(--quick)" in quick.output


def test_image_that_is_no_image_is_a_counted_warning_naming_it(release):
    """The EGD reader reads every image's header to place the fixations: a garbled file is an
    unreadable image like a truncated one (run and train skip it), named in the report."""
    root, master = release
    path = egd.image_path(root, master, 0)
    egd.garble_image(path)
    report = check_dataset("egd", root)
    assert one(report.warnings, "1 unreadable image(s): run and train skip and count them (--strict stops)")
    assert str(path) in report.format()
    assert report.usable


def test_duplicated_ids_are_reported(release):
    root, master = release
    egd.duplicate_row(root, "master_sheet.csv", 4)
    report = check_dataset("egd", root)
    assert one(report.warnings, f"master_sheet.csv: 1 repeated dicom_id row(s) (e.g. '{master.dicom_id[4]}', 2 rows)")
    assert one(report.warnings, "duplicated dicom_id rows in master_sheet.csv (first kept): 1")
    assert report.counts["images"] == (6, 1083)


def test_malformed_ids_are_reported_with_an_example(release):
    root, _ = release
    egd.set_cells(root, "master_sheet.csv", "patient_id", [0, 5], "1.0000001e7")
    report = check_dataset("egd", root)
    message = one(report.warnings, "master_sheet.csv column patient_id: 2 value(s) do not match the id format")
    assert "'1.0000001e7'" in message and "spreadsheet" in message


def test_optional_bounding_boxes_absent_is_a_note_only(tmp_path):
    root = tmp_path / "egd"
    egd.write_egd(root, boxes=False)
    report = check_dataset("egd", root)
    assert report.errors == [] and sorted(report.warnings) == sorted(CLEAN_WARNINGS)
    assert one(report.notes, "optional file bounding_boxes.csv is absent")
    assert report.usable


def test_missing_transcript_files_are_notes(release):
    root, master = release
    (root / "audio_segmentation_transcripts" / master.dicom_id[0] / "mediastanum.png").unlink()
    report = check_dataset("egd", root)
    assert one(report.notes, "1 of 6 folder(s) audio_segmentation_transcripts/<dicom_id>/ lack mediastanum.png")
    assert report.usable


def test_images_elsewhere_need_images_root(tmp_path):
    root, images = tmp_path / "egd", tmp_path / "mimic-cxr"
    egd.write_egd(root, images_root=images, dicom=True)
    without = check_dataset("egd", root)
    assert one(without.errors, "pass --images-root") and not without.usable
    report = check_dataset("egd", root, images_root=images)
    assert report.usable and report.stats["images decoded"] == 6
    assert f"images root: {images}" in report.format()


def test_no_images_at_all_is_an_error(release):
    root, master = release
    for index in range(len(master)):
        egd.delete_image(egd.image_path(root, master, index))
    report = check_dataset("egd", root)
    assert one(report.errors, "none of the images in")
    assert not report.usable


def test_missing_root_and_unknown_dataset(tmp_path):
    report = check_dataset("egd", tmp_path / "nowhere")
    assert one(report.errors, "does not exist; pass --root") and not report.usable
    with pytest.raises(UserError, match="no data manifest for dataset 'egd2'"):
        check_dataset("egd2", tmp_path)


def test_synthetic_dataset_checks_clean(tmp_path):
    root = synth.generate(tmp_path / "synth", n=6, seed=1, progress=False)
    report = check_dataset("synth", root)
    assert report.errors == [] and report.usable
    assert report.stats["images in master_sheet.csv"] == 6 and report.stats["images with gaze"] == 6
    assert report.counts == {"images": (6, 600)}
    assert one(report.notes, "optional file eye_gaze.csv is absent")
    assert all("(-1, dropped)" in w or "beyond the image" in w for w in report.warnings)


def test_other_layouts_check_through_their_readers(tmp_path):
    reflacx = check_dataset("reflacx", write_reflacx(tmp_path / "reflacx"))
    assert reflacx.errors == [] and reflacx.usable
    assert reflacx.counts["readings"][1] == 3052
    mimic = check_dataset("mimic", write_mimic_jpg(tmp_path / "mimic", compress=True).root)
    assert mimic.errors == [] and mimic.usable
    assert mimic.counts["images"] == (7, 377110)


# ---------------------------------------------------------------------- generic over manifests

GENERIC = {
    "name": "toy", "title": "Toy release", "version": "1", "credentialed": False, "source": "https://example.org/toy",
    "ids": {"id": r"^R\d{3}$"},
    "counts": {"readings": 4},
    "tables": {
        "index": {"path": "index_{phase}.csv", "phases": [1, 2], "key": "id", "columns": {"id": "str", "n": "int"}},
        "values": {"path": "items/{id}/values.csv", "key": "id", "columns": {"v": "float"}},
    },
    "folders": {"notes": {"path": "items/{id}", "required": False, "files": {"notes": "notes.txt"}}},
}  # fmt: skip


def structure(root, per_item_sample=None) -> CheckReport:
    report = CheckReport("toy", "Toy release", "1", root, root)
    check = _StructureCheck(parse_manifest(GENERIC), root, report, per_item_sample)
    check.run()
    check.compare_counts()
    return report


def write_toy(root):
    (root / "index_1.csv").write_text("id,n\nR001,1\nR002,x\nR003,3\nR003,3\nbad,4\n")
    for item, values in {"R001": "v\n1.5\n", "R002": "v\nabc\n2\n", "bad": "w\n1\n"}.items():
        (root / "items" / item).mkdir(parents=True)
        (root / "items" / item / "values.csv").write_text(values)
    (root / "items" / "R001" / "notes.txt").write_text("ok")


def test_phase_files_and_per_item_files_are_checked_generically(tmp_path):
    write_toy(tmp_path)
    report = structure(tmp_path)
    assert one(report.notes, "index_2.csv is absent (phase 2)")
    assert one(report.warnings, "index_1.csv column n: 1 value(s) are not whole numbers (e.g. 'x')")
    assert one(report.warnings, "index_1.csv column id: 1 value(s) do not match the id format ^R\\d{3}$ (e.g. 'bad')")
    assert one(report.warnings, "index_1.csv: 1 repeated id row(s) (e.g. 'R003', 2 rows)")
    assert one(report.notes, "1 of 4 id value(s) have no items/<id>/values.csv (e.g. items/R003/values.csv)")
    assert one(report.errors, "items/bad/values.csv lacks the column(s) v")
    assert one(report.warnings, "items/<id>/values.csv (3 of 3 files checked) column v: 1 value(s) are not numbers (e.g. 'abc')")
    assert one(report.notes, "1 of 4 id value(s) have no folder items/<id>/")
    assert one(report.notes, "2 of 3 folder(s) items/<id>/ lack notes.txt")
    assert report.counts == {"readings": (4, 4)}


def test_all_phase_files_missing_is_one_error(tmp_path):
    report = structure(tmp_path)
    assert one(report.errors, "missing file index_1.csv, index_2.csv (at least one of them)")
