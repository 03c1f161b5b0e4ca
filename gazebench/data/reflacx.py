"""Reader for the REFLACX release (reflacx-xray-localization 1.0.0): one Sample per image.

It reads the layout exactly as released and described by ``data_manifests/reflacx.yaml``:
``main_data/metadata_phase_{1,2,3}.csv`` (one row per reading: ids, the MIMIC-CXR image path
and size, the official split, the labels), and per reading ``main_data/<id>/fixations.csv``,
``anomaly_location_ellipses.csv``, ``chest_bounding_box.csv`` and ``transcription.txt``.
Images come from a MIMIC-CXR-JPG tree (``.jpg`` preferred) or MIMIC-CXR (``.dcm``).

Several radiologists read some images (five in phases 1-2), so a Sample is one IMAGE: ``gaze``
is the density of all its readings' fixations together (``reader="all"``) and ``readers`` keeps
each reading's own density apart, for the inter-observer ceiling.  The release names no
radiologist: a reading's key comes from the manifest's ``reader_id`` (the reading id by default).

Labels (``data_manifests/README.md``, "Multi-label policy"): certainty columns 0-5 (>= 3 positive,
1-2 uncertain), ``Support devices`` / ``Quality issue`` booleans and ``Other`` '|'-separated text
(non-blank = positive), merged over an image's readings with ``labels.merge_readers``; a label
column absent from a phase's file is unknown for that phase's readings.  Per-reading CSVs are
read with the csv module and typed once, stacked (``manifest.read_item_tables``): thousands of tiny
``read_table`` calls would take minutes on the full release.

What counts as what (every drop is counted in ``skips``):
- excluded readings (no labels, no gaze): discarded eye tracking, duplicated ids, a blank or
  unparsable required metadata value (an image side must be 1 to ``gaze.MAX_IMAGE_SIDE`` px),
  an unknown split, an image missing on disk;
- readings without gaze (labels, ellipses and boxes kept): no ``fixations.csv``, or no usable
  fixation in it (off the image, unparsable, non-positive duration or angular resolution);
- images without any reading with gaze: skipped with ``require_gaze`` (kept with zero gaze otherwise).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
import torch

from gazebench.data.base import GazeDataset, check_root, check_split
from gazebench.data.gaze import GazeConvention, Letterbox, egd_density, reflacx_density, usable_side
from gazebench.data.images import letterbox_array, read_grey
from gazebench.data.labels import DEFAULT_POSITIVE_CERTAINTY, DEFAULT_UNCERTAIN, certainty_labels, merge_readers
from gazebench.data.manifest import LARGEST_NUMBER, Manifest, TableSpec, convert_column, load_manifest, long_rows_reason, read_item_tables, read_table, table_path
from gazebench.data.sample import ReaderGaze, Sample
from gazebench.errors import UserError

# Column names the reader uses, all listed in data_manifests/reflacx.yaml (checked on load).
DISCARDED = "eye_tracking_data_discarded"
IMAGE_ID = "dicom_id"
PATIENT_ID = "subject_id"
START, END = "timestamp_start_fixation", "timestamp_end_fixation"
X, Y = "x_position", "y_position"  # canonical names of the ``one_of`` alternatives
PIXELS_PER_DEGREE = ("angular_resolution_x_pixels_per_degree", "angular_resolution_y_pixels_per_degree")
SHOWN_RECT = ("xmin_shown_from_image", "ymin_shown_from_image", "xmax_shown_from_image", "ymax_shown_from_image")
BOX = ("xmin", "ymin", "xmax", "ymax")
CERTAINTY = "certainty"
READING = "reading_id"  # the column naming the reading of each row of a stacked per-reading table
# label kind in the manifest -> column type read_table converts it to
LABEL_TYPES = {"certainty": "int", "flags": "bool", "text": "str"}


@dataclass
class _Fixations:
    """One reading's usable fixations in original-image pixels."""

    x: np.ndarray  # [N]
    y: np.ndarray  # [N]
    duration: np.ndarray  # [N] seconds
    pixels_per_degree: np.ndarray  # [N, 2] x, y
    shown_rects: np.ndarray  # [N, 4] xmin, ymin, xmax, ymax

    @staticmethod
    def concat(parts: list["_Fixations"]) -> "_Fixations":
        return _Fixations(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("x", "y", "duration", "pixels_per_degree", "shown_rects")))


