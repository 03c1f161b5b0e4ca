"""Reading run directories back: the store's rows of one run or of several, and the run's seed.

Aggregation reads only what a run stored (``gazebench.run.store``): ``scores/*.parquet``,
``regions/*.parquet``, ``predictions/*.parquet`` and ``config.yaml``.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import pandas as pd

from gazebench.aggregate.statistics import UNIT_COLUMNS
from gazebench.errors import UserError
from gazebench.run.store import RunStore


def run_rows(run_dir: Path) -> pd.DataFrame:
    """The score rows of one run (empty when it has none)."""
    return RunStore(run_dir).read_scores()


def run_region_shares(run_dir: Path) -> pd.DataFrame:
    """The region-share rows of one run (empty when its data have no regions)."""
    return RunStore(run_dir).read_region_shares()


def run_predictions(run_dir: Path) -> pd.DataFrame:
    """Every scored image's probability and label per model output (empty for a run made before predictions were stored)."""
    return RunStore(run_dir).read_predictions()


def run_config(run_dir: Path) -> dict:
    """The run's config.yaml (model, checkpoint, data, methods, ...); empty when there is none."""
    return RunStore(run_dir).read_config() or {}


def run_seed(run_dir: Path, default: int = 0) -> int:
    """The bootstrap seed a run recorded in config.yaml (``default`` when there is none)."""
    return run_config(run_dir).get("bootstrap", {}).get("seed", default)


class CombinedRuns(NamedTuple):
    rows: pd.DataFrame  # the score rows of every run, on the units all runs scored
    note: str | None  # one line saying how many units each run kept and dropped; None when all scored the same


def combine_runs(run_dirs: list[Path]) -> CombinedRuns:
    """The score rows of several run directories, for one leaderboard over the same images.

    Refuses (UserError, one line) a directory without scores, runs with different scoring
    protocols or different datasets/splits (their numbers are not comparable), and two runs that
    hold the same (model, method) rows (rename the model of one of them).  Runs that scored
    different units (``image_id, target, reader``, e.g. ``--limit 16`` against 62 images) are
    compared on the units every run scored: the other rows are dropped and ``note`` counts them per
    run; runs that share no unit are refused.
    """
    frames = []
    resolved = [Path(run_dir).resolve() for run_dir in run_dirs]
    if len(set(resolved)) < len(resolved):
        twice = next(str(run_dir) for run_dir, path in zip(run_dirs, resolved) if resolved.count(path) > 1)
        raise UserError(f"run directory {twice} is given twice; give each run once")
    for run_dir in map(Path, run_dirs):
        rows = run_rows(run_dir)
        if rows.empty:
            raise UserError(f"{run_dir} holds no score rows (scores/*.parquet); give a gazebench run directory")
        frames.append(rows.assign(_run=str(run_dir)))
    combined = pd.concat(frames, ignore_index=True)
    for columns, what in ((["protocol"], "scoring protocols"), (["dataset", "split"], "datasets or splits")):
        _refuse_mixed(combined, columns, what)
    owners = combined.groupby(["model", "method"])["_run"].unique()
    shared = owners[owners.map(len) > 1]
    if len(shared):
        (model, method), runs = shared.index[0], shared.iloc[0]
        raise UserError(f"runs {', '.join(runs)} all hold model {model!r} with method {method!r}; combine runs of different models or methods")
    combined, note = _on_shared_units(combined)
    return CombinedRuns(combined.drop(columns="_run").reset_index(drop=True), note)


def _on_shared_units(combined: pd.DataFrame) -> tuple[pd.DataFrame, str | None]:
    """The rows of the units (image, target, reader) every run scored, and the line that counts what each run dropped."""
    units = pd.MultiIndex.from_frame(combined[UNIT_COLUMNS].astype(str))
    per_run = {run: set(units[combined["_run"] == run]) for run in combined["_run"].unique()}
    common = set.intersection(*per_run.values())
    if all(len(run_units) == len(common) for run_units in per_run.values()):
        return combined, None
    counts = "; ".join(f"{run}: {len(run_units)}" for run, run_units in per_run.items())
    if not common:
        raise UserError(f"the runs share no scored image (units image, target, reader per run: {counts}); run the models on the same split and images")
    kept = "; ".join(f"{run} keeps {len(common)} of {len(run_units)}" for run, run_units in per_run.items())
    note = f"the runs scored different images: compared on the {len(common)} units (image, target, reader) all {len(per_run)} runs scored ({kept})"
    return combined[units.isin(common)], note


def _refuse_mixed(combined: pd.DataFrame, columns: list[str], what: str) -> None:
    values = combined[columns].astype(str).agg(" ".join, axis=1)
    if values.nunique() > 1:
        first = values.groupby(combined["_run"]).first()
        listing = "; ".join(f"{run}: {value}" for run, value in first.items())
        raise UserError(f"the runs use different {what} and cannot share a leaderboard ({listing})")
