"""Fuzzing the EGD, REFLACX and MIMIC-CXR-JPG readers with malformed copies of their releases.

Hypothesis takes a valid release in the real schema (``tests/fixtures/*_layout.py``) and damages
one of its tables: a byte-order mark, CRLF line ends, an extra or a missing column, text or
NaN/inf in a number column, positions off the image, rows with too many or too few fields,
other bytes than UTF-8, an unterminated quote, an empty file, random bytes; the release may
also sit under a non-ASCII folder.  Every case must end in one of two ways: a ``UserError`` of
one line (what ``gazebench`` prints, exit 2), or a dataset whose samples hold only finite
numbers and whose ``skips`` count what was left out.  What a release may look like as
PhysioNet ships it (BOM, CRLF, extra columns, any folder name) must read exactly as the
pristine copy does.  Bounded: a few dozen examples per test, tiny images, grid 16.
"""

from __future__ import annotations

import csv
import gzip
import math
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gazebench.cli import main
from gazebench.data.datasets import open_dataset
from gazebench.data.manifest import LARGEST_NUMBER, load_manifest, long_rows_reason, read_text
from gazebench.errors import UserError
from tests.fixtures import egd_layout, mimic_layout, reflacx_layout

GRID = 16
FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
KINDS = ("egd", "reflacx", "mimic")
READINGS = ("P102R000101", "P201R000302", "P300R000501")  # not the discarded reading; P201R000302 spells average_x_position


@dataclass(frozen=True)
class Table:
    """One CSV of a release: its path under the root, its manifest table, the number columns the reader uses, the valid rows."""

    path: str
    spec: str
    numbers: tuple[str, ...]
    positions: tuple[str, ...] = ()  # fixation coordinates in image pixels
    texts: tuple[str, ...] = ()  # text columns the reader needs in every row (ids, paths, names)
    rows: tuple[int, ...] | None = None  # data rows that lead to a usable item in the pristine copy (None: all)


# EGD fixations: rows 4i and 4i + 1 lie on image i; 4i + 2 is at -1, 4i + 3 beyond the width (egd_layout)
EGD_ON_IMAGE = tuple(row for image in range(6) for row in (4 * image, 4 * image + 1))
REFLACX_FIXATION_NUMBERS = (
    "timestamp_start_fixation", "timestamp_end_fixation", "angular_resolution_x_pixels_per_degree",
    "angular_resolution_y_pixels_per_degree", "xmin_shown_from_image", "ymax_shown_from_image",
)  # fmt: skip
REFLACX_METADATA_TEXTS = ("id", "split", "image", "dicom_id", "subject_id")
TABLES = {
    "egd": [
        Table("master_sheet.csv", "master_sheet", ("Normal", "CHF", "pneumonia"), texts=("dicom_id", "path", "patient_id")),
        Table("fixations.csv", "fixations", ("FPOGD", "X_ORIGINAL", "Y_ORIGINAL"), ("X_ORIGINAL", "Y_ORIGINAL"), ("DICOM_ID",), EGD_ON_IMAGE),
        Table("bounding_boxes.csv", "bounding_boxes", ("x1", "x2", "y1", "y2"), texts=("dicom_id", "bbox_name")),
    ],
    "reflacx": [
        *(Table(f"main_data/metadata_phase_{p}.csv", "metadata", ("image_size_x", "image_size_y", "eye_tracking_data_discarded", "Atelectasis", "Support devices"), texts=REFLACX_METADATA_TEXTS) for p in (1, 2, 3)),
        *(Table(f"main_data/{r}/fixations.csv", "fixations", (*REFLACX_FIXATION_NUMBERS, "x_position", "y_position"), ("x_position", "y_position")) for r in READINGS),
        Table("main_data/P102R000101/anomaly_location_ellipses.csv", "ellipses", ("xmin", "ymin", "xmax", "ymax", "certainty")),
        Table("main_data/P300R000401/chest_bounding_box.csv", "chest_box", ("xmin", "ymin", "xmax", "ymax")),
    ],
    "mimic": [  # rows of frontal images only (mimic_layout.default_images: LATERAL and LL are left out anyway)
        Table(mimic_layout.METADATA_FILE, "metadata", ("Rows", "Columns"), texts=("dicom_id", "subject_id", "study_id", "ViewPosition"), rows=(0, 1, 3, 4, 5)),
        Table(mimic_layout.LABEL_FILES["chexpert"], "chexpert", ("Atelectasis", "Edema", "No Finding"), texts=("subject_id", "study_id"), rows=(0, 1, 2, 3)),
        Table(mimic_layout.SPLIT_FILE, "split", (), texts=("dicom_id", "split"), rows=(0, 1, 3, 4, 5)),
    ],
}
NON_FINITE = ["nan", "NaN", "-nan", "inf", "-inf", "Infinity", "-Infinity", "1e400", "-1e999", "3.5e38", "-1e39"]
NASTY = ["abc", "1,5", "0x10", "1e", "--1", "1.2.3", "∞", "一", "TRUE!", "None", "null", "N/A", "#DIV/0!", '"', "1 2", "\t?"]
NAMES = st.text(alphabet=st.characters(codec="utf-8", categories=("L", "N", "M")), min_size=1, max_size=8)


