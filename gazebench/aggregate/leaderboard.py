"""Aggregate score rows into a leaderboard: one cell per (model,) method, metric (and gaze scope).

A cell's ``mean`` is the mean of its finite values (one row per image, target and reader), ``n``
their number; NaN values are left out (the engine counts and reports them).  The confidence
interval is a percentile bootstrap over **patients** (``gazebench.bootstrap``): a
replicate draws the cell's patients with replacement and averages all rows of the drawn patients.

Gaze scopes: cells over the rows scored against the merged gaze (``reader`` ``all``) have gaze
``merged``; when the rows also hold single-reader rows (images read by several radiologists),
cells over those rows (gaze ``single reader``, with the ``inter_observer`` ceiling) are added and
a ``gaze`` column says which is which.  Reference methods (REFERENCE_MAPS) are ranked with the
others but marked by ``role``; significance marks come from ``comparisons.comparisons`` (paired
patient bootstrap on the shared images, Holm-corrected within each block).
"""

from __future__ import annotations

import pandas as pd

from gazebench.aggregate.comparisons import comparisons
from gazebench.aggregate.statistics import (
    MERGED_GAZE,
    cell_statistics,
    has_single_reader_rows,
    higher_is_better,
    with_gaze_scope,
)
from gazebench.bootstrap import BOOTSTRAP, COMPARISONS
from gazebench.protocol import REFERENCE_MAPS

FLOOR_TO_BEAT = "centre_bias"  # the vs_centre_bias column answers "better than centre bias?"
CONSTANT_FLOOR = "uniform"  # a constant map: only kl and kl_cb are defined for it, every other metric gives NaN
KEY_COLUMNS = ["method", "metric"]
STAT_COLUMNS = ["mean", "ci_low", "ci_high", "n"]
NO_TEST = "-"  # mark of a cell without a paired test


def build_leaderboard(rows: pd.DataFrame, n_boot: int = BOOTSTRAP["replicates"], seed: int = 0, ci: float = BOOTSTRAP["level"], comparison_table: pd.DataFrame | None = None) -> pd.DataFrame:
    """Rows (image_id, patient_id, method, metric, value[, model, reader, target]) -> one row per cell.

    Columns: ``[model,] method, metric, [gaze,] mean, ci_low, ci_high, n, role, vs_best``, then
    ``vs_best_model`` (several models) and ``vs_centre_bias`` (rows with centre_bias).  ``model``
    only when the rows hold several models, ``gaze`` only with single-reader rows.  ``role``:
    method / floor / ceiling.  ``vs_best``: the cell against the best non-reference method of its
    block (model, metric, gaze): best, ns (not significantly different), worse, better, or - (no
    test); ``vs_best_model`` likewise against the best model for the same method (``-`` for a
    method that fewer than two models have finite values for: it is best against no one);
    ``vs_centre_bias``: against the centre-bias floor.  Sorted by metric, gaze, then best mean
    first in the metric's direction (cells without finite values last).  ``comparison_table``:
    ``comparisons(rows, ...)`` when the caller already has it.  ``attrs``: ``ci``, ``n_boot``.
    """
    scoped = with_gaze_scope(rows)
    several_models = "model" in rows.columns and rows["model"].nunique(dropna=False) > 1
    keys = (["model"] if several_models else []) + KEY_COLUMNS + (["gaze"] if has_single_reader_rows(rows) else [])
    board = _sort_by_direction(cell_statistics(scoped, keys, n_boot, seed, ci))
    board["role"] = board["method"].map(lambda method: REFERENCE_MAPS.get(method, "method"))
    if comparison_table is None:
        comparison_table = comparisons(rows, n_boot, seed, ci, model_independent=REFERENCE_MAPS)
    lookup = _comparison_lookup(comparison_table, ignore_model=not several_models)
    board["vs_best"] = _marks(board, lookup, "methods", "best")
    if several_models:
        board["vs_best_model"] = _marks(board, lookup, "models", "best")
    if (board["method"] == FLOOR_TO_BEAT).any():
        board[f"vs_{FLOOR_TO_BEAT}"] = _marks(board, lookup, "methods", FLOOR_TO_BEAT)
    board.attrs.update(ci=ci, n_boot=n_boot)
    return board


