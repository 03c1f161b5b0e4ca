"""One run directory's aggregated tables, as the figures and the HTML report read them.

The leaderboard, comparisons and breakdown come from the CSVs the run wrote when they are at
least as new as its newest score shard (a finished run), and are otherwise computed again in
memory through ``gazebench.aggregate`` (a run killed before its outputs, or grown since); the
region analysis is recomputed from the stored shares (fast). A folder of ``gazebench sanity``
(``sanity.csv``), or a run directory holding one in ``sanity/``, adds the sanity summary.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from gazebench.aggregate.breakdown import breakdown
from gazebench.aggregate.leaderboard import rank
from gazebench.aggregate.regions import KEY_COLUMNS as REGION_KEYS
from gazebench.aggregate.regions import RegionAnalysis, analyse_regions
from gazebench.aggregate.runs import run_config, run_region_shares, run_rows, run_seed
from gazebench.bootstrap import BOOTSTRAP
from gazebench.errors import UserError

TABLE_FILES = ("leaderboard.csv", "comparisons.csv", "breakdown.csv")
SANITY_FILES = ("sanity.csv", "sanity/sanity.csv")  # `gazebench sanity --out DIR` writes DIR/sanity.csv


@dataclass
class RunTables:
    """What a report shows of one run directory (empty frames where the folder has no scores)."""

    run_dir: Path
    config: dict
    rows: pd.DataFrame  # the score rows
    leaderboard: pd.DataFrame
    comparisons: pd.DataFrame
    breakdown: pd.DataFrame
    regions: RegionAnalysis | None  # None: the data have no anatomical regions
    sanity: pd.DataFrame | None  # sanity.csv, when the folder has one

    @property
    def has_scores(self) -> bool:
        return not self.rows.empty


def compute_run_tables(run_dir: Path) -> RunTables:
    """Every table of the run, computed from its store (what ``gazebench run`` writes)."""
    run_dir = Path(run_dir)
    rows = run_rows(run_dir)
    leaderboard, comparisons, by_class = _ranked(rows, run_seed(run_dir))
    return RunTables(run_dir, run_config(run_dir), rows, leaderboard, comparisons, by_class, region_analysis(run_dir), sanity_summary(run_dir))


def read_run_tables(run_dir: Path) -> RunTables:
    """The run's tables from its CSVs when they are up to date, else computed; refuses a folder that is not a run (UserError)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir} is not a folder; give the run directory of `gazebench run` (its --out)")
    rows, sanity = run_rows(run_dir), sanity_summary(run_dir)
    if rows.empty and sanity is None:
        raise UserError(f"{run_dir} is not a gazebench run directory (no scores/*.parquet, no sanity.csv); give the --out of `gazebench run` or `gazebench sanity`")
    if _written_after_scores(run_dir):
        leaderboard, comparisons, by_class = (pd.read_csv(run_dir / name) for name in TABLE_FILES)
    else:
        leaderboard, comparisons, by_class = _ranked(rows, run_seed(run_dir))
    return RunTables(run_dir, run_config(run_dir), rows, leaderboard, comparisons, by_class, region_analysis(run_dir), sanity)


def _ranked(rows: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Leaderboard, paired comparisons and breakdown of score rows, with the run settings; empty frames for no rows."""
    if rows.empty:
        return pd.DataFrame(), pd.DataFrame(), pd.DataFrame()
    leaderboard, comparisons = rank(rows, seed)
    return leaderboard, comparisons, breakdown(rows, BOOTSTRAP["replicates"], seed, BOOTSTRAP["level"])


def _written_after_scores(run_dir: Path) -> bool:
    """Whether every table CSV exists and is at least as new as the newest score shard."""
    tables = [run_dir / name for name in TABLE_FILES]
    if not all(path.is_file() for path in tables):
        return False
    newest_shard = max((path.stat().st_mtime for path in (run_dir / "scores").glob("*.parquet")), default=0.0)
    return min(path.stat().st_mtime for path in tables) >= newest_shard


def region_analysis(run_dir: Path) -> RegionAnalysis | None:
    """The most-salient-region analysis of the run's stored region shares; None when its data have no regions."""
    shares = run_region_shares(run_dir)
    if shares.empty:
        return None
    return analyse_regions(shares, [column for column in shares.columns if column not in REGION_KEYS])


def sanity_summary(run_dir: Path) -> pd.DataFrame | None:
    """sanity.csv (``gazebench sanity``'s summary) in the folder or its ``sanity/``; None when there is none."""
    for name in SANITY_FILES:
        if (Path(run_dir) / name).is_file():
            return pd.read_csv(Path(run_dir) / name)
    return None