def is_number(text: str) -> bool:
    """Whether ``text`` reads as a finite number gazebench can compute with (the oracle of "junk")."""
    try:
        value = float(text)
    except ValueError:
        return False
    return math.isfinite(value) and abs(value) <= LARGEST_NUMBER


JUNK = st.one_of(st.sampled_from(NASTY), st.text(min_size=1, max_size=10)).filter(
    lambda text: text.strip() != "" and not is_number(text) and text.strip().lower() not in ("true", "false")
)
OFF_IMAGE = st.one_of(st.floats(-1e30, -1e-3), st.floats(100.0, 1e30)).map(repr)  # every fixture image is at most 100 px


# ---------------------------------------------------------------------- releases


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> dict[str, Path]:
    """One valid release of each kind, written once; every example damages a copy."""
    folder = tmp_path_factory.mktemp("pristine")
    egd_layout.write_egd(folder / "egd")
    reflacx_layout.write_reflacx(folder / "reflacx")
    mimic_layout.write_mimic_jpg(folder / "mimic")
    return {kind: folder / kind for kind in KINDS}


@pytest.fixture(scope="module")
def baselines(pristine) -> dict[str, Outcome]:
    """What the pristine releases read as."""
    return {kind: read_release(kind, root) for kind, root in pristine.items()}


@dataclass
class Outcome:
    """How opening and reading a release ended: a one-line error, or the dataset's items and skips."""

    error: str | None = None
    image_ids: list[str] = field(default_factory=list)
    skips: Counter = field(default_factory=Counter)
    samples: list = field(default_factory=list)

    def counted_more_than(self, baseline: Outcome) -> bool:
        """Some reason counts more skips than in ``baseline``."""
        return any(count > baseline.skips[reason] for reason, count in self.skips.items())


def read_release(kind: str, root: Path) -> Outcome:
    """Open every split of the release at ``root`` and read every sample; any exception but a UserError escapes."""
    try:
        dataset = open_dataset(kind, root, "all", GRID, require_gaze=kind != "mimic", use_cache=False)
        samples = [dataset[index] for index in range(len(dataset))]
    except UserError as error:
        message = str(error)
        assert message and "\n" not in message and "Traceback" not in message, message
        return Outcome(error=message)
    for sample in samples:
        assert_finite(sample)
    skips = Counter({reason: count for reason, count in dataset.skips.items() if count})
    return Outcome(image_ids=list(dataset.records.image_id), skips=skips, samples=samples)


def assert_finite(sample) -> None:
    """Images, gaze densities, fixations and boxes hold finite numbers (labels may be NaN: unknown)."""
    tensors = {"image": sample.image, "gaze": sample.gaze, "fixations": sample.fixations, **{f"box {k}": v for k, v in sample.boxes.items()}}
    for key, reader in sample.readers.items():
        tensors[f"reader {key} gaze"], tensors[f"reader {key} fixations"] = reader.gaze, reader.fixations
    for name, tensor in tensors.items():
        assert torch.isfinite(tensor).all(), f"{sample.image_id}: non-finite values in {name}"
    if sample.fixations.numel():
        assert float(sample.gaze.sum()) == pytest.approx(1.0, abs=1e-4)


