"""What every dataset reader provides to the engine, the training loop, the cache and the checker.

A reader is a ``torch.utils.data.Dataset`` of ``Sample``s for one split, built from a local copy
laid out exactly as released and described by its manifest (``data_manifests/<name>.yaml``).
It never drops anything silently: every skipped image, reading, fixation or row is counted in
``skips`` (reason -> count), which ``run.log``, ``data check`` and ``data prepare`` report.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pandas as pd
import torch

from gazebench.data.gaze import GazeConvention
from gazebench.data.manifest import Manifest
from gazebench.data.splits import SPLITS
from gazebench.errors import UserError

SPLIT_CHOICES = (*SPLITS, "all")


class GazeDataset(torch.utils.data.Dataset):
    """Base of the readers.  Subclasses fill the attributes below in ``__init__``.

    - ``manifest``: the dataset's manifest; ``name`` its name (``egd``, ``synth``, ...).
    - ``root`` / ``images_root``: the release folder and the MIMIC-CXR(-JPG) tree of the images.
    - ``split``: ``train``, ``dev``, ``test`` or ``all``; ``grid``: scoring-grid size.
    - ``convention``: how gaze densities are built (None for data without gaze).
    - ``class_names`` and ``multi_label`` (one positive class per image, or any number).
    - ``table``: every usable image of every split (``image_id, patient_id, split``), for
      ``splits.csv``; ``records``: this split's items, one row per ``Sample`` (``image_id``,
      ``patient_id``, ``reader`` ...).
    - ``skips``: reason -> count of what was left out, and why.
    """

    manifest: Manifest
    name: str
    root: Path
    images_root: Path
    split: str
    grid: int
    convention: GazeConvention | None
    class_names: list[str]
    multi_label: bool
    has_gaze: bool
    table: pd.DataFrame
    records: pd.DataFrame
    skips: Counter

    def __len__(self) -> int:
        return len(self.records)

    def item_key(self, index: int) -> str:
        """A file-name-safe id of item ``index``, unique in the dataset (the cache's file name)."""
        record = self.records.iloc[index]
        reader = record.get("reader", "all")
        return str(record.image_id) if reader in (None, "all") else f"{record.image_id}__{reader}"

    def stats(self) -> dict[str, int]:
        """Counts that ``data check`` prints beside the skips (subclasses add their own)."""
        return {"items in this split": len(self)}


def check_split(split: str) -> None:
    if split not in SPLIT_CHOICES:
        raise UserError(f"unknown split {split!r}; choose one of: {', '.join(SPLIT_CHOICES)}")


def check_root(root: Path, manifest: Manifest) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"data directory {root} does not exist; pass --root with the folder of your copy of {manifest.obtain_hint()}")
    return root
