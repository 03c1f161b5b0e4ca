"""Patient-level splits, documented exactly so that a published split can be reproduced.

EGD split (the EGD paper's recipe, with the order made explicit): take the unique patient ids
as strings, sort them, shuffle them with ``random.Random(42).shuffle``, then the first
``int(0.8 * P)`` patients are ``train``, the next ``int(0.1 * P)`` are ``dev`` and the rest
``test``.  Every image of a patient is in the patient's split.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Iterable

import pandas as pd

SPLITS = ("train", "dev", "test")


def patient_split(patient_ids: Iterable[str], seed: int = 42, train: float = 0.8, dev: float = 0.1) -> dict[str, str]:
    """Map each patient id to ``train``, ``dev`` or ``test`` (see module docstring)."""
    patients = sorted({str(p) for p in patient_ids})
    random.Random(seed).shuffle(patients)
    n_train, n_dev = int(train * len(patients)), int(dev * len(patients))
    assignment = {}
    for position, patient in enumerate(patients):
        assignment[patient] = "train" if position < n_train else "dev" if position < n_train + n_dev else "test"
    return assignment


def write_splits(table: pd.DataFrame, path: Path) -> None:
    """Write ``image_id, patient_id, split`` (sorted by split then image id) to a CSV."""
    columns = table[["image_id", "patient_id", "split"]].sort_values(["split", "image_id"])
    path.parent.mkdir(parents=True, exist_ok=True)
    columns.to_csv(path, index=False)