@dataclass
class _Annotations:
    """What the radiologists drew or said about one image, in original-image pixels."""

    ellipses: dict[str, np.ndarray]  # class -> [E, 4] boxes of the ellipses (certainty >= positive_from)
    chest_box: np.ndarray | None  # [4]
    transcript: str | None


def label_kinds(manifest: Manifest) -> dict[str, str]:
    """Every known label column in class order -> ``certainty``, ``flags`` or ``text``."""
    labels = manifest.labels
    kinds: dict[str, str] = {}
    for names in (labels.get("columns") or {}).values():
        for name in names:
            kinds.setdefault(name, "certainty")
    for kind in ("flags", "text"):
        for name in labels.get(kind) or []:
            if name in kinds:
                kinds[name] = kind
    return kinds


def metadata_spec(manifest: Manifest) -> TableSpec:
    """The metadata table's spec with every known label column typed by its kind (for read_table)."""
    spec = manifest.table("metadata")
    label_types = {name: LABEL_TYPES[kind] for name, kind in label_kinds(manifest).items()}
    return replace(spec, optional_columns={**spec.optional_columns, **label_types})


def mimic_relative_path(image: str) -> Path:
    """The part of a MIMIC-CXR path from its last ``files`` folder on (the path itself when it has none)."""
    parts = PurePosixPath(image.replace("\\", "/")).parts
    if "files" not in parts:
        return Path(image)
    start = len(parts) - 1 - parts[::-1].index("files")
    return Path(*parts[start:])


def reader_key(reading_id: str, pattern: re.Pattern, group: int) -> str | None:
    """The radiologist key of a reading (group ``group`` of ``pattern``), None when it does not match."""
    match = pattern.match(reading_id)
    return match.group(group) if match else None


def ellipse_mask(boxes: np.ndarray, box: Letterbox) -> torch.Tensor:
    """Union of the ellipses inscribed in ``boxes`` [E, 4] (image pixels) on the grid: [G, G] bool.

    A grid pixel is inside when its centre is.
    """
    (sx, sy), (ox, oy) = box.scale, box.offset
    boxes = torch.as_tensor(boxes, dtype=torch.float64)
    centre_x = (boxes[:, 0] + boxes[:, 2]) / 2 * sx + ox
    centre_y = (boxes[:, 1] + boxes[:, 3]) / 2 * sy + oy
    half_x = (boxes[:, 2] - boxes[:, 0]).abs() / 2 * sx
    half_y = (boxes[:, 3] - boxes[:, 1]).abs() / 2 * sy
    centres = torch.arange(box.grid, dtype=torch.float64) + 0.5
    along_x = ((centres - centre_x[:, None]) / half_x[:, None]) ** 2  # [E, G]
    along_y = ((centres - centre_y[:, None]) / half_y[:, None]) ** 2
    return ((along_y[:, :, None] + along_x[:, None, :]) <= 1).any(dim=0)


def box_to_grid(coordinates: np.ndarray, box: Letterbox) -> torch.Tensor:
    """xmin, ymin, xmax, ymax from image pixels to grid coordinates: [4] float."""
    (sx, sy), (ox, oy) = box.scale, box.offset
    scale = np.array([sx, sy, sx, sy])
    offset = np.array([ox, oy, ox, oy])
    return torch.from_numpy(coordinates * scale + offset).float()


