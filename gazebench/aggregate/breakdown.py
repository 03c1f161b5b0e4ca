"""Breakdowns: mean and patient-bootstrap CI per class and correct / incorrect prediction (Kim et al.'s table)."""

from __future__ import annotations

import pandas as pd

from gazebench.aggregate.statistics import (
    cell_statistics,
    has_single_reader_rows,
    with_gaze_scope,
)
from gazebench.bootstrap import BOOTSTRAP


def breakdown(rows: pd.DataFrame, n_boot: int = BOOTSTRAP["replicates"], seed: int = 0, ci: float = BOOTSTRAP["level"]) -> pd.DataFrame:
    """Mean, patient-bootstrap CI and n per (model, method, metric, target, correct).

    Kim et al.'s image-level table: each class the maps explain (``target``), split by whether the
    model's prediction was right (``correct``, see the row schema).  ``model`` is a column when the
    rows have one; ``gaze`` (after ``metric``) only when they hold single-reader rows, as in the
    leaderboard.  Sorted by the keys, correct predictions first.
    """
    missing = [column for column in ("target", "correct", "patient_id", "method", "metric", "value") if column not in rows.columns]
    if missing:
        raise ValueError(f"breakdown needs the row columns {missing}")
    scoped = with_gaze_scope(rows)
    keys = (["model"] if "model" in rows.columns else []) + ["method", "metric"] + (["gaze"] if has_single_reader_rows(rows) else []) + ["target", "correct"]
    table = cell_statistics(scoped, keys, n_boot, seed, ci)
    table = table.sort_values(keys, ascending=[column != "correct" for column in keys], kind="stable").reset_index(drop=True)
    table.attrs.update(ci=ci, n_boot=n_boot)
    return table
