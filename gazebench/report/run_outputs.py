"""Every file a person reads of one run, written from its store (through ``gazebench.aggregate``).

leaderboard.csv/.md/.tex, comparisons.csv (paired tests), breakdown.csv/.md (by class and
correctness), when the data have anatomical regions regions.csv, regions_by_class.csv,
regions_agreement.csv and regions.md, the figures (figures/*.png and .pdf) and, unless turned
off, report.html.  Each file is written atomically; running it again rewrites them from the same rows.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from gazebench.aggregate.leaderboard import rank
from gazebench.aggregate.notes import attention_lines
from gazebench.aggregate.regions import RegionAnalysis
from gazebench.atomic import write_atomic
from gazebench.report.breakdown import format_breakdown_markdown
from gazebench.report.figures import run_figures, write_figures
from gazebench.report.html import REPORT_FILE, RunReport, render_report
from gazebench.report.leaderboard import format_latex, format_markdown
from gazebench.report.regions import format_markdown as format_region_markdown
from gazebench.report.run_tables import RunTables, compute_run_tables


def write_run_outputs(run_dir: str | Path, report: bool = True) -> pd.DataFrame:
    """Write every readable file of the run in ``run_dir`` (``report``: report.html too) and return its leaderboard."""
    tables = compute_run_tables(Path(run_dir))
    if tables.regions is not None:
        write_region_analysis(tables.run_dir, tables.regions)
    write_leaderboard(tables)
    figures = run_figures(tables.run_dir, tables)
    write_figures(tables.run_dir, figures)
    if report:
        write_atomic(tables.run_dir / REPORT_FILE, render_report([RunReport(tables, figures)]))
    return tables.leaderboard


def write_region_analysis(run_dir: Path, analysis: RegionAnalysis) -> None:
    """regions.csv (per map: shares, z-scores, most salient region), regions_by_class.csv,
    regions_agreement.csv and regions.md."""
    write_atomic(run_dir / "regions.csv", analysis.per_map.to_csv(index=False))
    write_atomic(run_dir / "regions_by_class.csv", analysis.class_distribution.to_csv(index=False))
    write_atomic(run_dir / "regions_agreement.csv", analysis.agreement.to_csv(index=False))
    write_atomic(run_dir / "regions.md", format_region_markdown(analysis))


def write_leaderboard(tables: RunTables) -> None:
    """leaderboard.csv/.md/.tex, comparisons.csv (paired tests) and breakdown.csv/.md (by class and correctness)."""
    run_dir, leaderboard = tables.run_dir, tables.leaderboard
    write_atomic(run_dir / "comparisons.csv", tables.comparisons.to_csv(index=False))
    write_atomic(run_dir / "breakdown.csv", tables.breakdown.to_csv(index=False))
    write_atomic(run_dir / "breakdown.md", format_breakdown_markdown(tables.breakdown))
    write_atomic(run_dir / "leaderboard.tex", format_latex(leaderboard))
    write_atomic(run_dir / "leaderboard.csv", leaderboard.to_csv(index=False))
    write_atomic(run_dir / "leaderboard.md", format_markdown(leaderboard) + notes_markdown(run_dir))


def notes_markdown(run_dir: Path) -> str:
    """The run's warnings and skips (from run.log) as a Markdown list under the leaderboard, or nothing."""
    lines = attention_lines(run_dir)
    return "\n\n**Warnings and skips** (run.log):\n\n" + "".join(f"- {line}\n" for line in lines) if lines else ""


def run_summary(run_dir: str | Path, report: bool = True) -> str:
    """What the command line prints after the leaderboard: the warnings and skips, then where the files are (``report``: report.html was written)."""
    run_dir = Path(run_dir)
    lines = attention_lines(run_dir)
    notes = "\n".join(["", f"{len(lines)} warning/skip line(s) in run.log:", *lines]) if lines else ""
    report_line = f"\nreport: {run_dir / REPORT_FILE} (open it in a browser; no network needed)" if report else ""
    return f"{notes}\n\nrun directory: {run_dir} (leaderboard.csv, leaderboard.md, figures/, scores/, run.log){report_line}"


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
