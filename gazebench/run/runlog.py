"""run.log: what a reader of a run's numbers must know, rebuilt from the run directory.

It is rewritten whole at the end of every invocation from the stored notes (what the data left
out, unreadable images, method warnings) and the stored score rows, so a run killed and resumed
twice, or a finished run rerun, gets the same log as one uninterrupted run.  NaN values are
sorted by cause: where the centre-bias floor is NaN too, the image's data cannot define the
metric (no localisation mask for a Normal image, no fixations): a note, by design; where only
the method's map is NaN, the map is degenerate (constant, e.g. an all-zero Grad-CAM): a warning,
first in the file.
"""

from __future__ import annotations

import pandas as pd

import gazebench
from gazebench.registry import METRICS
from gazebench.run.store import RunStore

MAP_KEYS = ["image_id", "target", "reader"]  # one map per key within a method
STRUCTURAL = {"uniform"}  # reference maps whose NaNs are structural (a constant map), never reported
NEED_CAUSE = {
    "mask": "no localisation mask for the explained class (by design: e.g. Normal images)",
    "fixations": "no fixations on the image",
    "negatives": "no fixations on the other images",
    "density": "no gaze density",
}


def write_run_log(store: RunStore, settings: list[str]) -> list[str]:
    """Rebuild run.log from the directory; ``settings`` are lines that describe this run's set-up. Returns the lines."""
    notes = store.read_notes()
    lines = [f"# run.log of {store.out} (gazebench {gazebench.__version__}): rebuilt from the run directory by every invocation"]
    rows = store.read_scores()
    lines += degenerate_map_warnings(rows)
    lines += method_warnings(notes)
    lines += skip_lines(store, notes)
    lines += undefined_by_data(rows)
    lines += settings
    store.write_log(lines)
    return lines


def method_warnings(notes: list[dict]) -> list[str]:
    seen: dict[str, None] = {}
    for note in notes:
        for message in note.get("warnings", []):
            seen.setdefault(message)
    return list(seen)


def skip_lines(store: RunStore, notes: list[dict]) -> list[str]:
    lines = [f"skipped: {count} {reason}" for reason, count in store.skip_counts().items() if count]
    for note in notes:
        for item in note.get("unreadable", []):
            lines.append(f"skipped: unreadable image {item['image_id']}: {item['reason']}")
    return lines


def _nan_table(rows: pd.DataFrame) -> pd.DataFrame:
    """The NaN rows of the methods (not the structural floors), with whether the centre-bias floor is NaN at the same place."""
    if rows.empty:
        return rows
    keys = [*MAP_KEYS, "metric"]
    floor = rows[rows.method == "centre_bias"].set_index(keys).value.isna().rename("floor_nan")
    nan = rows[rows.value.isna() & ~rows.method.isin(STRUCTURAL | {"centre_bias"})]
    return nan.join(floor, on=keys).assign(floor_nan=lambda table: table.floor_nan.fillna(False).astype(bool))


def degenerate_map_warnings(rows: pd.DataFrame) -> list[str]:
    """One warning per method whose own maps make metrics NaN where the data define them.

    A map NaN on every metric the data define for its image is constant (all zero included);
    other such NaNs are counted per metric.
    """
    nan = _nan_table(rows)
    if nan.empty:
        return []
    own = nan[~nan.floor_nan]
    floor = rows[rows.method == "centre_bias"]
    defined_per_map = floor[floor.value.notna()].groupby(MAP_KEYS).metric.nunique()
    lines = []
    for method, group in own.groupby("method", sort=True):
        per_map = group.groupby(MAP_KEYS).metric.nunique()
        constant = per_map[per_map == defined_per_map.reindex(per_map.index)]
        if len(constant):
            images = ", ".join(sorted(map(str, constant.index.get_level_values("image_id").unique()))[:5])
            lines.append(f"warning: {method}: {len(constant)} map(s) constant (e.g. all zero), every metric NaN; left out of the leaderboard (e.g. {images})")
        partial = group[~group.set_index(MAP_KEYS).index.isin(constant.index)]
        for metric, cells in partial.groupby("metric", sort=True):
            lines.append(f"warning: {method}/{metric}: {len(cells)} NaN value(s) where the data define the metric (degenerate map); left out of the leaderboard")
    return lines


def undefined_by_data(rows: pd.DataFrame) -> list[str]:
    """One note per metric the data leave undefined for some images (NaN for the centre-bias floor too)."""
    if rows.empty:
        return []
    floor = rows[(rows.method == "centre_bias") & rows.value.isna()]
    lines = []
    for metric, group in floor.groupby("metric", sort=True):
        needs = METRICS.get(metric).needs if metric in METRICS.names() else ()
        causes = " or ".join(NEED_CAUSE[need] for need in needs if need in NEED_CAUSE) or "the data do not define it"
        lines.append(f"note: {metric} is undefined for {group.image_id.nunique()} image(s), for every method: {causes}")
    return lines