def _sort_by_direction(board: pd.DataFrame) -> pd.DataFrame:
    """Sort by metric (and gaze scope), then best mean first (descending unless lower is better), NaN last."""
    sign = board["metric"].map(lambda metric: -1.0 if higher_is_better(metric) else 1.0)
    board = board.assign(_rank=board["mean"] * sign)
    order = ["metric"] + (["gaze"] if "gaze" in board.columns else []) + ["_rank"]
    board = board.sort_values(order, na_position="last", kind="stable")
    return board.drop(columns="_rank").reset_index(drop=True)


def _comparison_lookup(table: pd.DataFrame, ignore_model: bool) -> dict:
    """(kind, fixed, metric, gaze, x, y) -> (mean(x) - mean(y), p_holm, significant), both orders."""
    lookup = {}
    for row in table.itertuples(index=False):
        fixed = None if row.kind == "methods" and ignore_model else (row.model if row.kind == "methods" else row.method)
        lookup[(row.kind, fixed, row.metric, row.gaze, row.a, row.b)] = (row.diff, row.p_holm, row.significant)
        lookup[(row.kind, fixed, row.metric, row.gaze, row.b, row.a)] = (-row.diff, row.p_holm, row.significant)
    return lookup


def _marks(board: pd.DataFrame, lookup: dict, kind: str, against: str) -> list[str]:
    """Each cell's verdict against its block's ``best`` cell, or against the method ``against``.

    kind ``methods``: blocks are (model, metric, gaze), names are methods, the best is the best
    non-reference method; kind ``models``: blocks are (method, metric, gaze), names are models
    (reference methods, the same for every model, get ``-``; so does a method only one model has
    finite values for, so that a method one model ran alone is never marked best among models).
    """
    name_column, fixed_column = ("method", "model") if kind == "methods" else ("model", "method")
    block_keys = [column for column in (fixed_column, "metric", "gaze") if column in board.columns]
    marks = pd.Series(NO_TEST, index=board.index, dtype=object)
    for _, block in board.groupby(block_keys, sort=False, dropna=False):
        candidates = block[block["mean"].notna()]
        if kind == "models":
            candidates = candidates[~candidates["method"].isin(list(REFERENCE_MAPS))]
            if candidates[name_column].nunique() < 2:
                continue
        if against == "best":
            ranked = candidates[~candidates["method"].isin(list(REFERENCE_MAPS))] if kind == "methods" else candidates
            reference = ranked[name_column].iloc[0] if len(ranked) else None  # the board is sorted best first
        else:
            reference = against if (candidates[name_column] == against).any() else None
        if reference is None:
            continue
        for index, row in candidates.iterrows():
            if row[name_column] == reference:
                marks[index] = "best" if against == "best" else NO_TEST
                continue
            fixed = row.get(fixed_column) if fixed_column in board.columns else None
            entry = lookup.get((kind, fixed, row["metric"], row.get("gaze", MERGED_GAZE), row[name_column], reference))
            marks[index] = _verdict(entry, higher_is_better(row["metric"]))
    return marks.tolist()


def _verdict(entry: tuple | None, higher_better: bool) -> str:
    """ns / better / worse for a (cell - reference difference, p_holm, significant) entry."""
    if entry is None or pd.isna(entry[1]):
        return NO_TEST
    diff, _, significant = entry
    if not significant:
        return "ns"
    return "better" if (diff > 0) == higher_better else "worse"


def structurally_undefined(board: pd.DataFrame) -> pd.Series:
    """The cells of the constant floor without a finite value: undefined by construction, not a failure, so tables leave them out."""
    return (board["method"] == CONSTANT_FLOOR) & (board["n"] == 0)


def rank(rows: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The leaderboard of score rows and its paired comparisons, with the run settings (``BOOTSTRAP``, ``COMPARISONS``)."""
    n_boot, ci = BOOTSTRAP["replicates"], BOOTSTRAP["level"]
    table = comparisons(rows, n_boot, seed, ci, model_independent=REFERENCE_MAPS, p_value=COMPARISONS["p_value"])
    return build_leaderboard(rows, n_boot=n_boot, seed=seed, ci=ci, comparison_table=table), table
