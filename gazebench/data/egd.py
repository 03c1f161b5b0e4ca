"""Reader for the EGD eye-gaze release (egd-cxr 1.0.0) -- and the embedded synthetic copy.

It reads the layout exactly as released (REFERENCES.md section 1): ``master_sheet.csv`` for
ids, image paths and the one-hot ``Normal, CHF, pneumonia`` labels; ``fixations.csv`` for
fixations in original-image pixels (``X_ORIGINAL, Y_ORIGINAL``; -1 = off the displayed image,
dropped and counted); the anatomy masks under ``audio_segmentation_transcripts/<dicom_id>/``;
images through ``path`` in a MIMIC-CXR-JPG tree (``.dcm`` read as ``.jpg``).  Nothing is
dropped silently: every skipped image or fixation is counted in ``skips``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from gazebench.data.gaze import EGD_CONVENTION, GazeConvention, Letterbox, egd_density
from gazebench.data.images import image_size, letterbox_array, read_grey, read_mask
from gazebench.data.sample import Sample
from gazebench.data.splits import SPLITS, patient_split
from gazebench.errors import UserError

CLASS_NAMES = ("Normal", "CHF", "pneumonia")
MASTER_COLUMNS = ("dicom_id", "path", "study_id", "patient_id", *CLASS_NAMES)
FIXATION_COLUMNS = ("DICOM_ID", "FPOGD", "X_ORIGINAL", "Y_ORIGINAL")
MASK_FOLDER = "audio_segmentation_transcripts"
# region name -> file name in the release (``mediastanum`` is misspelled there)
ANATOMY_MASKS = {
    "left_lung": "left_lung.png",
    "right_lung": "right_lung.png",
    "mediastinum": "mediastanum.png",
    "aortic_knob": "aortic_knob.png",
}
EVIDENCE_MASK = "evidence.png"


def read_table(path: Path, required: tuple[str, ...], usecols: bool = False) -> pd.DataFrame:
    """Read a CSV, failing with one clear line when the file or a required column is missing."""
    if not path.is_file():
        raise UserError(f"missing file {path}; is --root the folder of the dataset release?")
    header = pd.read_csv(path, nrows=0).columns
    missing = [c for c in required if c not in header]
    if missing:
        raise UserError(f"{path} lacks the column(s) {', '.join(missing)}; expected at least: {', '.join(required)}")
    return pd.read_csv(path, usecols=list(required) if usecols else None, dtype={"dicom_id": str, "DICOM_ID": str})


@dataclass
class _Fixations:
    x: np.ndarray
    y: np.ndarray
    duration: np.ndarray


class EGDDataset(torch.utils.data.Dataset):
    """Samples of one split of an EGD-layout dataset, on a ``grid`` x ``grid`` scoring grid."""

    def __init__(
        self,
        root: Path,
        split: str = "test",
        grid: int = 224,
        convention: GazeConvention = EGD_CONVENTION,
        images_root: Path | None = None,
        require_gaze: bool = True,
        name: str = "egd",
    ):
        if split not in (*SPLITS, "all"):
            raise UserError(f"unknown split {split!r}; choose one of: {', '.join((*SPLITS, 'all'))}")
        self.root, self.images_root = Path(root), Path(images_root or root)
        if not self.root.is_dir():
            raise UserError(f"data directory {self.root} does not exist; pass --root with the dataset's folder")
        self.name, self.split, self.grid, self.convention = name, split, grid, convention
        self.class_names = list(CLASS_NAMES)
        self.skips: Counter[str] = Counter()
        table = self._read_master()
        self.fixations = self._read_fixations(set(table.image_id))
        self.table = table.reset_index(drop=True)
        selected = table if split == "all" else table[table.split == split]
        selected = self._clip_fixations_to_images(selected.reset_index(drop=True))
        if require_gaze:
            no_gaze = ~selected.image_id.isin(self.fixations.keys())
            self.skips["images without any fixation on the image (skipped)"] += int(no_gaze.sum())
            selected = selected[~no_gaze]
        self.records = selected.reset_index(drop=True)

    def _read_master(self) -> pd.DataFrame:
        master = read_table(self.root / "master_sheet.csv", MASTER_COLUMNS)
        duplicated = master.dicom_id.duplicated()
        self.skips["duplicated dicom_id rows in master_sheet.csv (first kept)"] += int(duplicated.sum())
        master = master[~duplicated]
        onehot = master[list(CLASS_NAMES)].apply(pd.to_numeric, errors="coerce").fillna(0).to_numpy()
        valid_label = (onehot == 1).sum(axis=1) == 1
        self.skips["images without exactly one of Normal/CHF/pneumonia set to 1"] += int((~valid_label).sum())
        master, onehot = master[valid_label], onehot[valid_label]
        table = pd.DataFrame(
            {
                "image_id": master.dicom_id.astype(str).to_numpy(),
                "patient_id": master.patient_id.astype(str).to_numpy(),
                "path": master.path.astype(str).to_numpy(),
                "label": onehot.argmax(axis=1),
            }
        )
        table["image_path"] = [self._image_path(p) for p in table.path]
        exists = np.array([p.is_file() for p in table.image_path], dtype=bool)
        self.skips["images listed in master_sheet.csv but missing on disk"] += int((~exists).sum())
        if not exists.any():
            raise UserError(
                f"none of the images in {self.root / 'master_sheet.csv'} were found under {self.images_root} "
                f"(for example {table.image_path.iloc[0] if len(table) else 'n/a'}); pass --images-root with the MIMIC-CXR-JPG folder"
            )
        table = table[exists]
        split_of = patient_split(table.patient_id)
        table["split"] = table.patient_id.map(split_of)
        return table

    def _image_path(self, path: str) -> Path:
        """``path`` points into MIMIC-CXR (.dcm); the JPG tree holds the same path with .jpg."""
        relative = Path(path)
        jpg = self.images_root / relative.with_suffix(".jpg")
        return jpg if jpg.is_file() or relative.suffix != ".dcm" else self.images_root / relative

    def _read_fixations(self, image_ids: set[str]) -> dict[str, _Fixations]:
        fixations = read_table(self.root / "fixations.csv", FIXATION_COLUMNS, usecols=True)
        numbers = fixations[["FPOGD", "X_ORIGINAL", "Y_ORIGINAL"]].apply(pd.to_numeric, errors="coerce")
        unparsable = numbers.isna().any(axis=1)
        self.skips["fixations with an unparsable number (dropped)"] += int(unparsable.sum())
        off_image = (numbers.X_ORIGINAL < 0) | (numbers.Y_ORIGINAL < 0)
        self.skips["fixations off the displayed image (-1, dropped)"] += int((off_image & ~unparsable).sum())
        keep = ~unparsable & ~off_image
        fixations, numbers = fixations[keep], numbers[keep]
        unknown = ~fixations.DICOM_ID.isin(image_ids)
        self.skips["fixations of images not in master_sheet.csv (dropped)"] += int(unknown.sum())
        grouped = {}
        frame = numbers[~unknown].assign(DICOM_ID=fixations.DICOM_ID[~unknown].to_numpy())
        for image_id, group in frame.groupby("DICOM_ID", sort=False):
            grouped[image_id] = _Fixations(group.X_ORIGINAL.to_numpy(float), group.Y_ORIGINAL.to_numpy(float), group.FPOGD.to_numpy(float))
        return grouped

    def _clip_fixations_to_images(self, records: pd.DataFrame) -> pd.DataFrame:
        """Record each image's size (header only) and drop, counted, fixations beyond it."""
        sizes = [image_size(path) for path in records.image_path]
        records = records.assign(width=[w for w, _ in sizes], height=[h for _, h in sizes])
        for record in records.itertuples():
            fixations = self.fixations.get(record.image_id)
            if fixations is None:
                continue
            inside = (fixations.x < record.width) & (fixations.y < record.height)
            self.skips["fixations beyond the image's width or height (dropped)"] += int((~inside).sum())
            if inside.any():
                self.fixations[record.image_id] = _Fixations(fixations.x[inside], fixations.y[inside], fixations.duration[inside])
            else:
                del self.fixations[record.image_id]
        return records

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Sample:
        record = self.records.iloc[index]
        width, height = int(record.width), int(record.height)
        box = Letterbox(width, height, self.grid)
        return Sample(
            image_id=record.image_id,
            patient_id=record.patient_id,
            image=letterbox_array(read_grey(record.image_path), box)[None].float(),
            label=int(record.label),
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

    def _masks(self, image_id: str, box: Letterbox) -> dict:
        folder = self.root / MASK_FOLDER / image_id
        regions = {name: read_mask(folder / file, box) for name, file in ANATOMY_MASKS.items() if (folder / file).is_file()}
        evidence = read_mask(folder / EVIDENCE_MASK, box) if (folder / EVIDENCE_MASK).is_file() else None
        return {"regions": regions, "evidence": evidence}
