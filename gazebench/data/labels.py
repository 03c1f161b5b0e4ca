"""Multi-label policy: how release label values become ``Sample.labels`` (1, 0 or NaN).

One policy for every dataset (documented in data_manifests/README.md):

- CheXpert-style values (MIMIC-CXR-JPG chexpert/negbio files, EGD's ``*__chx`` columns):
  ``1`` positive, ``0`` negative, blank = not mentioned in the report = negative, and ``-1``
  (uncertain) handled by ``uncertain``: ``ignore`` (default: NaN, left out of losses, AUROCs and
  targets), ``zeros`` or ``ones`` (the U-Ignore / U-Zeros / U-Ones policies of the CheXpert paper).
- REFLACX certainty values (0 = not selected, 1 Unlikely, 2 Less likely, 3 Possibly,
  4 Suggestive of, 5 Consistent with): ``>= positive_from`` (default 3) positive, 0 negative,
  values in between uncertain (handled as above).

A positive label is a target: multi-label rows get one row group per positive label.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gazebench.errors import UserError

UNCERTAIN_POLICIES = {"ignore": np.nan, "zeros": 0.0, "ones": 1.0}
DEFAULT_UNCERTAIN = "ignore"
DEFAULT_POSITIVE_CERTAINTY = 3


def uncertain_value(policy: str) -> float:
    if policy not in UNCERTAIN_POLICIES:
        raise UserError(f"unknown uncertain-label policy {policy!r}; choose one of: {', '.join(UNCERTAIN_POLICIES)}")
    return UNCERTAIN_POLICIES[policy]


def chexpert_labels(values: pd.DataFrame, uncertain: str = DEFAULT_UNCERTAIN) -> np.ndarray:
    """[N, C] float32 from CheXpert-style columns (numbers 1 / 0 / -1 or NaN for blank)."""
    array = values.to_numpy(dtype=float, na_value=np.nan)
    labels = np.where(np.isnan(array), 0.0, array)
    labels = np.where(labels == -1, uncertain_value(uncertain), labels)
    return labels.astype(np.float32)


def certainty_labels(
    values: pd.DataFrame,
    positive_from: int = DEFAULT_POSITIVE_CERTAINTY,
    uncertain: str = DEFAULT_UNCERTAIN,
) -> np.ndarray:
    """[N, C] float32 from REFLACX certainty columns (0-5; NaN = column absent in this phase -> NaN)."""
    array = values.to_numpy(dtype=float, na_value=np.nan)
    labels = np.where(array >= positive_from, 1.0, np.where(array > 0, uncertain_value(uncertain), 0.0))
    return np.where(np.isnan(array), np.nan, labels).astype(np.float32)


def merge_readers(labels: np.ndarray) -> np.ndarray:
    """One image's labels from several readings [R, C]: positive if any reader says so,
    else NaN if any reader was uncertain or silent (NaN), else negative."""
    positive = np.nan_to_num(labels, nan=0.0).max(axis=0) == 1
    unknown = np.isnan(labels).any(axis=0)
    return np.where(positive, 1.0, np.where(unknown, np.nan, 0.0)).astype(np.float32)
