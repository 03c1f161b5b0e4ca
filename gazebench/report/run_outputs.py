"""Every file a person reads of one run, written from its store (through ``gazebench.aggregate``).

leaderboard.csv/.md/.tex, comparisons.csv (paired tests), breakdown.csv/.md (by class and
correctness) and, when the data have anatomical regions, regions.csv, regions_by_class.csv,
regions_agreement.csv and regions.md.  Each file is written atomically; running it again
rewrites them from the same rows.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from gazebench.aggregate.breakdown import breakdown
from gazebench.aggregate.leaderboard import rank
from gazebench.aggregate.notes import attention_lines
from gazebench.aggregate.regions import KEY_COLUMNS as REGION_KEYS
from gazebench.aggregate.regions import analyse_regions
from gazebench.aggregate.runs import run_region_shares, run_rows, run_seed
from gazebench.atomic import write_atomic
from gazebench.bootstrap import BOOTSTRAP
from gazebench.report.breakdown import format_breakdown_markdown
from gazebench.report.leaderboard import format_latex, format_markdown
from gazebench.report.regions import format_markdown as format_region_markdown


def write_run_outputs(run_dir: str | Path) -> pd.DataFrame:
    """Write every readable file of the run in ``run_dir`` and return its leaderboard."""
    run_dir = Path(run_dir)
    write_region_analysis(run_dir)
    return write_leaderboard(run_dir, run_seed(run_dir))


def write_region_analysis(run_dir: Path) -> None:
    """regions.csv (per map: shares, z-scores, most salient region), regions_by_class.csv,
    regions_agreement.csv and regions.md -- when the data have anatomical regions."""
    shares = run_region_shares(run_dir)
    if shares.empty:
        return
    names = [column for column in shares.columns if column not in REGION_KEYS]
    analysis = analyse_regions(shares, names)
    write_atomic(run_dir / "regions.csv", analysis.per_map.to_csv(index=False))
    write_atomic(run_dir / "regions_by_class.csv", analysis.class_distribution.to_csv(index=False))
    write_atomic(run_dir / "regions_agreement.csv", analysis.agreement.to_csv(index=False))
    write_atomic(run_dir / "regions.md", format_region_markdown(analysis))


def write_leaderboard(run_dir: Path, seed: int) -> pd.DataFrame:
    """leaderboard.csv/.md/.tex, comparisons.csv (paired tests) and breakdown.csv/.md (by class and correctness)."""
    rows = run_rows(run_dir)
    leaderboard, table = rank(rows, seed)
    by_class = breakdown(rows, BOOTSTRAP["replicates"], seed, BOOTSTRAP["level"])
    write_atomic(run_dir / "comparisons.csv", table.to_csv(index=False))
    write_atomic(run_dir / "breakdown.csv", by_class.to_csv(index=False))
    write_atomic(run_dir / "breakdown.md", format_breakdown_markdown(by_class))
    write_atomic(run_dir / "leaderboard.tex", format_latex(leaderboard))
    write_atomic(run_dir / "leaderboard.csv", leaderboard.to_csv(index=False))
    write_atomic(run_dir / "leaderboard.md", format_markdown(leaderboard) + notes_markdown(run_dir))
    return leaderboard


def notes_markdown(run_dir: Path) -> str:
    """The run's warnings and skips (from run.log) as a Markdown list under the leaderboard, or nothing."""
    lines = attention_lines(run_dir)
    return "\n\n**Warnings and skips** (run.log):\n\n" + "".join(f"- {line}\n" for line in lines) if lines else ""


def run_summary(run_dir: str | Path) -> str:
    """What the command line prints after the leaderboard: the warnings and skips, then where the files are."""
    run_dir = Path(run_dir)
    lines = attention_lines(run_dir)
    notes = "\n".join(["", f"{len(lines)} warning/skip line(s) in run.log:", *lines]) if lines else ""
    return f"{notes}\n\nrun directory: {run_dir} (leaderboard.csv, leaderboard.md, scores/, run.log)"


def write_combined_leaderboard(run_dirs: list[Path], out: Path, seed: int, stem: str = "leaderboard") -> pd.DataFrame:
    """``out/<stem>.csv/.md/.tex``: one leaderboard over several runs (an experiment's models), paired on shared images."""
    from gazebench.aggregate.runs import combine_runs

    combined = combine_runs([Path(run_dir) for run_dir in run_dirs])
    notes = [combined.note] if combined.note else []
    board, table = rank(combined.rows, seed)
    write_atomic(out / f"{stem}.csv", board.to_csv(index=False))
    write_atomic(out / f"{stem}.md", format_markdown(board, notes))
    write_atomic(out / f"{stem}.tex", format_latex(board, notes))
    write_atomic(out / f"comparisons-{stem}.csv" if stem != "leaderboard" else out / "comparisons.csv", table.to_csv(index=False))
    return board
