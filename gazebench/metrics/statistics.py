"""Statistics over score rows: patient bootstrap intervals, paired comparisons, Holm, breakdowns.

Every resampling unit is a **patient**: a replicate draws the patients with replacement (from
``numpy.random.default_rng(seed).integers(0, n_patients, size=(n_boot, n_patients))``, patients
in sorted-id order) and pools all rows of the drawn patients, so images of one patient move
together.  Intervals are percentile intervals of the replicates.  Because every interval and
every comparison draws from a fresh generator with the same seed, two statistics over the same
patients use the same draws, and a result does not depend on which other cells the rows hold.

Paired comparisons match rows on the *unit* (``image_id, target, reader``): the same map target
scored against the same gaze.  The gaze *scope* of a row is ``merged`` (``reader == "all"``: the
merged gaze of every reader of the image) or ``single reader`` (one radiologist's gaze, on images
that several radiologists read); cells and comparisons never mix scopes.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Collection
from typing import NamedTuple

import numpy as np
import pandas as pd
import scipy.stats

from gazebench.registry import METRICS

MERGED_GAZE = "merged"
SINGLE_READER_GAZE = "single reader"
ALPHA = 0.05  # significance level of the Holm-corrected comparisons
UNIT_COLUMNS = ["image_id", "target", "reader"]  # rows with equal values are paired
COMPARISON_COLUMNS = ["kind", "metric", "gaze", "model", "method", "a", "b", "n", "dropped", "diff", "ci_low", "ci_high", "p", "p_holm", "significant"]


class PairedResult(NamedTuple):
    diff: float  # mean(a) - mean(b) over the kept rows
    ci_low: float
    ci_high: float
    p_value: float  # two-sided bootstrap p-value (see paired_bootstrap)
    n: int  # rows kept (finite in both a and b)
    dropped: int  # rows dropped for a non-finite value in a or b


def patient_draws(n_patients: int, n_boot: int, seed: int) -> np.ndarray:
    """[n_boot, n_patients] patient indices, the draws every statistic here uses."""
    return np.random.default_rng(seed).integers(0, n_patients, size=(n_boot, n_patients))


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
    draws = patient_draws(len(group_sums), n_boot, seed)
    replicates = group_sums[draws].sum(axis=1) / group_counts[draws].sum(axis=1)
    tail = (1.0 - ci) / 2.0
    low, high = np.quantile(replicates, [tail, 1.0 - tail])
    return float(low), float(high)


def paired_bootstrap(values_a, values_b, groups, n_boot: int = 1000, seed: int = 0, ci: float = 0.95, p_value: str = "t") -> PairedResult:
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


def paired_statistics(diff_sums: np.ndarray, counts: np.ndarray, n_boot: int, seed: int, ci: float, p_value: str = "t"):
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
    tail = (1.0 - ci) / 2.0
    low, high = np.quantile(replicates, [tail, 1.0 - tail], axis=0)
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


def comparisons(rows: pd.DataFrame, n_boot: int = 1000, seed: int = 0, ci: float = 0.95, model_independent: Collection[str] = (), p_value: str = "t") -> pd.DataFrame:
    """Paired patient-bootstrap comparisons of every pair, on the units both were scored on.

    ``kind`` ``methods``: every pair of methods within each (model, metric, gaze scope);
    ``kind`` ``models`` (rows with several models): every pair of models within each (method,
    metric, gaze scope), leaving out ``model_independent`` methods (reference maps such as centre
    bias are the same for every model).  ``a`` ranks above ``b`` by mean over the family's rows
    (in the metric's direction); ``diff`` = mean(a) - mean(b) over the units where both are
    finite (``n``; ``dropped``: the family's units where a or b has no finite value); CI and
    ``p`` as in ``paired_bootstrap`` (rule ``p_value``).  ``p_holm``: Holm within the family
    (kind, fixed model or method, metric, gaze); ``significant``: p_holm < ALPHA.  Columns:
    COMPARISON_COLUMNS; of ``model`` and ``method`` the fixed one is set, the other is None.
    Pairs over the same patients share one draw matrix (``paired_statistics``), so each result
    equals ``paired_bootstrap`` on that pair's matched rows.
    """
    scoped = with_gaze_scope(rows)
    settings = (n_boot, seed, ci, p_value)
    records = _compare(scoped, "method", "model", *settings)
    if scoped["model"].nunique() > 1:
        records += _compare(scoped[~scoped["method"].isin(list(model_independent))], "model", "method", *settings)
    table = pd.DataFrame(records, columns=COMPARISON_COLUMNS)
    return table.astype({"n": int, "dropped": int, "significant": bool})


def _compare(scoped: pd.DataFrame, varying: str, fixed: str, n_boot: int, seed: int, ci: float, p_value: str) -> list[dict]:
    """All pairs of ``varying`` (method or model) within each (fixed, metric, gaze) family."""
    family_keys = [fixed, "metric", "gaze"]
    index = family_keys + UNIT_COLUMNS + ["patient_id"]
    duplicated = scoped.duplicated(index + [varying])
    if duplicated.any():
        example = scoped.loc[duplicated, index + [varying]].iloc[0].to_dict()
        raise ValueError(f"several rows for one unit, e.g. {example}; rows must hold one value per (image, target, reader, model, method, metric)")
    if scoped.empty:
        return []
    wide = scoped.set_index(index + [varying])["value"].unstack(varying)
    records = []
    for key, family in wide.groupby(level=family_keys, sort=True):
        records += _compare_family(family.dropna(axis=1, how="all"), dict(zip(family_keys, key)), varying, n_boot, seed, ci, p_value)
    return records


def _compare_family(family: pd.DataFrame, key: dict, varying: str, n_boot: int, seed: int, ci: float, p_value: str) -> list[dict]:
    """One family's pairs: a [units, names] value matrix, per-patient sums, shared draws, Holm."""
    names = ranked_names(family.mean(axis=0, skipna=True), higher_is_better(key["metric"]))
    if len(names) < 2:
        return []
    values = family[names].to_numpy(dtype=float)
    _, patients = np.unique(np.asarray(family.index.get_level_values("patient_id")), return_inverse=True)
    first, second = (np.array(side) for side in zip(*itertools.combinations(range(len(names)), 2)))
    differences = values[:, first] - values[:, second]
    kept = np.isfinite(differences)
    diff_sums = np.zeros((patients.max() + 1, len(first)))
    np.add.at(diff_sums, patients, np.where(kept, differences, 0.0))
    counts = np.zeros_like(diff_sums)
    np.add.at(counts, patients, kept.astype(float))
    stats = np.full((4, len(first)), math.nan)
    present = counts > 0
    for pattern in np.unique(present, axis=1).T:  # the pairs over the same patients share one draw
        columns = np.flatnonzero((present == pattern[:, None]).all(axis=0))
        stats[:, columns] = paired_statistics(diff_sums[pattern][:, columns], counts[pattern][:, columns], n_boot, seed, ci, p_value)
    p_holm = holm(stats[3])
    fixed = "model" if varying == "method" else "method"
    return [
        {"kind": f"{varying}s", "metric": key["metric"], "gaze": key["gaze"], fixed: key[fixed], varying: None,
         "a": names[i], "b": names[j], "n": int(kept[:, k].sum()), "dropped": int((~kept[:, k]).sum()),
         "diff": stats[0, k], "ci_low": stats[1, k], "ci_high": stats[2, k], "p": stats[3, k],
         "p_holm": p_holm[k], "significant": bool(p_holm[k] < ALPHA)}
        for k, (i, j) in enumerate(zip(first, second))
    ]


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


def breakdown(rows: pd.DataFrame, n_boot: int = 1000, seed: int = 0, ci: float = 0.95) -> pd.DataFrame:
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


def format_breakdown_markdown(table: pd.DataFrame) -> str:
    """Kim et al.'s layout: one line per (model, method, metric, gaze, target), correct | incorrect."""
    ci = table.attrs.get("ci")
    ci_label = f"{ci:.0%} CI" if ci is not None else "CI"
    keys = [column for column in ("model", "method", "metric", "gaze", "target") if column in table.columns]
    header = keys + ["correct prediction", "incorrect prediction"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for key, group in table.groupby(keys, sort=False, dropna=False):
        by_outcome = {row.correct: row for row in group.itertuples(index=False)}
        cells = [_breakdown_cell(by_outcome.get(outcome)) for outcome in (True, False)]
        lines.append("| " + " | ".join([str(part) for part in key] + cells) + " |")
    note = f"\nEach cell: mean [{ci_label}, patient bootstrap] (n images x targets); - : no such image.\n"
    return "\n".join(lines) + "\n" + note


def _breakdown_cell(row) -> str:
    if row is None or row.n == 0:
        return "-"
    return f"{row.mean:.4f} [{row.ci_low:.4f}, {row.ci_high:.4f}] (n={row.n})"
