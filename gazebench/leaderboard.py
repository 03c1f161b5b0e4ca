"""Aggregate score rows into a leaderboard: one cell per (model,) method and metric.

A cell's ``mean`` is the mean of its finite values (one row per image and target), ``n`` their
number; NaN values are left out (the engine counts and reports them).  The confidence interval
is a percentile bootstrap over **patients**: a replicate draws the cell's patients with
replacement and averages all images of the drawn patients, so images of one patient move
together.  Each cell draws from a fresh ``numpy.random.default_rng(seed)``, so a cell's interval
does not depend on which other cells the rows hold, and cells with the same patients are
resampled identically (paired comparisons).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from gazebench.registry import METRICS

KEY_COLUMNS = ["method", "metric"]
STAT_COLUMNS = ["mean", "ci_low", "ci_high", "n"]


def bootstrap_ci(values, groups, n_boot: int = 1000, seed: int = 0, ci: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values``, resampling whole ``groups``.

    ``groups`` (e.g. patient ids) label each value; non-finite values are dropped first.  The
    replicate statistic is (sum of the drawn groups' values) / (their number of values), from
    per-group sums and counts and an [n_boot, n_groups] index matrix (memory ~ 8 n_boot n_groups
    bytes).  Groups are ordered by sorted id, so the row order does not change the draws.
    Returns (NaN, NaN) without finite values.
    """
    values = np.asarray(values, dtype=float)
    groups = np.asarray(groups)
    finite = np.isfinite(values)
    if not finite.any():
        return math.nan, math.nan
    _, group_index = np.unique(groups[finite], return_inverse=True)
    group_sums = np.bincount(group_index, weights=values[finite])
    group_counts = np.bincount(group_index).astype(float)
    draws = np.random.default_rng(seed).integers(0, len(group_sums), size=(n_boot, len(group_sums)))
    replicates = group_sums[draws].sum(axis=1) / group_counts[draws].sum(axis=1)
    tail = (1.0 - ci) / 2.0
    low, high = np.quantile(replicates, [tail, 1.0 - tail])
    return float(low), float(high)


def higher_is_better(metric: str) -> bool:
    """The metric's direction from the registry; unknown metrics rank high values first."""
    return METRICS.get(metric).higher_is_better if metric in METRICS else True


def build_leaderboard(rows: pd.DataFrame, n_boot: int = 1000, seed: int = 0, ci: float = 0.95) -> pd.DataFrame:
    """Rows (image_id, patient_id, method, metric, value[, model]) -> one row per cell.

    Columns ``method, metric, mean, ci_low, ci_high, n`` (``model`` first when the rows hold
    several models), sorted by metric, then best mean first in the metric's direction (cells
    without finite values last).  ``attrs`` records ``ci`` and ``n_boot``.  Cells use the rows
    scored against the merged gaze (``reader`` ``all``); per-reader rows are for other tables.
    """
    if "reader" in rows.columns:
        rows = rows[rows["reader"] == "all"]
    keys = _cell_keys(rows)
    values = pd.to_numeric(rows["value"], errors="coerce").astype(float)
    scored = rows.assign(value=values.where(np.isfinite(values)))
    cells = [
        _cell_stats(cell, n_boot, seed, ci) | dict(zip(keys, key))
        for key, cell in scored.groupby(keys, sort=True, dropna=False)
    ]
    board = pd.DataFrame(cells, columns=keys + STAT_COLUMNS)
    board["n"] = board["n"].astype(int)
    board = _sort_by_direction(board)
    board.attrs.update(ci=ci, n_boot=n_boot)
    return board


def _cell_keys(rows: pd.DataFrame) -> list[str]:
    several_models = "model" in rows.columns and rows["model"].nunique(dropna=False) > 1
    return ["model", *KEY_COLUMNS] if several_models else list(KEY_COLUMNS)


def _cell_stats(cell: pd.DataFrame, n_boot: int, seed: int, ci: float) -> dict:
    finite = cell["value"].notna()
    n = int(finite.sum())
    if n == 0:
        return dict(mean=math.nan, ci_low=math.nan, ci_high=math.nan, n=0)
    low, high = bootstrap_ci(cell["value"][finite], cell["patient_id"][finite], n_boot, seed, ci)
    return dict(mean=float(cell["value"][finite].mean()), ci_low=low, ci_high=high, n=n)


def _sort_by_direction(board: pd.DataFrame) -> pd.DataFrame:
    """Sort by metric, then best mean first (descending unless lower is better), NaN last."""
    sign = board["metric"].map(lambda metric: -1.0 if higher_is_better(metric) else 1.0)
    board = board.assign(_rank=board["mean"] * sign)
    board = board.sort_values(["metric", "_rank"], na_position="last", kind="stable")
    return board.drop(columns="_rank").reset_index(drop=True)


def format_markdown(leaderboard: pd.DataFrame) -> str:
    """A markdown table: metric with its direction arrow, mean and CI to 4 decimals, n."""
    ci = leaderboard.attrs.get("ci")
    ci_header = f"{ci:.0%} CI" if ci is not None else "CI"
    has_model = "model" in leaderboard.columns
    header = (["model"] if has_model else []) + ["metric", "method", "mean", ci_header, "n"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for row in leaderboard.itertuples(index=False):
        arrow = "↑" if higher_is_better(row.metric) else "↓"
        cells = ([str(row.model)] if has_model else []) + [
            f"{row.metric} {arrow}",
            str(row.method),
            _number(row.mean),
            f"[{_number(row.ci_low)}, {_number(row.ci_high)}]",
            str(row.n),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    return "n/a" if pd.isna(value) else f"{value:.4f}"
