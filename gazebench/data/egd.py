"""Reader for the EGD eye-gaze release (egd-cxr 1.0.0) -- and the embedded synthetic copy.

It reads the layout exactly as released, as ``data_manifests/egd.yaml`` describes it:
``master_sheet.csv`` for ids, image paths and labels (the one-hot ``Normal, CHF, pneumonia``
columns, or the ``*__chx`` CheXpert columns with ``labels="chexpert"``); ``fixations.csv`` for
fixations in original-image pixels (``X_ORIGINAL, Y_ORIGINAL``; -1 = off the displayed image,
dropped and counted); ``bounding_boxes.csv`` (columns in the release's ``x1, x2, y1, y2``
order); the anatomy masks and ``transcript.json`` under ``audio_segmentation_transcripts/<id>/``;
images through ``path`` in a MIMIC-CXR-JPG tree (``.jpg``) or a MIMIC-CXR tree (``.dcm``,
decoded with pydicom).  Nothing is dropped silently: every skip is counted in ``skips``.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from gazebench.data.base import GazeDataset, check_root, check_split
from gazebench.data.gaze import GazeConvention, Letterbox, egd_density
from gazebench.data.images import UnreadableImage, image_size, letterbox_array, read_grey, read_mask
from gazebench.data.labels import DEFAULT_UNCERTAIN, chexpert_labels
from gazebench.data.manifest import load_manifest, long_rows_reason, read_table
from gazebench.data.sample import Sample
from gazebench.data.splits import patient_split
from gazebench.errors import UserError

EVIDENCE_MASK = "evidence.png"  # the synthetic dataset's lesion mask (not in the real release)
LABEL_SETS = ("classes", "chexpert")


def _anatomy_files() -> dict[str, str]:
    """Region name -> file name in the release (``mediastanum`` is misspelled there)."""
    files = dict(load_manifest("egd").folders["transcripts"]["files"])
    files.pop("transcript")
    return files


ANATOMY_MASKS = _anatomy_files()
CLASS_NAMES = tuple(load_manifest("egd").labels["classes"])


@dataclass
class _Fixations:
    x: np.ndarray
    y: np.ndarray
    duration: np.ndarray


class EGDDataset(GazeDataset):
    """Samples of one split of an EGD-layout dataset, on a ``grid`` x ``grid`` scoring grid."""

    def __init__(
        self,
        root: Path,
        split: str = "test",
        grid: int = 224,
        convention: GazeConvention | None = None,
        images_root: Path | None = None,
        require_gaze: bool = True,
        name: str = "egd",
        labels: str = "classes",
        uncertain: str = DEFAULT_UNCERTAIN,
    ):
        check_split(split)
        if labels not in LABEL_SETS:
            raise UserError(f"unknown EGD label set {labels!r}; choose one of: {', '.join(LABEL_SETS)}")
        self.manifest = load_manifest(name)
        self.root = check_root(root, self.manifest)
        self.images_root = Path(images_root or root)
        self.name, self.split, self.grid = name, split, grid
        self.convention = convention or self.manifest.gaze
        self.label_set, self.uncertain = labels, uncertain
        self.multi_label = labels == "chexpert"
        self.has_gaze = True
        self.skips: Counter[str] = Counter()
        self.stats_counts: Counter[str] = Counter()
        table = self._read_master()
        self.fixations = self._read_fixations(set(table.image_id))
        self.boxes = self._read_boxes(set(table.image_id))
        self.table = table.drop(columns=["labels"]).reset_index(drop=True)
        selected = table if split == "all" else table[table.split == split]
        selected = self._clip_fixations_to_images(selected.reset_index(drop=True))
        if require_gaze:
            no_gaze = ~selected.image_id.isin(self.fixations.keys())
            self.skips["images without any fixation on the image (skipped)"] += int(no_gaze.sum())
            selected = selected[~no_gaze]
        self.records = selected.reset_index(drop=True).assign(reader="all")

    # ------------------------------------------------------------------ tables

    def _read_master(self) -> pd.DataFrame:
        spec = self.manifest.table("master_sheet")
        master = self._read_table("master_sheet")
        self._count_unparsable(master, "master_sheet.csv")
        duplicated = master.dicom_id.duplicated() & master.dicom_id.notna()
        self.skips["duplicated dicom_id rows in master_sheet.csv (first kept)"] += int(duplicated.sum())
        master = master[~duplicated]
        blank = master[["dicom_id", "path", "patient_id"]].isna().any(axis=1)
        self._skip("rows with a blank dicom_id, path or patient_id in master_sheet.csv (skipped)", int(blank.sum()))
        master = master[~blank]
        labels, valid = self._labels(master)
        master = master[valid]
        table = pd.DataFrame(
            {
                "image_id": master.dicom_id.astype(str).to_numpy(),
                "patient_id": master.patient_id.astype(str).to_numpy(),
                "path": master.path.astype(str).to_numpy(),
            }
        )
        table["labels"] = list(labels)
        table["image_path"] = [self._image_path(p) for p in table.path]
        exists = np.array([p.is_file() for p in table.image_path], dtype=bool)
        self.skips["images listed in master_sheet.csv but missing on disk"] += int((~exists).sum())
        if len(table) and not exists.any():
            raise UserError(
                f"none of the images in {self.root / spec.path} were found under {self.images_root} "
                f"(for example {table.image_path.iloc[0]}); pass --images-root with the MIMIC-CXR-JPG or MIMIC-CXR folder"
            )
        table = table[exists]
        self.stats_counts["images in master_sheet.csv"] = len(master)
        table["split"] = table.patient_id.map(patient_split(table.patient_id))
        return table

    def _read_table(self, name: str) -> pd.DataFrame:
        """Table ``name`` of the release, its rows with more fields than the header counted (dropped)."""
        table = read_table(self.root, self.manifest.table(name))
        self._skip(long_rows_reason(self.manifest.table(name).path), table.attrs["long_rows"])
        return table

    def _labels(self, master: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """([N_valid, C] label vectors, [N] rows kept): one-hot rows without exactly one 1 are counted."""
        if self.label_set == "chexpert":
            chexpert = self.manifest.labels["alternatives"]["chexpert"]
            missing = [c for c in chexpert["columns"] if c not in master.columns]
            if missing:
                raise UserError(f"{self.root / 'master_sheet.csv'} lacks the CheXpert column(s) {', '.join(missing)}; use --labels classes")
            self.class_names = list(chexpert["names"])
            return chexpert_labels(master[chexpert["columns"]], self.uncertain), np.ones(len(master), dtype=bool)
        self.class_names = list(CLASS_NAMES)
        onehot = master[self.class_names].fillna(0).to_numpy()
        valid = (onehot == 1).sum(axis=1) == 1
        self.skips[f"images without exactly one of {'/'.join(self.class_names)} set to 1"] += int((~valid).sum())
        return onehot[valid].astype(np.float32), valid

    def _image_path(self, path: str) -> Path:
        """``path`` points into MIMIC-CXR (.dcm); a MIMIC-CXR-JPG tree holds the same path with .jpg."""
        relative = Path(path)
        jpg = self.images_root / relative.with_suffix(".jpg")
        return jpg if jpg.is_file() else self.images_root / relative

    def _skip(self, reason: str, count: int) -> None:
        """Count ``count`` things left out for ``reason`` (zero counts are not recorded)."""
        if count:
            self.skips[reason] += count

    def _count_unparsable(self, frame: pd.DataFrame, file: str) -> None:
        for column, count in frame.attrs.get("unparsable", {}).items():
            self.skips[f"unparsable values in {file} column {column} (treated as missing)"] += count

    def _read_fixations(self, image_ids: set[str]) -> dict[str, _Fixations]:
        fixations = self._read_table("fixations")
        numbers = fixations[["FPOGD", "X_ORIGINAL", "Y_ORIGINAL"]]
        unparsable = numbers.isna().any(axis=1)
        self.skips["fixations with an unparsable or blank number (dropped)"] += int(unparsable.sum())
        off_image = (numbers.X_ORIGINAL < 0) | (numbers.Y_ORIGINAL < 0)
        self.skips["fixations off the displayed image (-1, dropped)"] += int((off_image & ~unparsable).sum())
        keep = ~unparsable & ~off_image
        self.stats_counts["fixations in fixations.csv"] = len(fixations)
        fixations, numbers = fixations[keep], numbers[keep]
        unknown = ~fixations.DICOM_ID.isin(image_ids)
        self.skips["fixations of images not in master_sheet.csv or not on disk (dropped)"] += int(unknown.sum())
        grouped = {}
        frame = numbers[~unknown].assign(DICOM_ID=fixations.DICOM_ID[~unknown].to_numpy())
        for image_id, group in frame.groupby("DICOM_ID", sort=False):
            grouped[image_id] = _Fixations(group.X_ORIGINAL.to_numpy(float), group.Y_ORIGINAL.to_numpy(float), group.FPOGD.to_numpy(float))
        return grouped

    def _read_boxes(self, image_ids: set[str]) -> dict[str, pd.DataFrame]:
        """Per image, its anatomical boxes (``bbox_name, x1, x2, y1, y2``); optional file."""
        spec = self.manifest.table("bounding_boxes")
        if not (self.root / spec.path).is_file():
            return {}
        boxes = self._read_table("bounding_boxes")
        blank = boxes[["dicom_id", "bbox_name"]].isna().any(axis=1)
        self._skip("bounding boxes with a blank dicom_id or bbox_name (dropped)", int(blank.sum()))
        coordinates = boxes[["x1", "x2", "y1", "y2"]]
        bad = ~blank & (coordinates.isna().any(axis=1) | (boxes.x2 < boxes.x1) | (boxes.y2 < boxes.y1))
        self.skips["bounding boxes with a missing, unparsable or inverted coordinate (dropped)"] += int(bad.sum())
        boxes = boxes[~blank & ~bad & boxes.dicom_id.isin(image_ids)]
        return {image_id: group for image_id, group in boxes.groupby("dicom_id", sort=False)}

    def _clip_fixations_to_images(self, records: pd.DataFrame) -> pd.DataFrame:
        """Record each image's size (header only) and drop, counted, fixations beyond it.

        An image whose header does not decode gets size 0: its item raises the same
        ``UnreadableImage`` when loaded, so a run skips and counts it like any unreadable image.
        """
        self.unreadable: dict[str, UnreadableImage] = {}
        sizes = []
        for image_id, path in zip(records.image_id, records.image_path):
            try:
                sizes.append(image_size(path))
            except UnreadableImage as error:
                self.unreadable[image_id] = error
                sizes.append((0, 0))
        records = records.assign(width=[w for w, _ in sizes], height=[h for _, h in sizes])
        for record in records.itertuples():
            fixations = self.fixations.get(record.image_id)
            if fixations is None or record.image_id in self.unreadable:
                continue
            inside = (fixations.x < record.width) & (fixations.y < record.height)
            self.skips["fixations beyond the image's width or height (dropped)"] += int((~inside).sum())
            if inside.any():
                self.fixations[record.image_id] = _Fixations(fixations.x[inside], fixations.y[inside], fixations.duration[inside])
            else:
                del self.fixations[record.image_id]
        return records

    def stats(self) -> dict[str, int]:
        with_gaze = int(self.table.image_id.isin(self.fixations.keys()).sum())
        return {
            **self.stats_counts,
            "images on disk with labels": len(self.table),
            "images with gaze": with_gaze,
            "images without gaze": len(self.table) - with_gaze,
            f"items in split {self.split}": len(self),
        }

    # ------------------------------------------------------------------ samples

    def __getitem__(self, index: int) -> Sample:
        record = self.records.iloc[index]
        if record.image_id in self.unreadable:
            raise self.unreadable[record.image_id]
        width, height = int(record.width), int(record.height)
        box = Letterbox(width, height, self.grid)
        return Sample(
            image_id=record.image_id,
            patient_id=record.patient_id,
            image=letterbox_array(read_grey(record.image_path), box)[None].float(),
            labels=torch.as_tensor(record.labels, dtype=torch.float32),
            boxes=self._grid_boxes(record.image_id, box),
            transcript=self._transcript(record.image_id),
            **self._gaze(record.image_id, box),
            **self._masks(record.image_id, box),
        )

    def _gaze(self, image_id: str, box: Letterbox) -> dict:
        """Density and fixation points on the grid (fixations already clipped to the image)."""
        fixations = self.fixations.get(image_id)
        if fixations is None:
            return {"gaze": torch.zeros(self.grid, self.grid), "fixations": torch.zeros(0, 3)}
        x, y, duration = (torch.from_numpy(a) for a in (fixations.x, fixations.y, fixations.duration))
        gx, gy = box.points_to_grid(x, y)
        return {
            "gaze": egd_density(x, y, duration, box, self.convention),
            "fixations": torch.stack([gx, gy, duration], dim=1).float(),
        }

    def _grid_boxes(self, image_id: str, box: Letterbox) -> dict[str, torch.Tensor]:
        """Boxes on the grid as (xmin, ymin, xmax, ymax); the release orders them x1, x2, y1, y2."""
        rows = self.boxes.get(image_id)
        if rows is None:
            return {}
        (sx, sy), (ox, oy) = box.scale, box.offset
        corners = torch.tensor(rows[["x1", "y1", "x2", "y2"]].to_numpy(float), dtype=torch.float32)
        corners = corners * torch.tensor([sx, sy, sx, sy]) + torch.tensor([ox, oy, ox, oy], dtype=torch.float32)
        return {str(name): corner for name, corner in zip(rows.bbox_name, corners)}

    def _folder(self, image_id: str) -> Path:
        return self.root / self.manifest.folders["transcripts"]["path"].format(dicom_id=image_id)

    def _transcript(self, image_id: str) -> str | None:
        path = self._folder(image_id) / self.manifest.folders["transcripts"]["files"]["transcript"]
        if not path.is_file():
            return None
        try:
            return str(json.loads(path.read_text(encoding="utf-8"))["full_text"])
        except (ValueError, KeyError, TypeError) as error:
            raise UserError(f"cannot read the transcript {path} ({error}); replace it with the release's copy") from None

    def _masks(self, image_id: str, box: Letterbox) -> dict:
        folder = self._folder(image_id)
        regions = {name: read_mask(folder / file, box) for name, file in ANATOMY_MASKS.items() if (folder / file).is_file()}
        evidence = read_mask(folder / EVIDENCE_MASK, box) if (folder / EVIDENCE_MASK).is_file() else None
        return {"regions": regions, "evidence": evidence}