class ReflacxDataset(GazeDataset):
    """Samples (one per image) of one split of a REFLACX-layout release, on a ``grid`` x ``grid`` grid."""

    def __init__(
        self,
        root: Path,
        split: str = "test",
        grid: int = 224,
        convention: GazeConvention | None = None,
        images_root: Path | None = None,
        require_gaze: bool = True,
        name: str = "reflacx",
        manifest: Manifest | None = None,
    ):
        check_split(split)
        self.manifest = manifest or load_manifest(name)
        self.root = check_root(root, self.manifest)
        self.images_root = Path(images_root or root)
        self.name, self.split, self.grid = name, split, grid
        self.convention = convention or self.manifest.gaze
        self.multi_label, self.has_gaze = True, True
        self.skips: Counter[str] = Counter()
        self._check_manifest()
        self._kinds = label_kinds(self.manifest)
        readings, present = self._read_metadata()
        readings = self._usable_readings(readings)
        self.class_names = [label for label in self._kinds if label in present]
        self._labels = self._image_labels(readings, present)
        self._fixations = self._read_all_fixations(readings)
        images = self._images(readings)
        self._gaze_readings = self._group_gaze_readings(readings)
        if require_gaze:
            no_gaze = ~images.image_id.isin(self._gaze_readings.keys())
            self._skip("images without any usable fixation (skipped)", int(no_gaze.sum()))
            images = images[~no_gaze]
        self._readings = readings[readings[IMAGE_ID].isin(images.image_id)]
        self.table = images[["image_id", "patient_id", "split"]].reset_index(drop=True)
        selected = images if split == "all" else images[images.split == split]
        self.records = selected[["image_id", "patient_id", "image_path", "width", "height", "split"]].assign(reader="all").reset_index(drop=True)
        self._annotations = self._read_annotations(self._readings[self._readings[IMAGE_ID].isin(self.records.image_id)])

    def _skip(self, reason: str, count: int) -> None:
        """Count ``count`` things left out for ``reason`` (zero counts are not recorded)."""
        if count:
            self.skips[reason] += int(count)

    # ---- manifest ------------------------------------------------------------------------

    def _check_manifest(self) -> None:
        """The manifest lists every column this reader uses (a config mistake otherwise)."""
        tables = self.manifest.tables
        needed = {
            "metadata": [self._id_column, self._split_column, self._image_column, *self._size_columns, DISCARDED, IMAGE_ID, PATIENT_ID],
            "fixations": [START, END, X, Y, *PIXELS_PER_DEGREE, *SHOWN_RECT],
            "ellipses": [*BOX, CERTAINTY],
            "chest_box": list(BOX),
        }
        for table, columns in needed.items():
            missing = [c for c in columns if table not in tables or c not in tables[table].typed_columns()]
            if missing:
                raise ValueError(f"manifest {self.manifest.name}: table {table} does not list {', '.join(missing)}")

    @property
    def _id_column(self) -> str:
        return self.manifest.table("metadata").key or "id"

    @property
    def _split_column(self) -> str:
        return self.manifest.raw["splits"]["column"]

    @property
    def _image_column(self) -> str:
        return self.manifest.images["column"]

    @property
    def _size_columns(self) -> list[str]:
        return list(self.manifest.images["size_columns"])

    # ---- metadata ------------------------------------------------------------------------

    def _read_metadata(self) -> tuple[pd.DataFrame, dict[str, set[int]]]:
        """Every present ``metadata_phase_*.csv`` concatenated (with ``phase``), and label -> phases holding it."""
        spec = metadata_spec(self.manifest)
        phases = self.manifest.raw["tables"]["metadata"]["phases"]
        frames, present = [], {}
        for phase in phases:
            if not table_path(self.root, spec, phase=phase).is_file():
                continue
            frame = self._check_labels(read_table(self.root, spec, phase=phase))
            self._skip(long_rows_reason(frame.attrs["path"]), frame.attrs["long_rows"])
            for label in self._kinds:
                if label in frame.columns:
                    present.setdefault(label, set()).add(phase)
            frames.append(frame.assign(phase=phase))
        if not frames:
            expected = ", ".join(str(table_path(self.root, spec, phase=p)) for p in phases)
            raise UserError(f"no REFLACX metadata file found (expected at least one of {expected}); is --root the folder of {self.manifest.obtain_hint()}?")
        return pd.concat(frames, ignore_index=True), present

    def _check_labels(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Certainties outside the manifest's range become unknown; those and unparsable values are counted."""
        bad = sum(count for column, count in frame.attrs["unparsable"].items() if column in self._kinds)
        low, high = self.manifest.labels.get("certainty_range", (0, 5))
        for column in frame.columns:
            if self._kinds.get(column) == "certainty":
                values = frame[column]
                outside = values.notna() & ((values < low) | (values > high) | (values % 1 != 0))
                bad += int(outside.sum())
                frame[column] = values.where(~outside)
        self._skip("label values that did not parse or are out of range (label unknown)", bad)
        return frame

    def _usable_readings(self, readings: pd.DataFrame) -> pd.DataFrame:
        """Drop, counted: duplicated ids, blank/unparsable required values, discarded, unknown split, missing image."""
        duplicated = readings[self._id_column].notna() & readings[self._id_column].duplicated()
        self._skip("duplicated reading ids (first kept)", int(duplicated.sum()))
        readings = readings[~duplicated]
        for column in self.manifest.table("metadata").columns:
            bad = readings[column].isna()
            if column in self._size_columns:
                bad |= ~usable_side(readings[column])
            self._skip(f"readings with a blank or unparsable {column} (excluded)", int(bad.sum()))
            readings = readings[~bad]
        discarded = readings[DISCARDED].astype(bool)
        self._skip("readings with discarded eye tracking (excluded)", int(discarded.sum()))
        readings = readings[~discarded]
        split = readings[self._split_column].str.strip().map(self.manifest.raw["splits"]["values"])
        self._skip("readings with an unknown split value (excluded)", int(split.isna().sum()))
        readings = readings.assign(split_name=split)[split.notna()]
        return self._attach_images(readings)

    def _attach_images(self, readings: pd.DataFrame) -> pd.DataFrame:
        """Resolve each reading's image file; readings of images missing on disk are excluded."""
        paths = {image: self._image_path(image) for image in readings[self._image_column].unique()}
        exists = {image: path.is_file() for image, path in paths.items()}
        missing = ~readings[self._image_column].map(exists).astype(bool)
        self._skip("images listed in the metadata but missing on disk (skipped)", int(readings[IMAGE_ID][missing].nunique()))
        if len(readings) and missing.all():
            example = next(iter(paths.values()))
            raise UserError(
                f"none of the REFLACX images were found under {self.images_root} (for example {example}); "
                "pass --images-root with the MIMIC-CXR-JPG (or MIMIC-CXR) folder that holds files/"
            )
        readings = readings[~missing]
        return readings.assign(image_path=readings[self._image_column].map(paths)).reset_index(drop=True)

    def _image_path(self, image: str) -> Path:
        """The MIMIC-CXR-JPG ``.jpg`` of ``image`` when it exists, else the path as given (``.dcm``)."""
        relative = mimic_relative_path(image)
        jpg = self.images_root / relative.with_suffix(".jpg")
        return jpg if jpg.is_file() else self.images_root / relative

    # ---- labels --------------------------------------------------------------------------

    def _reading_labels(self, readings: pd.DataFrame, present: dict[str, set[int]]) -> np.ndarray:
        """[R, C] labels of each reading (1 / 0 / NaN); NaN where the reading's phase lacks the column."""
        policy = self.manifest.labels
        labels = np.full((len(readings), len(self.class_names)), np.nan, dtype=np.float32)
        certainty = [i for i, name in enumerate(self.class_names) if self._kinds[name] == "certainty"]
        if certainty:
            columns = readings.reindex(columns=[self.class_names[i] for i in certainty]).astype(float)
            labels[:, certainty] = certainty_labels(
                columns, policy.get("positive_from", DEFAULT_POSITIVE_CERTAINTY), policy.get("uncertain", DEFAULT_UNCERTAIN)
            )
        for i, name in enumerate(self.class_names):
            if self._kinds[name] == "flags":
                labels[:, i] = readings[name].map({True: 1.0, False: 0.0}).astype(float).to_numpy()
            elif self._kinds[name] == "text":
                labels[:, i] = readings[name].notna().astype(float).to_numpy()
            labels[~readings.phase.isin(present[name]).to_numpy(), i] = np.nan
        return labels

    def _image_labels(self, readings: pd.DataFrame, present: dict[str, set[int]]) -> dict[str, np.ndarray]:
        """Image id -> [C] labels merged over its readings (labels.merge_readers)."""
        labels = self._reading_labels(readings, present)
        rows = readings.groupby(IMAGE_ID, sort=False).indices
        return {image_id: merge_readers(labels[index]) for image_id, index in rows.items()}

    # ---- fixations -----------------------------------------------------------------------

    def _read_all_fixations(self, readings: pd.DataFrame) -> dict[str, _Fixations]:
        """Reading id -> its usable fixations, dropping (counted) unparsable, non-positive and off-image ones."""
        frame, found = self._read_per_reading("fixations", readings[self._id_column])
        self._skip("readings without a fixations.csv (no gaze)", len(readings) - len(found))
        sizes = readings.set_index(self._id_column)[self._size_columns]
        width = frame[READING].map(sizes.iloc[:, 0]).to_numpy(dtype=float)
        height = frame[READING].map(sizes.iloc[:, 1]).to_numpy(dtype=float)
        numbers = frame.reindex(columns=[START, END, X, Y, *PIXELS_PER_DEGREE, *SHOWN_RECT]).astype(float)
        unparsable = numbers.isna().any(axis=1)
        duration = numbers[END] - numbers[START]
        not_positive = ~unparsable & (~duration.between(0, LARGEST_NUMBER, inclusive="right") | (numbers[list(PIXELS_PER_DEGREE)] <= 0).any(axis=1))
        off_image = ~unparsable & ~not_positive & ((numbers[X] < 0) | (numbers[Y] < 0) | (numbers[X] >= width) | (numbers[Y] >= height))
        self._skip("fixations with a blank or unparsable number (dropped)", int(unparsable.sum()))
        self._skip("fixations with a non-positive duration or angular resolution (dropped)", int(not_positive.sum()))
        self._skip("fixations outside the image (x or y < 0 or beyond its width or height, dropped)", int(off_image.sum()))
        keep = ~(unparsable | not_positive | off_image).to_numpy()
        columns = {
            "x": numbers[X].to_numpy()[keep],
            "y": numbers[Y].to_numpy()[keep],
            "duration": duration.to_numpy()[keep],
            "pixels_per_degree": numbers[list(PIXELS_PER_DEGREE)].to_numpy()[keep],
            "shown_rects": numbers[list(SHOWN_RECT)].to_numpy()[keep],
        }
        rows_of = pd.Series(frame[READING].to_numpy()[keep]).groupby(frame[READING].to_numpy()[keep], sort=False).indices
        self._skip("readings with no usable fixation (no gaze)", len(found) - len(rows_of))
        return {reading_id: _Fixations(**{name: values[rows].copy() for name, values in columns.items()}) for reading_id, rows in rows_of.items()}

    def _read_per_reading(self, table: str, reading_ids) -> tuple[pd.DataFrame, set[str]]:
        """Table ``table`` of every reading that has one, stacked and typed once (column ``READING``)."""
        frame, found, unparsable, long_rows = read_item_tables(self.root, self.manifest.table(table), reading_ids, READING)
        self._skip(long_rows_reason(self.manifest.table(table).path), long_rows)
        return frame, found

    def _group_gaze_readings(self, readings: pd.DataFrame) -> dict[str, list[tuple[str, str]]]:
        """Image id -> [(reader key, reading id)] of its readings with gaze, in metadata order."""
        config = self.manifest.raw.get("reader_id") or {}
        pattern = re.compile(config.get("pattern", r"^(.*)$"))
        group = int(config.get("group", 1))
        column = config.get("column", self._id_column)
        grouped: dict[str, list[tuple[str, str]]] = {}
        for image_id, reading_id, value in zip(readings[IMAGE_ID], readings[self._id_column], readings[column]):
            if reading_id not in self._fixations:
                continue
            key = reader_key(str(value), pattern, group)
            if key is None:
                self._skip("readings whose id does not match the manifest's reader_id pattern (keyed by the whole id)", 1)
                key = str(value)
            taken = {k for k, _ in grouped.get(image_id, [])}
            unique, repeat = key, 1
            while unique in taken:
                repeat += 1
                unique = f"{key}#{repeat}"
            grouped.setdefault(image_id, []).append((unique, reading_id))
        return grouped

    # ---- images --------------------------------------------------------------------------

    def _images(self, readings: pd.DataFrame) -> pd.DataFrame:
        """One row per image (its first reading's values); disagreeing readings are counted."""
        by_image = readings.groupby(IMAGE_ID, sort=False)
        disagree_split = by_image.split_name.nunique() > 1
        self._skip("images whose readings disagree on the split (first reading's used)", int(disagree_split.sum()))
        disagree_size = (by_image[self._size_columns].nunique() > 1).any(axis=1)
        self._skip("images whose readings disagree on the image size (first reading's used)", int(disagree_size.sum()))
        first = by_image.head(1)
        return pd.DataFrame(
            {
                "image_id": first[IMAGE_ID].astype(str).to_numpy(),
                "patient_id": first[PATIENT_ID].astype(str).to_numpy(),
                "split": first.split_name.to_numpy(),
                "image_path": first.image_path.to_numpy(),
                "width": first[self._size_columns[0]].astype(int).to_numpy(),
                "height": first[self._size_columns[1]].astype(int).to_numpy(),
            }
        )

    # ---- ellipses, chest box, transcription ----------------------------------------------

    def _read_annotations(self, readings: pd.DataFrame) -> dict[str, _Annotations]:
        """Image id -> its readings' ellipses (per class), first chest box and first transcription."""
        image_of = dict(zip(readings[self._id_column], readings[IMAGE_ID]))
        ellipses = self._read_ellipses(readings[self._id_column], image_of)
        chest_boxes = self._read_chest_boxes(readings[self._id_column])
        annotations = {}
        for image_id, reading_ids in readings.groupby(IMAGE_ID, sort=False)[self._id_column]:
            chest_box = next((chest_boxes[r] for r in reading_ids if r in chest_boxes), None)
            transcript = next((t for t in map(self._read_transcript, reading_ids) if t is not None), None)
            annotations[image_id] = _Annotations(ellipses.get(image_id, {}), chest_box, transcript)
        return annotations

    def _read_ellipses(self, reading_ids: pd.Series, image_of: dict[str, str]) -> dict[str, dict[str, np.ndarray]]:
        """Image id -> class -> [E, 4] boxes of the ellipses marked for it with certainty >= positive_from."""
        frame, _ = self._read_per_reading("ellipses", reading_ids)
        values = frame.reindex(columns=[*BOX, CERTAINTY]).astype(float)
        unparsable = values.isna().any(axis=1)
        flat = ~unparsable & ((values.xmax == values.xmin) | (values.ymax == values.ymin))
        self._skip("ellipses with a blank or unparsable value (ignored)", int(unparsable.sum()))
        self._skip("ellipses with zero width or height (ignored)", int(flat.sum()))
        positive_from = self.manifest.labels.get("positive_from", DEFAULT_POSITIVE_CERTAINTY)
        confident = ~unparsable & ~flat & (values[CERTAINTY] >= positive_from)
        images = frame[READING].map(image_of)
        found: dict[str, dict[str, np.ndarray]] = {}
        for name in self.class_names:
            if name not in frame.columns:
                continue
            marked, bad = convert_column(frame[name], "bool")
            self._skip("ellipse label values that did not parse (not marked)", bad)
            rows = confident & (marked == True)  # noqa: E712 (None = blank, unparsable or another phase)
            for image_id, boxes in values.loc[rows, list(BOX)].groupby(images[rows], sort=False):
                found.setdefault(image_id, {})[name] = boxes.to_numpy()
        return found

    def _read_chest_boxes(self, reading_ids: pd.Series) -> dict[str, np.ndarray]:
        """Reading id -> the first row of its chest_bounding_box.csv, when it parses."""
        frame, found = self._read_per_reading("chest_box", reading_ids)
        first = frame.groupby(READING, sort=False).head(1)
        values = first[list(BOX)].astype(float)
        usable = values.notna().all(axis=1)
        self._skip("chest boxes with no row or a blank or unparsable value (ignored)", len(found) - int(usable.sum()))
        return dict(zip(first[READING][usable], values[usable].to_numpy()))

    def _read_transcript(self, reading_id: str) -> str | None:
        folder = self.manifest.folders["reading"]
        path = self.root / folder["path"].format(id=reading_id) / folder["files"]["transcription"]
        return path.read_text(encoding="utf-8", errors="replace").strip() if path.is_file() else None

    # ---- samples -------------------------------------------------------------------------

    def __getitem__(self, index: int) -> Sample:
        record = self.records.iloc[index]
        box = Letterbox(int(record.width), int(record.height), self.grid)
        readings = self._gaze_readings.get(record.image_id, [])
        readers = {key: ReaderGaze(**self._gaze(self._fixations[reading_id], box)) for key, reading_id in readings}
        merged = _Fixations.concat([self._fixations[reading_id] for _, reading_id in readings]) if readings else None
        annotations = self._annotations[record.image_id]
        return Sample(
            image_id=record.image_id,
            patient_id=record.patient_id,
            image=letterbox_array(read_grey(record.image_path), box)[None].float(),
            labels=torch.from_numpy(self._labels[record.image_id].copy()),
            reader="all",
            readers=readers,
            lesions={name: ellipse_mask(boxes, box) for name, boxes in annotations.ellipses.items()},
            boxes={} if annotations.chest_box is None else {"chest": box_to_grid(annotations.chest_box, box)},
            transcript=annotations.transcript,
            **(self._gaze(merged, box) if merged is not None else self._no_gaze()),
        )

    def _no_gaze(self) -> dict:
        return {"gaze": torch.zeros(self.grid, self.grid), "fixations": torch.zeros(0, 3)}

    def _gaze(self, fixations: _Fixations, box: Letterbox) -> dict:
        """Density (the dataset's convention) and grid fixations [N, 3] of some fixations."""
        x, y, duration = (torch.from_numpy(a) for a in (fixations.x, fixations.y, fixations.duration))
        if self.convention.name == "egd":
            density = egd_density(x, y, duration, box, self.convention)
        else:
            density = reflacx_density(
                x, y, duration, torch.from_numpy(fixations.pixels_per_degree), torch.from_numpy(fixations.shown_rects), box, self.convention
            )
        gx, gy = box.points_to_grid(x, y)
        return {"gaze": density, "fixations": torch.stack([gx, gy, duration], dim=1).float()}

    def stats(self) -> dict[str, int]:
        usable = set(self.table.image_id)
        per_image = {image_id: len(readings) for image_id, readings in self._gaze_readings.items() if image_id in usable}
        keys = {key.split("#")[0] for readings in self._gaze_readings.values() for key, _ in readings}
        return {
            **super().stats(),
            "readings loaded": len(self._readings),
            "readings with gaze": sum(per_image.values()),
            "images": len(self.table),
            "images read by 2+ radiologists (with gaze)": sum(n >= 2 for n in per_image.values()),
            "distinct reader ids": len(keys),
        }
