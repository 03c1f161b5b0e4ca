"""The region analysis of a run (Kim, Zhou, Lipton; REFERENCES.md section 2), from its stored region shares.

The run stores, per map, the share of its mass inside each anatomical region
(``gazebench.metrics.regions.region_shares``).  ``analyse_regions`` z-scores each region's share
against the other maps of the same (model, method), calls the region with the highest z-score
the map's *most salient region*, then tabulates per class how often each region is the most
salient one, and how often a map's most salient region is the gaze's for the same image and
target.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from gazebench.run.store import GAZE_METHOD
from gazebench.run.store import REGION_KEYS as KEY_COLUMNS

ALL_TARGETS = "all"  # the ``target`` of the agreement rows that pool every target
GROUP = ["model", "method"]  # the set a share is z-scored against
CLASS = ["model", "method", "target"]


@dataclass
class RegionAnalysis:
    """The tables of ``analyse_regions`` (see there for every column)."""

    per_map: pd.DataFrame
    class_distribution: pd.DataFrame
    agreement: pd.DataFrame
    region_names: list[str]


def analyse_regions(shares: pd.DataFrame, region_names: list[str], ddof: int = 1) -> RegionAnalysis:
    """Most salient region per map, its distribution per class, and its agreement with gaze.

    ``shares`` holds one row per scored map: the key columns ``image_id, patient_id, target,
    correct, model, method`` and one float column per region (``region_shares``).  Rows with
    ``method == "gaze"`` hold the gaze density's shares for that (model, image, target).

    1. z-scores, per (model, method) group (the gaze rows are a group of their own): for each
       region, (share - mean) / std over the group's rows with a share (pandas, skipping NaN;
       std with ``ddof``, default 1).  NaN where the share is NaN, the std is 0 (every map
       has the same share) or fewer than 2 rows of the group have a share.  Columns ``z_<region>``.
    2. ``most_salient``: the region with the highest z-score (ties: the first in
       ``region_names`` order); NaN when all its z-scores are NaN.  Such rows stay in
       ``per_map`` and are counted as ``n_undefined`` below.
    3. ``class_distribution``: one row per (model, method, target, region): ``count`` of maps
       whose most salient region it is, ``fraction`` = count / ``n_defined`` (the maps of that
       class with a most salient region; fractions sum to 1 over regions), ``n_defined``,
       ``n_undefined``.  The gaze rows appear as method ``gaze``.
    4. ``agreement``: per (model, method, target), and pooled over targets (target ``all``),
       for the non-gaze maps: ``agreement`` = share of the compared maps whose most salient
       region equals the gaze's for the same (model, image_id, target); ``n_compared`` (both
       defined), ``n_undefined`` (either undefined, or no gaze row), ``n`` = both; ``chance`` =
       the agreement expected if the two were independent with the observed frequencies
       (sum over regions of the product of the map's and the gaze's frequency among the
       compared maps).

    Raises ValueError for missing columns or two gaze rows with one (model, image_id, target).
    """
    _check_columns(shares, region_names)
    per_map = _with_most_salient(_with_z_scores(shares, region_names, ddof), region_names)
    return RegionAnalysis(
        per_map=per_map,
        class_distribution=_class_distribution(per_map, region_names),
        agreement=_agreement(per_map),
        region_names=list(region_names),
    )


def z_column(region: str) -> str:
    return f"z_{region}"


def _check_columns(shares: pd.DataFrame, region_names: list[str]) -> None:
    missing = [column for column in (*KEY_COLUMNS, *region_names) if column not in shares.columns]
    if missing:
        raise ValueError(f"region shares lack the columns {missing}; they have {list(shares.columns)}")


def _with_z_scores(shares: pd.DataFrame, region_names: list[str], ddof: int) -> pd.DataFrame:
    """``shares`` plus one ``z_<region>`` column per region, z-scored within (model, method)."""
    shares = shares.reset_index(drop=True)
    values = shares[list(region_names)].astype("float64")
    grouped = values.groupby([shares[column] for column in GROUP], dropna=False, sort=False)
    mean = grouped.transform("mean")
    std = grouped.transform("std", ddof=ddof)
    enough = (grouped.transform("count") >= 2) & (std > 0)
    z_scores = ((values - mean) / std).where(enough)
    z_scores.columns = [z_column(name) for name in region_names]
    return pd.concat([shares, z_scores], axis=1)


def _with_most_salient(per_map: pd.DataFrame, region_names: list[str]) -> pd.DataFrame:
    """Adds ``most_salient``: the region of the highest z-score, NaN when all are NaN."""
    z_scores = per_map[[z_column(name) for name in region_names]].to_numpy(dtype="float64")
    undefined = np.isnan(z_scores).all(axis=1)
    best = np.where(np.isnan(z_scores), -np.inf, z_scores).argmax(axis=1) if region_names else np.zeros(len(per_map), int)
    names = np.asarray(list(region_names) or [None], dtype=object)[best]
    per_map = per_map.copy()
    per_map["most_salient"] = pd.Series(names, index=per_map.index, dtype=object).where(~undefined)
    return per_map


def _class_distribution(per_map: pd.DataFrame, region_names: list[str]) -> pd.DataFrame:
    """Long table (model, method, target, region, count, fraction, n_defined, n_undefined)."""
    keys = [per_map[column] for column in CLASS]
    counts = pd.get_dummies(per_map["most_salient"]).reindex(columns=list(region_names), fill_value=False).astype("int64")
    counts = counts.groupby(keys, dropna=False).sum()
    undefined = per_map["most_salient"].isna().groupby(keys, dropna=False).sum().rename("n_undefined")
    n_defined = counts.sum(axis=1).rename("n_defined")
    long = counts.rename_axis(columns="region").stack().rename("count").reset_index()
    long = long.merge(pd.concat([n_defined, undefined], axis=1).reset_index(), on=CLASS, how="left")
    long["fraction"] = long["count"] / long["n_defined"].where(long["n_defined"] > 0)
    return long[[*CLASS, "region", "count", "fraction", "n_defined", "n_undefined"]]


def _paired_with_gaze(per_map: pd.DataFrame) -> pd.DataFrame:
    """The non-gaze rows with ``gaze_most_salient``: the gaze's most salient region for their (model, image_id, target)."""
    pair_keys = ["model", "image_id", "target"]
    gaze = per_map.loc[per_map["method"] == GAZE_METHOD, [*pair_keys, "most_salient"]]
    duplicated = gaze.duplicated(pair_keys, keep=False)
    if duplicated.any():
        raise ValueError(f"several gaze rows for one (model, image_id, target), e.g. {gaze.loc[duplicated, pair_keys].iloc[0].tolist()}")
    maps = per_map.loc[per_map["method"] != GAZE_METHOD, [*CLASS, "image_id", "most_salient"]]
    return maps.merge(gaze.rename(columns={"most_salient": "gaze_most_salient"}), on=pair_keys, how="left")


