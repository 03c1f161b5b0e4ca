"""What ``gazebench reproduce NAME`` writes after its runs: the study's tables, figures and report.

``DIR/tables/``: the study's tables (``report.papers``, md/csv/tex); ``DIR/figures/``: its figures
(PNG and PDF): ``regions`` (each class's most salient regions, every model's maps beside the gaze)
and ``examples`` (each run's qualitative grid and overlays, as the run drew them); ``DIR/report.html``:
the runs' HTML report (the experiment's).  Running it again gives the same files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from gazebench.aggregate.regions import KEY_COLUMNS as REGION_KEYS
from gazebench.aggregate.regions import analyse_regions
from gazebench.aggregate.runs import run_region_shares
from gazebench.atomic import write_atomic
from gazebench.report.figure_panels import draw_region_distribution
from gazebench.report.figures import EXAMPLE_STEMS, FIGURES_FOLDER, FigureEntry, write_figures
from gazebench.report.html import REPORT_FILE
from gazebench.report.papers import write_paper_tables
from gazebench.studies import Study


@dataclass
class StudyOutputs:
    tables_markdown: str
    files: list[Path]


def write_study_outputs(study: Study, run_dirs: list[Path], out: Path, runs_report: Path, seed: int = 0) -> StudyOutputs:
    """Tables, figures and report.html of ``study`` from its ``run_dirs``, into ``out``.

    The runs already wrote their figures (``RUN_DIR/figures/``) and the experiment its combined
    report (``runs_report``): those files are copied, not drawn again; only the tables and the
    region figure over every model are made here.
    """
    markdown, files = write_paper_tables(study.paper, run_dirs, out / "tables", seed=seed)
    if "regions" in study.figures:
        files += write_figures(out, region_figure(study, run_dirs))
    if "examples" in study.figures:
        for run_dir in run_dirs:
            files += copy_figures(run_dir, EXAMPLE_STEMS, out / FIGURES_FOLDER, prefix=f"{run_dir.name}_")
    write_atomic(out / REPORT_FILE, runs_report.read_bytes())
    return StudyOutputs(markdown, [*files, out / REPORT_FILE])


def copy_figures(run_dir: Path, stems: tuple[str, ...], folder: Path, prefix: str) -> list[Path]:
    """The run's figure files with these stems (PNG and PDF, those it has) into ``folder``, names prefixed."""
    copied = []
    for source in sorted(path for stem in stems for path in (run_dir / FIGURES_FOLDER).glob(f"{stem}.*")):
        write_atomic(folder / f"{prefix}{source.name}", source.read_bytes())
        copied.append(folder / f"{prefix}{source.name}")
    return copied


def region_figure(study: Study, run_dirs: list[Path]) -> list[FigureEntry]:
    """Every run's maps and the gaze in one figure (the gaze once: it is the same for every model)."""
    shares = pd.concat([run_region_shares(run_dir) for run_dir in run_dirs], ignore_index=True)
    if shares.empty:
        return []
    names = [column for column in shares.columns if column not in REGION_KEYS]
    distribution = analyse_regions(shares, names).class_distribution
    caption = (
        f"{study.title}: for each class, how often each anatomical region is the most salient one (highest z-scored share of the map's mass) "
        "of each model's maps per method, beside the radiologists' gaze."
    )
    return [FigureEntry("Most salient region per class", f"{study.name}_regions", draw_region_distribution(distribution, names), caption)]
