"""Reader for MIMIC-CXR-JPG (2.0.0 / 2.1.0): chest radiographs with CheXpert or NegBio labels, no gaze.

It reads the release as ``data_manifests/mimic.yaml`` describes it: the image table
``mimic-cxr-2.0.0-metadata.csv`` (one row per image: ids, ``ViewPosition``, ``Rows`` and
``Columns``), the labels of each study's report (``mimic-cxr-2.0.0-chexpert.csv`` or
``-negbio.csv``, joined on ``subject_id, study_id``), the official split
(``mimic-cxr-2.0.0-split.csv``, by ``dicom_id``; ``validate`` is gazebench's ``dev``) and the
JPGs at ``files/pXX/pXXXXXXXX/sXXXXXXXX/<dicom_id>.jpg`` under ``images_root``.  Each table may
be the ``.csv`` or the ``.csv.gz`` PhysioNet serves.  Only frontal views (the manifest's list)
are kept.  Image sizes come from the metadata, so building the dataset reads no image.

Nothing is dropped silently.  Filters run in this order and each dropped image is counted once,
under the first reason that applies: duplicated ``dicom_id``, blank id, non-frontal or blank
view, blank, unparsable or impossible size (not 1 to 65535 px), no label row for its study, no split row, unknown split value;
then, for the selected split only, images missing on disk.  ``table`` (every usable image of
every split, for ``splits.csv``) is therefore not checked against the disk; ``records`` (this
split's items, ``image_path`` a string) is.  Label cells that do not parse as 1 / 0 / -1 become unknown (NaN) and are
counted; blank cells are negative (see ``gazebench.data.labels``).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from gazebench.data.base import GazeDataset, check_root, check_split
from gazebench.data.gaze import GazeConvention, Letterbox, usable_side
from gazebench.data.images import letterbox_array, read_grey
from gazebench.data.labels import DEFAULT_UNCERTAIN, chexpert_labels, uncertain_value
from gazebench.data.manifest import TableSpec, convert_column, load_manifest, long_rows_reason, read_table
from gazebench.data.sample import Sample
from gazebench.errors import UserError

NO_GAZE = (
    "MIMIC-CXR-JPG has no eye-gaze data: use it to train or evaluate classifiers "
    "(`gazebench train --data mimic ...`); score saliency against gaze with --data egd or --data reflacx"
)
# ``{column}`` or ``{column[:n]}`` (the column's first n characters) in the manifest's image path
PLACEHOLDER = re.compile(r"\{(\w+)(?:\[:(\d+)\])?\}")


class MimicDataset(GazeDataset):
    """Frontal MIMIC-CXR-JPG images of one official split, multi-label, on a ``grid`` x ``grid`` grid."""

    def __init__(
        self,
        root: Path,
        split: str = "test",
        grid: int = 224,
        convention: GazeConvention | None = None,
        images_root: Path | None = None,
        require_gaze: bool = True,
        name: str = "mimic",
        labels: str = "chexpert",
        uncertain: str = DEFAULT_UNCERTAIN,
    ):
        if require_gaze:
            raise UserError(NO_GAZE)
        check_split(split)
        self.manifest = load_manifest(name)
        sources = self.manifest.labels["sources"]
        if labels not in sources:
            raise UserError(f"unknown MIMIC-CXR-JPG label source {labels!r}; choose one of: {', '.join(sources)}")
        uncertain_value(uncertain)  # fail early on an unknown policy
        self.root = check_root(root, self.manifest)
        self.images_root = Path(images_root or root)
        self.name, self.split, self.grid = name, split, grid
        self.convention = None
        self.label_set, self.uncertain = labels, uncertain
        self.class_names = list(self.manifest.labels["classes"])
        self.multi_label, self.has_gaze = True, False
        self.skips: Counter[str] = Counter()
        self.stats_counts: Counter[str] = Counter()
        images = self._read_metadata()
        images, label_matrix = self._join_labels(images)
        images = self._join_split(images)
        self.table = images[["image_id", "patient_id", "split"]].reset_index(drop=True)
        selected = images if split == "all" else images[images.split == split]
        selected = self._keep_on_disk(selected)
        self.label_matrix = label_matrix[selected.label_row.to_numpy()]  # [len(records), C]: 1 / 0 / NaN
        columns = ["image_id", "patient_id", "study_id", "image_path", "width", "height"]
        self.records = selected[columns].reset_index(drop=True).assign(reader="all")

    # ------------------------------------------------------------------ tables

    def _spec(self, table: str) -> TableSpec:
        """The manifest's table, pointed at ``<path>.gz`` when only the gzipped copy is present."""
        spec = self.manifest.table(table)
        plain, gzipped = self.root / spec.path, self.root / f"{spec.path}.gz"
        return replace(spec, path=f"{spec.path}.gz") if not plain.is_file() and gzipped.is_file() else spec

    def _skip(self, reason: str, count: int) -> None:
        """Count ``count`` dropped things under ``reason`` (reasons with nothing dropped stay out)."""
        if count:
            self.skips[reason] += count

    def _count_unparsable(self, frame: pd.DataFrame, spec: TableSpec) -> None:
        for column, count in frame.attrs.get("unparsable", {}).items():
            self._skip(f"unparsable values in {spec.path} column {column} (treated as missing)", count)

    def _count_long_rows(self, frame: pd.DataFrame, spec: TableSpec) -> None:
        self._skip(long_rows_reason(spec.path), frame.attrs["long_rows"])

    def _read_metadata(self) -> pd.DataFrame:
        """Frontal images with ids and a size: image_id, patient_id, study_id, width, height."""
        spec = self._spec("metadata")
        metadata = read_table(self.root, spec)
        self._count_long_rows(metadata, spec)
        self._count_unparsable(metadata, spec)
        self.stats_counts[f"images in {spec.path}"] = len(metadata)
        duplicated = metadata.dicom_id.duplicated() & metadata.dicom_id.notna()
        self._skip(f"duplicated dicom_id rows in {spec.path} (first kept)", int(duplicated.sum()))
        metadata = metadata[~duplicated]
        blank_id = metadata[["dicom_id", "subject_id", "study_id"]].isna().any(axis=1)
        self._skip(f"rows with a blank dicom_id, subject_id or study_id in {spec.path} (skipped)", int(blank_id.sum()))
        metadata = metadata[~blank_id]
        view = metadata[self.manifest.raw["views"]["column"]]
        frontal = view.isin(self.manifest.raw["views"]["frontal"])
        self._skip("images without a ViewPosition (skipped)", int(view.isna().sum()))
        self._skip("non-frontal views (skipped)", int((~frontal & view.notna()).sum()))
        metadata = metadata[frontal]
        width, height = metadata[self.manifest.images["width"]], metadata[self.manifest.images["height"]]
        sized = usable_side(width) & usable_side(height)
        self._skip(f"images with a blank or unparsable Rows/Columns in {spec.path} (skipped)", int((~sized).sum()))
        metadata = metadata[sized]
        return pd.DataFrame(
            {
                "image_id": metadata.dicom_id.astype(str).to_numpy(),
                "patient_id": metadata.subject_id.astype(str).to_numpy(),
                "study_id": metadata.study_id.astype(str).to_numpy(),
                "width": metadata[self.manifest.images["width"]].astype(int).to_numpy(),
                "height": metadata[self.manifest.images["height"]].astype(int).to_numpy(),
            }
        )

    def _join_labels(self, images: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
        """Images whose study has a label row (``label_row`` indexes the returned [S, C] matrix)."""
        file = self.manifest.labels["sources"][self.label_set]
        spec = self._spec(next(name for name, table in self.manifest.tables.items() if table.path == file))
        table, unparsable = read_with_unparsable_mask(self.root, spec)
        self._count_long_rows(table, spec)
        duplicated = table.duplicated(["subject_id", "study_id"])
        self._skip(f"duplicated (subject_id, study_id) rows in {spec.path} (first kept)", int(duplicated.sum()))
        table, unparsable = table[~duplicated].reset_index(drop=True), unparsable[~duplicated.to_numpy()]
        matrix = chexpert_labels(table[self.class_names], self.uncertain)
        bad = unparsable[:, [list(table.columns).index(c) for c in self.class_names]]
        matrix[bad] = np.nan
        self._skip(f"unparsable label values in {spec.path} (label unknown: NaN)", int(bad.sum()))
        rows = table[["subject_id", "study_id"]].astype(str).rename(columns={"subject_id": "patient_id"})
        rows["label_row"] = np.arange(len(rows))
        joined = images.merge(rows, on=["patient_id", "study_id"], how="left")
        unlabelled = joined.label_row.isna()
        self._skip(f"images whose study has no row in {spec.path} (skipped)", int(unlabelled.sum()))
        joined = joined[~unlabelled].astype({"label_row": int})
        return joined, matrix

    def _join_split(self, images: pd.DataFrame) -> pd.DataFrame:
        """Images with a known official split, mapped to gazebench's names (``validate`` -> ``dev``)."""
        spec = self._spec("split")
        splits = read_table(self.root, spec)
        self._count_long_rows(splits, spec)
        duplicated = splits.dicom_id.duplicated()
        self._skip(f"duplicated dicom_id rows in {spec.path} (first kept)", int(duplicated.sum()))
        split_of = splits[~duplicated].set_index("dicom_id").split
        released = images.image_id.map(split_of)
        no_row = split_of.index.get_indexer(images.image_id) < 0
        self._skip(f"images without a row in {spec.path} (skipped)", int(no_row.sum()))
        mapped = released.map(self.manifest.raw["splits"]["values"])
        unknown = mapped.isna() & ~no_row
        self._skip(f"images with an unknown split value in {spec.path} (skipped)", int(unknown.sum()))
        return images.assign(split=mapped)[mapped.notna()]

    def _keep_on_disk(self, images: pd.DataFrame) -> pd.DataFrame:
        """This split's images whose JPG exists (others counted); none at all is a UserError."""
        relative = expand_pattern(self.manifest.images["path"], images.rename(columns={"image_id": "dicom_id", "patient_id": "subject_id"}))
        paths = str(self.images_root) + "/" + relative
        exists = files_exist(paths)
        self._skip("images listed in the metadata but missing on disk (skipped)", int((~exists).sum()))
        if len(images) and not exists.any():
            raise UserError(
                f"none of the {len(images)} images of split {self.split} were found under {self.images_root} "
                f"(for example {paths.iloc[0]}); pass --images-root with the MIMIC-CXR-JPG folder that holds files/"
            )
        return images[exists].assign(image_path=paths[exists].to_numpy(dtype=object))

    def stats(self) -> dict[str, int]:
        return {
            **self.stats_counts,
            "frontal images with labels and a split": len(self.table),
            "patients": int(self.table.patient_id.nunique()),
            f"items in split {self.split}": len(self),
        }

    # ------------------------------------------------------------------ samples

    def __getitem__(self, index: int) -> Sample:
        """The image letterboxed by its decoded size (the metadata size is for ``records`` only)."""
        record = self.records.iloc[index]
        grey = read_grey(Path(record.image_path))
        box = Letterbox(grey.shape[1], grey.shape[0], self.grid)
        return Sample(
            image_id=record.image_id,
            patient_id=record.patient_id,
            image=letterbox_array(grey, box)[None].float(),
            labels=torch.tensor(self.label_matrix[index], dtype=torch.float32),
            gaze=torch.zeros(self.grid, self.grid),
            fixations=torch.zeros(0, 3),
        )


def read_with_unparsable_mask(root: Path, spec: TableSpec) -> tuple[pd.DataFrame, np.ndarray]:
    """``read_table`` plus a [rows, columns] bool mask of the cells that did not parse as their type.

    The table is read as text, then typed with the manifest's types, so that an unparsable cell
    (NaN afterwards) can be told apart from a blank one (NaN too, but meaning "not mentioned").
    """
    as_text = replace(spec, columns=dict.fromkeys(spec.columns, "str"), optional_columns=dict.fromkeys(spec.optional_columns, "str"))
    frame = read_table(root, as_text)
    mask = np.zeros(frame.shape, dtype=bool)
    for column, kind in spec.typed_columns().items():
        if column in frame.columns:
            text = frame[column]
            frame[column], _ = convert_column(text, kind)
            mask[:, frame.columns.get_loc(column)] = (text.notna() & frame[column].isna()).to_numpy()
    return frame, mask


def expand_pattern(pattern: str, frame: pd.DataFrame) -> pd.Series:
    """One string per row: ``pattern`` with ``{column}`` / ``{column[:n]}`` filled in (vectorised)."""
    result = pd.Series("", index=frame.index, dtype=object)
    position = 0
    for match in PLACEHOLDER.finditer(pattern):
        values = frame[match.group(1)].astype(str)
        if match.group(2):
            values = values.str[: int(match.group(2))]
        result = result + pattern[position : match.start()] + values
        position = match.end()
    return result + pattern[position:]


def files_exist(paths: pd.Series) -> np.ndarray:
    """Which of ``paths`` (``/``-separated strings) are files: one ``os.scandir`` per distinct folder.

    MIMIC keeps each study's images in their own folder, so this lists only the study folders
    that the selection needs (a missing folder is no error: its files are missing) instead of a
    ``stat`` per image, and compares names in one vectorised ``isin``.
    """
    if paths.empty:
        return np.zeros(0, dtype=bool)
    parts = paths.astype(object).str.rpartition("/")
    present = []
    for folder in parts[0].unique():
        try:
            with os.scandir(folder) as entries:
                present.extend(f"{folder}/{entry.name}" for entry in entries if entry.is_file())
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
    keys = pd.Index((parts[0] + "/" + parts[2]).to_numpy(dtype=object))
    return keys.isin(present)
