"""The patient bootstrap every confidence interval of gazebench uses, and the settings of its statistics.

Every resampling unit is a **patient**: a replicate draws the patients with replacement (from
``numpy.random.default_rng(seed).integers(0, n_patients, size=(n_boot, n_patients))``, patients
in sorted-id order) and pools all rows of the drawn patients, so images of one patient move
together.  Intervals are percentile intervals of the replicates.  Because every statistic draws
from a fresh generator with the same seed, two statistics over the same patients use the same
draws, and a result does not depend on which other cells the rows hold.  Leaderboard cells,
paired comparisons, the training report's AUROC intervals and the sanity check all use it.
"""

from __future__ import annotations

import math

import numpy as np

# the settings of every interval (run configs record them with the run's seed)
BOOTSTRAP = {"replicates": 1000, "interval": "percentile", "level": 0.95, "unit": "patient"}
# the settings of the leaderboard's paired comparisons (gazebench.aggregate.comparisons)
COMPARISONS = {"pairing": "same image, target and reader", "test": "paired patient bootstrap of the difference of means", "p_value": "t", "correction": "holm", "alpha": 0.05}


def patient_draws(n_patients: int, n_boot: int, seed: int) -> np.ndarray:
    """[n_boot, n_patients] patient indices, the draws every statistic uses."""
    return np.random.default_rng(seed).integers(0, n_patients, size=(n_boot, n_patients))


def percentile_interval(replicates: np.ndarray, level: float, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The (low, high) percentile interval of ``replicates`` along ``axis`` at ``level`` (e.g. 0.95)."""
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(replicates, [tail, 1.0 - tail], axis=axis)
    return low, high


def bootstrap_ci(values, groups, n_boot: int = BOOTSTRAP["replicates"], seed: int = 0, ci: float = BOOTSTRAP["level"]) -> tuple[float, float]:
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
    draws = patient_draws(len(group_sums), n_boot, seed)
    replicates = group_sums[draws].sum(axis=1) / group_counts[draws].sum(axis=1)
    low, high = percentile_interval(replicates, ci)
    return float(low), float(high)
