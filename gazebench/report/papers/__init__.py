"""The seed studies' tables from run directories: ``gazebench tables --paper NAME RUN_DIR...``.

One module per study (``karargyris2021``, ``kim2022``, ``mimic2023``, ``shamsul2023``, ``watanabe2022``), each with ``tables(runs, n_boot, seed)``
returning ``base.PaperTable`` s laid out as in the paper, with the paper's numbers beside ours where
it reports them.  ``paper_tables`` reads the runs and builds the tables; ``write_paper_tables``
also writes them as Markdown, CSV and LaTeX (booktabs) with the runs, checkpoints and data that
produced them.  A table whose ingredient no run holds is refused in one line naming the command that
makes it.
"""

from __future__ import annotations

from pathlib import Path

from gazebench.bootstrap import BOOTSTRAP
from gazebench.errors import UserError
from gazebench.report.papers import karargyris2021, kim2022, mimic2023, shamsul2023, watanabe2022
from gazebench.report.papers.base import PaperTable, RunInfo, markdown, read_runs, write_tables

PAPERS = {module.NAME: module for module in (karargyris2021, kim2022, mimic2023, shamsul2023, watanabe2022)}


def paper_tables(paper: str, run_dirs: list[Path], n_boot: int = BOOTSTRAP["replicates"], seed: int = 0) -> tuple[list[PaperTable], list[RunInfo]]:
    """The study's tables from ``run_dirs``, and the runs they were made from."""
    if paper not in PAPERS:
        raise UserError(f"unknown paper {paper!r}; tables exist for: {', '.join(sorted(PAPERS))}")
    if not run_dirs:
        raise UserError(f"tables --paper {paper} needs at least one run directory")
    runs = read_runs(list(run_dirs))
    return PAPERS[paper].tables(runs, n_boot=n_boot, seed=seed), runs


def write_paper_tables(paper: str, run_dirs: list[Path], out: Path, n_boot: int = BOOTSTRAP["replicates"], seed: int = 0) -> tuple[str, list[Path]]:
    """Writes the study's tables into ``out`` (md, csv, tex each); returns their Markdown and the files."""
    tables, runs = paper_tables(paper, run_dirs, n_boot, seed)
    return "\n".join(markdown(table, runs) for table in tables), write_tables(tables, runs, Path(out))