def same_reading(outcome: Outcome, baseline: Outcome) -> None:
    """The damaged copy reads exactly as the pristine one: same items, skips and tensors."""
    assert outcome.error is None, outcome.error
    assert outcome.image_ids == baseline.image_ids and outcome.skips == baseline.skips
    for sample, expected in zip(outcome.samples, baseline.samples):
        assert torch.equal(sample.gaze, expected.gaze) and torch.equal(sample.fixations, expected.fixations)
        assert torch.equal(sample.image, expected.image) and torch.allclose(sample.labels, expected.labels, equal_nan=True)
        assert sample.boxes.keys() == expected.boxes.keys() and all(torch.equal(sample.boxes[k], expected.boxes[k]) for k in sample.boxes)


def copy_release(source: Path, folder: Path) -> Path:
    shutil.copytree(source, folder)
    return folder


def read_rows(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as file:
        return list(csv.reader(file))


def write_rows(path: Path, rows: list[list[str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as file:
        csv.writer(file, lineterminator="\n").writerows(rows)


def column_index(rows: list[list[str]], name: str) -> int:
    header = rows[0]
    alternatives = {"x_position": "average_x_position", "y_position": "average_y_position"}
    return header.index(name) if name in header else header.index(alternatives[name])


# ---------------------------------------------------------------------- what PhysioNet may ship


@FUZZ
@given(
    kind=st.sampled_from(KINDS),
    data=st.data(),
    bom=st.booleans(),
    crlf=st.booleans(),
    extra=st.one_of(st.none(), st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")), max_size=6)),
    folder=st.one_of(st.just("release"), NAMES),
)
def test_bom_crlf_extra_columns_and_any_folder_name_read_as_the_pristine_copy(pristine, baselines, kind, data, bom, crlf, extra, folder):
    everywhere = data.draw(st.booleans(), "every table")
    tables = TABLES[kind] if everywhere else [data.draw(st.sampled_from(TABLES[kind]), "table")]
    with tempfile.TemporaryDirectory() as temporary:
        root = copy_release(pristine[kind], Path(temporary) / folder / "copy")
        for table in tables:
            path = root / table.path
            if extra is not None:
                rows = read_rows(path)
                write_rows(path, [rows[0] + [f"extra {extra}"]] + [row + [extra] for row in rows[1:]])
            content = path.read_bytes()
            if crlf:
                content = content.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
            path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + content)
        same_reading(read_release(kind, root), baselines[kind])


# ---------------------------------------------------------------------- damaged tables


DAMAGES = [
    "missing column", "empty file", "header only", "not UTF-8", "unterminated quote", "long row", "short row",
    "junk anywhere", "repeated column", "random bytes", "junk number", "non-finite number", "position off the image",
    "blank text",
]  # fmt: skip
FILE_ERRORS = {"missing column", "empty file", "not UTF-8", "unterminated quote"}  # the file cannot be used: a UserError naming it
COUNTED = {"long row", "junk number", "non-finite number", "position off the image", "blank text"}  # one value or row is left out, and counted


def damage(data, kind: str, root: Path, what: str) -> tuple[Table, str | None]:
    """Damage one table of the release at ``root`` in the way ``what``; returns (the table, the column it concerns)."""
    needs = {"junk number": "numbers", "non-finite number": "numbers", "position off the image": "positions", "blank text": "texts"}
    table = data.draw(st.sampled_from([t for t in TABLES[kind] if what not in needs or getattr(t, needs[what])]), "table")
    path = root / table.path
    rows = read_rows(path)
    header, body = rows[0], rows[1:]
    column = None
    row = data.draw(st.sampled_from(table.rows or range(len(body))), "row") if body else None
    if what == "missing column":
        spec = load_manifest(kind).table(table.spec)
        required = [c for c in header if c in spec.columns or any(c in names for names in spec.one_of)]
        column = data.draw(st.sampled_from(required), "column")
        index = header.index(column)
        write_rows(path, [r[:index] + r[index + 1 :] for r in rows])
    elif what == "empty file":
        path.write_bytes(b"")
    elif what == "header only":
        write_rows(path, [header])
    elif what == "not UTF-8":
        position = data.draw(st.integers(len(",".join(header)) + 1, len(path.read_bytes())), "byte")
        content = path.read_bytes()
        path.write_bytes(content[:position] + data.draw(st.sampled_from([b"\xff", b"\xe9t\xe9", b"\xc3\x28", b"\x80\x81"])) + content[position:])
    elif what == "unterminated quote":
        with open(path, "a", encoding="utf-8") as file:
            file.write('"' + ",".join(body[-1]) + "\n")
    elif what == "long row":
        body[row] = body[row] + data.draw(st.lists(st.text(max_size=3), min_size=1, max_size=3).filter(lambda fields: any(field.strip() for field in fields)), "extra fields")  # blank extras are a trailing blank field, kept
        write_rows(path, [header, *body])
    elif what == "short row":
        body[row] = body[row][: data.draw(st.integers(1, len(header) - 1), "fields kept")]
        write_rows(path, [header, *body])
    elif what == "junk anywhere":
        body[row][data.draw(st.integers(0, len(header) - 1), "column index")] = data.draw(st.text(max_size=10), "value")
        write_rows(path, [header, *body])
    elif what == "repeated column":
        header[data.draw(st.integers(1, len(header) - 1), "renamed")] = header[0]
        write_rows(path, [header, *body])
    elif what == "random bytes":
        path.write_bytes(data.draw(st.binary(max_size=300), "bytes"))
    else:
        column = data.draw(st.sampled_from(getattr(table, needs[what])), "column")
        values = {"junk number": JUNK, "non-finite number": st.sampled_from(NON_FINITE), "position off the image": OFF_IMAGE, "blank text": st.sampled_from(["", " ", "\t"])}[what]
        body[row][column_index(rows, column)] = data.draw(values, "value")
        write_rows(path, [header, *body])
    return table, column


@pytest.mark.parametrize("what", DAMAGES)
@settings(FUZZ, max_examples=6)
@given(data=st.data())
def test_damaged_tables_end_in_one_line_or_a_counted_skip(pristine, baselines, what, data):
    kind = data.draw(st.sampled_from([k for k in KINDS if what != "position off the image" or k != "mimic"]), "kind")  # MIMIC has no gaze
    with tempfile.TemporaryDirectory() as temporary:
        root = copy_release(pristine[kind], Path(temporary) / "copy")
        table, column = damage(data, kind, root, what)
        outcome = read_release(kind, root)
    if what in FILE_ERRORS:
        assert outcome.error is not None and table.path in outcome.error, (what, outcome)
        if what == "missing column":
            assert f"lacks the column(s) {column}" in outcome.error or column in outcome.error.split("lacks the column(s)")[1]
        else:
            assert f"cannot parse {root / table.path} as CSV" in outcome.error
    elif what in COUNTED:
        assert outcome.error is None, (what, outcome.error)
        assert outcome.counted_more_than(baselines[kind]), (what, column, outcome.skips, baselines[kind].skips)
        if what == "long row":
            assert outcome.skips[long_rows_reason(table.path)] == 1


def test_a_huge_fixation_table_is_read_and_its_off_image_rows_counted(tmp_path):
    """20 000 extra fixations of image 0, half of them beyond its width: read in bounded time, every drop counted."""
    root = tmp_path / "egd"
    egd_layout.write_egd(root, n_patients=2)
    rows = read_rows(root / "fixations.csv")
    header, first = rows[0], rows[1]
    x = header.index("X_ORIGINAL")
    extra = [first[:x] + [str(10 + i % 60)] + first[x + 1 :] for i in range(10_000)]
    extra += [first[:x] + [str(80 + i)] + first[x + 1 :] for i in range(10_000)]  # the images are 80 px wide
    write_rows(root / "fixations.csv", [*rows, *extra])
    start = time.perf_counter()
    outcome = read_release("egd", root)
    seconds = time.perf_counter() - start
    assert outcome.error is None
    assert outcome.skips["fixations beyond the image's width or height (dropped)"] == 10_000 + 3  # the fixture's one per image
    assert len(outcome.samples[0].fixations) == 2 + 10_000
    assert seconds < 60, f"reading 20 000 fixations took {seconds:.0f} s"


def test_a_huge_per_reading_fixation_file_is_read(tmp_path):
    """REFLACX: one reading with 20 000 fixations (half outside the image) next to the others."""
    root = reflacx_layout.write_reflacx(tmp_path / "reflacx")
    reading = "P300R000401"  # image D, 60 x 80
    inside = [reflacx_layout.Fixation(1 + i % 50, 1 + i % 70, 0.01) for i in range(10_000)]
    outside = [reflacx_layout.Fixation(60 + i, 10, 0.01) for i in range(10_000)]
    reflacx_layout.replace_fixations(root, reading, inside + outside)
    outcome = read_release("reflacx", root)
    assert outcome.error is None
    assert outcome.skips["fixations outside the image (x or y < 0 or beyond its width or height, dropped)"] == 10_000
    image = reflacx_layout.image_of(reading).dicom_id
    assert len(outcome.samples[outcome.image_ids.index(image)].fixations) == 10_000


# ---------------------------------------------------------------------- through the command line


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(kind=st.sampled_from(["egd", "reflacx"]), data=st.data())
def test_run_on_a_damaged_release_prints_one_line_exits_2_and_writes_nothing(pristine, kind, data):
    """`gazebench run` opens the data before the model: a damaged table is one line on stderr and exit 2,
    an intact one gets as far as the (missing) checkpoint; the --out folder is never created."""
    with tempfile.TemporaryDirectory() as temporary:
        root = copy_release(pristine[kind], Path(temporary) / "données" / "copy")
        what = data.draw(st.sampled_from(DAMAGES), "damage")
        table, _ = damage(data, kind, root, what)
        out, checkpoint = Path(temporary) / "run", Path(temporary) / "absent.pt"
        args = ["run", "--model", "unet_gaze", "--data", kind, "--root", str(root), "--split", "all", "--checkpoint", str(checkpoint), "--limit", "1", "--out", str(out)]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2, (what, result.output, result.exception)
        assert result.exception is None or isinstance(result.exception, SystemExit), (what, result.exception)
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("gazebench: error: "), (what, result.stderr)
        if what in FILE_ERRORS:
            assert table.path in result.stderr, (what, result.stderr)
        assert not out.exists()


# ---------------------------------------------------------------------- what the fuzzing found, pinned


def test_a_ragged_table_names_repeated_columns_as_a_regular_one(tmp_path):
    """The csv-module path (ragged files) names repeated columns as pandas does, and counts the long row."""
    regular, ragged = tmp_path / "a.csv", tmp_path / "b.csv"
    regular.write_text("a,b,a,c\n1,2,3,4\n")
    ragged.write_text("a,b,a,c\n1,2,3,4\n5,6,7,8,9\n")
    (first, _), (second, dropped) = read_text(regular), read_text(ragged)
    assert list(first.columns) == list(second.columns) == ["a", "b", "a.1", "c"] and dropped == 1
    assert first.iloc[0].tolist() == second.iloc[0].tolist() == ["1", "2", "3", "4"]


def test_a_long_first_row_is_dropped_not_read_as_an_index(tmp_path):
    """pandas takes the extra fields of a long first row for an index and shifts every column; it is dropped instead."""
    path = tmp_path / "a.csv"
    path.write_text("a,b,c\n1,2,3,4\n5,6,7\n8,9,10,\n")  # a trailing comma loses nothing: kept
    frame, dropped = read_text(path)
    assert frame.values.tolist() == [["5", "6", "7"], ["8", "9", "10"]] and dropped == 1


def test_a_repeated_column_in_a_per_reading_file_is_read(tmp_path):
    root = reflacx_layout.write_reflacx(tmp_path / "reflacx")
    path = reflacx_layout.fixations_path(root, "P300R000401")
    rows = read_rows(path)
    rows[0][-1] = rows[0][0]  # ymax_in_screen_coordinates (unused) renamed timestamp_start_fixation
    write_rows(path, rows)
    outcome = read_release("reflacx", root)
    assert outcome.error is None and len(outcome.samples) == 6


@pytest.mark.parametrize("value", ["", " "])
@pytest.mark.parametrize("column", ["path", "patient_id", "dicom_id"])
def test_a_blank_id_or_path_in_the_master_sheet_is_counted(tmp_path, column, value):
    """A blank path used to crash the reader, a blank patient_id to put the image under patient 'nan'."""
    root = tmp_path / "egd"
    egd_layout.write_egd(root)
    egd_layout.set_cells(root, "master_sheet.csv", column, [1], value)
    outcome = read_release("egd", root)
    assert outcome.error is None and outcome.image_ids == [egd_layout.dicom_id(i) for i in (0, 2, 3, 4, 5)]
    assert outcome.skips["rows with a blank dicom_id, path or patient_id in master_sheet.csv (skipped)"] == 1


@pytest.mark.parametrize("value", ["inf", "1e400", "1e-300", "0.5", "70000", "-3"])
def test_an_impossible_image_size_is_counted(tmp_path, value):
    root = reflacx_layout.write_reflacx(tmp_path / "reflacx")
    reflacx_layout.set_metadata_value(root, "P300R000401", "image_size_x", value)
    outcome = read_release("reflacx", root)
    assert outcome.error is None and reflacx_layout.image_of("P300R000401").dicom_id not in outcome.image_ids
    assert outcome.skips["readings with a blank or unparsable image_size_x (excluded)"] == 1
    release = mimic_layout.write_mimic_jpg(tmp_path / "mimic")
    rows = read_rows(release.root / mimic_layout.METADATA_FILE)
    rows[1][rows[0].index("Rows")] = value
    write_rows(release.root / mimic_layout.METADATA_FILE, rows)
    outcome = read_release("mimic", release.root)
    assert outcome.error is None and release.images[0].dicom_id not in outcome.image_ids
    assert outcome.skips[f"images with a blank or unparsable Rows/Columns in {mimic_layout.METADATA_FILE} (skipped)"] == 1


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e39"])
def test_non_finite_durations_and_timestamps_are_dropped(tmp_path, value):
    root = tmp_path / "egd"
    egd_layout.write_egd(root)
    egd_layout.set_cells(root, "fixations.csv", "FPOGD", [0], value)
    outcome = read_release("egd", root)
    assert outcome.skips["fixations with an unparsable or blank number (dropped)"] == 1 and len(outcome.samples[0].fixations) == 1
    root = reflacx_layout.write_reflacx(tmp_path / "reflacx")
    reflacx_layout.set_fixation_value(root, "P300R000401", 0, "timestamp_end_fixation", value)
    outcome = read_release("reflacx", root)
    assert outcome.skips["fixations with a blank or unparsable number (dropped)"] == 1


def test_a_damaged_gzipped_table_is_one_line_and_a_ragged_one_counted(tmp_path):
    release = mimic_layout.write_mimic_jpg(tmp_path / "mimic", compress=True)
    path = release.root / f"{mimic_layout.METADATA_FILE}.gz"
    text = gzip.decompress(path.read_bytes()).decode()
    lines = text.splitlines()
    lines[1] += ",x,y"
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    outcome = read_release("mimic", release.root)
    assert outcome.error is None and outcome.skips[long_rows_reason(path)] == 1 and release.images[0].dicom_id not in outcome.image_ids
    path.write_bytes(gzip.compress(text.encode())[:40])
    assert read_release("mimic", release.root).error == f"cannot parse {path} as CSV (Compressed file ended before the end-of-stream marker was reached); replace the file with the release's copy"
