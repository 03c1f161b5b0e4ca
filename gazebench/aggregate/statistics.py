"""Statistics over score rows: cell intervals, the paired patient bootstrap, Holm.

Every resampling unit is a **patient** (``gazebench.bootstrap``: the draws, the percentile
interval and the settings ``BOOTSTRAP`` and ``COMPARISONS`` that every statistic here uses).

Paired comparisons match rows on the *unit* (``image_id, target, reader``): the same map target
scored against the same gaze.  The gaze *scope* of a row is ``merged`` (``reader == "all"``: the
merged gaze of every reader of the image) or ``single reader`` (one radiologist's gaze, on images
that several radiologists read); cells and comparisons never mix scopes.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import pandas as pd
import scipy.stats

from gazebench.bootstrap import (
    BOOTSTRAP,
    COMPARISONS,
    bootstrap_ci,
    patient_draws,
    percentile_interval,
)
from gazebench.registry import METRICS

MERGED_GAZE = "merged"
SINGLE_READER_GAZE = "single reader"
ALPHA = COMPARISONS["alpha"]  # significance level of the Holm-corrected comparisons
UNIT_COLUMNS = ["image_id", "target", "reader"]  # rows with equal values are paired


class PairedResult(NamedTuple):
    diff: float  # mean(a) - mean(b) over the kept rows
    ci_low: float
    ci_high: float
    p_value: float  # two-sided bootstrap p-value (see paired_bootstrap)
    n: int  # rows kept (finite in both a and b)
    dropped: int  # rows dropped for a non-finite value in a or b


def paired_bootstrap(values_a, values_b, groups, n_boot: int = BOOTSTRAP["replicates"], seed: int = 0, ci: float = BOOTSTRAP["level"], p_value: str = COMPARISONS["p_value"]) -> PairedResult:
    """Patient bootstrap of mean(a) - mean(b) over paired rows (row i of a and of b: one unit).

    Rows with a non-finite value in a or b are dropped (and counted in ``dropped``).  A replicate
    draws the patients of the kept rows (sorted ids, ``patient_draws``) and takes mean(a) - mean(b)
    over all rows of the drawn patients.  CI: percentile interval of the replicates.  Two-sided
    p-value (``p_value``):

    - ``t`` (default): ``p = 2 * T_{G-1}(-|diff| / se)``, se = standard deviation of the
      replicates (ddof 1), T_{G-1} Student's t distribution function with G - 1 degrees of
      freedom (G = number of patients): a Wald test on the bootstrap standard error, cautious
      with few patients and the normal test with many; se = 0 gives p = 1 when diff = 0, else 0.
      Not limited by the number of replicates, so Holm over many pairs stays possible.
    - ``percentile``: ``p = min(1, 2 * (1 + min(#{replicates <= 0}, #{replicates >= 0})) / (n_boot + 1))``
      (Monte Carlo p-value with the +1 correction, never 0; p < alpha about when 0 lies outside
      the (1 - alpha) percentile interval); its smallest value is 2 / (n_boot + 1).

    Identical a and b give replicates all 0 and p = 1 under both rules.  No kept rows: NaN
    everywhere; one patient only: the difference, but NaN interval and p.
    """
    a = np.asarray(values_a, dtype=float)
    b = np.asarray(values_b, dtype=float)
    groups = np.asarray(groups)
    kept = np.isfinite(a) & np.isfinite(b)
    _, group_index = np.unique(groups[kept], return_inverse=True)
    n_groups = int(group_index.max()) + 1 if kept.any() else 0
    diff_sums = np.bincount(group_index, weights=(a - b)[kept], minlength=n_groups)[:, None]
    counts = np.bincount(group_index, minlength=n_groups).astype(float)[:, None]
    diff, low, high, p = paired_statistics(diff_sums, counts, n_boot, seed, ci, p_value)
    return PairedResult(float(diff[0]), float(low[0]), float(high[0]), float(p[0]), int(kept.sum()), int((~kept).sum()))


# why "t" is the default: the percentile rule cannot go below 2 / (n_boot + 1) (0.002 for
# 1,000 replicates), so Holm over m pairs can never reach 0.05 once m > 25 (e.g. 13 methods: 78 pairs)
P_VALUE_RULES = ("t", "percentile")


def paired_statistics(diff_sums: np.ndarray, counts: np.ndarray, n_boot: int, seed: int, ci: float, p_value: str = COMPARISONS["p_value"]):
    """Vectorised core of ``paired_bootstrap`` for P comparisons over the same G patients.

    ``diff_sums`` [G, P]: per patient, the sum of a - b over its kept rows; ``counts`` [G, P]:
    their number (every patient must hold >= 1 kept row in every column).  One count matrix
    C[n_boot, G] (how often each patient is drawn) serves all columns: replicates = (C @ sums) /
    (C @ counts).  Returns arrays [P]: diff, ci_low, ci_high, p (see ``paired_bootstrap``).
    """
    if p_value not in P_VALUE_RULES:
        raise ValueError(f"p_value must be one of {P_VALUE_RULES}, not {p_value!r}")
    n_groups, n_pairs = diff_sums.shape
    nan = np.full(n_pairs, math.nan)
    if n_groups == 0:
        return nan, nan, nan, nan
    diff = diff_sums.sum(axis=0) / counts.sum(axis=0)
    if n_groups < 2:
        return diff, nan, nan, nan
    draws = patient_draws(n_groups, n_boot, seed)
    offsets = (np.arange(n_boot) * n_groups)[:, None]
    drawn = np.bincount((draws + offsets).ravel(), minlength=n_boot * n_groups).reshape(n_boot, n_groups).astype(float)
    replicates = (drawn @ diff_sums) / (drawn @ counts)
    low, high = percentile_interval(replicates, ci)
    return diff, low, high, _p_values(diff, replicates, p_value, n_groups)


def _p_values(diff: np.ndarray, replicates: np.ndarray, rule: str, n_groups: int) -> np.ndarray:
    if rule == "percentile":
        at_most_zero = (replicates <= 0).sum(axis=0)
        at_least_zero = (replicates >= 0).sum(axis=0)
        return np.minimum(1.0, 2.0 * (1.0 + np.minimum(at_most_zero, at_least_zero)) / (len(replicates) + 1.0))
    se = replicates.std(axis=0, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.abs(diff) / se
    z = np.where(se > 0, z, np.where(diff == 0, 0.0, np.inf))
    return 2.0 * scipy.stats.t.sf(z, df=n_groups - 1)


def holm(p_values) -> np.ndarray:
    """Holm-Bonferroni step-down adjusted p-values (same shape), monotone, capped at 1.

    With the m finite p-values sorted, p_(1) <= ... <= p_(m): adjusted p_(i) =
    max over j <= i of min(1, (m - j + 1) p_(j)).  NaN p-values stay NaN and do not count in m.
    """
    p = np.asarray(p_values, dtype=float)
    flat = p.ravel()
    adjusted = np.full(flat.shape, math.nan)
    finite = np.flatnonzero(np.isfinite(flat))
    order = finite[np.argsort(flat[finite], kind="stable")]
    m = len(order)
    scaled = (m - np.arange(m)) * flat[order]
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate(scaled)) if m else scaled
    return adjusted.reshape(p.shape)


def with_gaze_scope(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows with defaults for missing ``model``/``target``/``reader`` and a ``gaze`` scope column."""
    defaults = {"model": "", "target": "", "reader": "all"}
    rows = rows.assign(**{column: value for column, value in defaults.items() if column not in rows.columns})
    values = pd.to_numeric(rows["value"], errors="coerce").astype(float)
    gaze = np.where(rows["reader"].astype(str) == "all", MERGED_GAZE, SINGLE_READER_GAZE)
    return rows.assign(value=values.where(np.isfinite(values)), gaze=gaze)


def has_single_reader_rows(rows: pd.DataFrame) -> bool:
    return "reader" in rows.columns and bool((rows["reader"].astype(str) != "all").any())


def ranked_names(means: pd.Series, higher_better: bool) -> list:
    """The index of ``means`` best first in the metric's direction, NaN last, ties by name."""
    sign = -1.0 if higher_better else 1.0
    return sorted(means.index, key=lambda name: (bool(np.isnan(means[name])), sign * means[name] if not np.isnan(means[name]) else 0.0, str(name)))


def higher_is_better(metric: str) -> bool:
    """The metric's direction from the registry; unknown metrics rank high values first."""
    return METRICS.get(metric).higher_is_better if metric in METRICS else True


def cell_statistics(scoped: pd.DataFrame, keys: list[str], n_boot: int, seed: int, ci: float) -> pd.DataFrame:
    """One row per group of ``keys``: ``mean, ci_low, ci_high, n`` of the finite ``value``s.

    ``n`` counts finite values; a group without any has NaN mean and interval and n = 0.  The
    interval is ``bootstrap_ci`` over ``patient_id`` with its own generator (same seed) per group.
    """
    records = []
    for key, cell in scoped.groupby(keys, sort=True, dropna=False):
        finite = cell["value"].notna()
        low, high = bootstrap_ci(cell["value"][finite], cell["patient_id"][finite], n_boot, seed, ci)
        mean = float(cell["value"][finite].mean()) if finite.any() else math.nan
        records.append(dict(zip(keys, key)) | {"mean": mean, "ci_low": low, "ci_high": high, "n": int(finite.sum())})
    return pd.DataFrame(records, columns=keys + ["mean", "ci_low", "ci_high", "n"]).astype({"n": int})


