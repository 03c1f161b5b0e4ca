"""Paired comparisons of methods (and of models) on the units both were scored on, Holm-corrected.

Paired comparisons match rows on the *unit* (``image_id, target, reader``): the same map target
scored against the same gaze, within one gaze scope (``statistics.with_gaze_scope``).  Each pair
is a paired patient bootstrap of the difference of means (``statistics.paired_statistics``);
settings: ``gazebench.bootstrap.COMPARISONS``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Collection

import numpy as np
import pandas as pd

from gazebench.aggregate.statistics import (
    ALPHA,
    UNIT_COLUMNS,
    higher_is_better,
    holm,
    paired_statistics,
    ranked_names,
    with_gaze_scope,
)
from gazebench.bootstrap import BOOTSTRAP, COMPARISONS

COMPARISON_COLUMNS = ["kind", "metric", "gaze", "model", "method", "a", "b", "n", "dropped", "diff", "ci_low", "ci_high", "p", "p_holm", "significant"]


def comparisons(rows: pd.DataFrame, n_boot: int = BOOTSTRAP["replicates"], seed: int = 0, ci: float = BOOTSTRAP["level"], model_independent: Collection[str] = (), p_value: str = COMPARISONS["p_value"]) -> pd.DataFrame:
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