def _agreement(per_map: pd.DataFrame) -> pd.DataFrame:
    """Agreement with gaze per (model, method, target) and per (model, method) with target ``all``."""
    paired = _paired_with_gaze(per_map)
    paired["compared"] = paired["most_salient"].notna() & paired["gaze_most_salient"].notna()
    paired["agrees"] = paired["compared"] & (paired["most_salient"] == paired["gaze_most_salient"])
    pooled = paired.assign(target=ALL_TARGETS)
    tables = [_agreement_table(rows) for rows in (pooled, paired)]
    return pd.concat(tables, ignore_index=True).sort_values(CLASS, key=_all_first, kind="stable").reset_index(drop=True)


def _all_first(column: pd.Series) -> pd.Series:
    """Sort key: ``all`` before the targets, then by name."""
    return column.astype(str).map(lambda value: (value != ALL_TARGETS, value)) if column.name == "target" else column.astype(str)


def _agreement_table(paired: pd.DataFrame) -> pd.DataFrame:
    keys = [paired[column] for column in CLASS]
    grouped = paired.groupby(keys, dropna=False)
    table = pd.DataFrame({"n": grouped.size(), "n_compared": grouped["compared"].sum(), "matches": grouped["agrees"].sum()})
    table["n_undefined"] = table["n"] - table["n_compared"]
    table["agreement"] = table["matches"] / table["n_compared"].where(table["n_compared"] > 0)
    table["chance"] = _chance_agreement(paired[paired["compared"]]).reindex(table.index)
    return table.reset_index()[[*CLASS, "agreement", "chance", "n_compared", "n_undefined", "n"]]


def _chance_agreement(compared: pd.DataFrame) -> pd.Series:
    """Per (model, method, target): sum over regions of P(map's region) * P(gaze's region)."""
    keys = [compared[column] for column in CLASS]
    map_share = compared.groupby(keys, dropna=False)["most_salient"].value_counts(normalize=True)
    gaze_share = compared.groupby(keys, dropna=False)["gaze_most_salient"].value_counts(normalize=True)
    map_share.index = map_share.index.set_names([*CLASS, "region"])
    gaze_share.index = gaze_share.index.set_names([*CLASS, "region"])
    return map_share.mul(gaze_share, fill_value=0.0).groupby(level=CLASS, dropna=False).sum()
