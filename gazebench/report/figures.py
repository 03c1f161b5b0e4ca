"""The figures of a run: which ones it has (``run_figures``), as PNG and PDF bytes, written into ``RUN_DIR/figures/``.

Each figure is drawn from the run's aggregated tables (``report.run_tables``) or, for the figures
that show maps, from the maps the run kept of its first images (``aggregate.examples``), never from
maps in memory.  ``run_figures`` is a plain list: a new figure is one more ``append``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from matplotlib.figure import Figure

from gazebench.aggregate.examples import pick_examples, read_examples
from gazebench.aggregate.runs import run_config, run_rows
from gazebench.atomic import write_atomic
from gazebench.report.figure_panels import (
    draw_metric_distributions,
    draw_region_distribution,
    draw_significance,
)
from gazebench.report.map_figures import draw_example_grid
from gazebench.report.run_tables import RunTables, read_run_tables
from gazebench.report.sanity_figure import draw_sanity

FIGURES_FOLDER = "figures"
EXAMPLE_STEMS = ("examples", "overlays")  # the file stems of a run's maps figures
PNG_DPI = 100


def png_bytes(figure: Figure) -> bytes:
    """The figure as PNG bytes (no date in the metadata: the same tables give the same file)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=PNG_DPI)
    return buffer.getvalue()


def pdf_bytes(figure: Figure) -> bytes:
    """The figure as PDF bytes (vector; no creation date, so the same tables give the same file)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="pdf", metadata={"CreationDate": None})
    return buffer.getvalue()


@dataclass
class FigureEntry:
    """One figure of a report: a drawn ``Figure`` (PNG and PDF) or PNG bytes already rendered (PNG only)."""

    title: str
    stem: str  # file name without suffix: figures/<stem>.png and .pdf
    figure: Figure | bytes
    caption: str

    @cached_property
    def png(self) -> bytes:
        if isinstance(self.figure, bytes):
            return self.figure
        data = png_bytes(self.figure)
        self.figure.set_layout_engine("none")  # keeps the positions just laid out: the PDF does not lay them out again
        return data

    @cached_property
    def pdf(self) -> bytes | None:
        return None if isinstance(self.figure, bytes) else pdf_bytes(self.figure)


def run_figures(run_dir: str | Path, tables: RunTables | None = None, image_ids: list[str] | None = None) -> list[FigureEntry]:
    """The figures the run in ``run_dir`` has (``tables``: its tables when the caller has them already;
    ``image_ids``: the images the maps figures show, instead of the best, median and worst)."""
    tables = tables or read_run_tables(Path(run_dir))
    figures = []
    if tables.has_scores:
        figures.append(FigureEntry(
            "Metric distributions per method", "metric_distributions", draw_metric_distributions(tables.rows, tables.leaderboard),
            "Each method's values over the scored images (one box per method, one panel per metric, best mean first); the horizontal lines are "
            "the means of the reference maps that ignore the model (floors: centre bias, uniform, the image's edges) and of other "
            "radiologists' gaze (ceiling, single-reader gaze only). Each axis says whether higher or lower is better.",
        ))
        figures.append(FigureEntry(
            "Paired comparisons", "comparisons", draw_significance(tables.comparisons, tables.leaderboard),
            "Every pair of maps compared on the images both were scored on (comparisons.csv): a coloured cell says that the row's method is "
            "significantly better (blue) or worse (orange) than the column's, with the Holm-adjusted p value; blank: not significant at 5%, or no test.",
        ))
    if tables.regions is not None:
        figures.append(FigureEntry(
            "Most salient region per class", "regions", draw_region_distribution(tables.regions.class_distribution, tables.regions.region_names),
            "For each class, how often each anatomical region is the most salient one (highest share of the map's mass, z-scored against the "
            "method's other maps) of each method's maps, beside the same for the radiologists' gaze (regions_by_class.csv).",
        ))
    figures += example_figures(Path(run_dir), tables.rows if tables.has_scores else None, image_ids=image_ids)
    if tables.sanity is not None:
        figures.append(FigureEntry(
            "Sanity check: cascading randomisation", "sanity", draw_sanity(tables.sanity),
            "Similarity of each method's maps to the trained model's as the layers are re-initialised from the output down (sanity.csv); "
            "maps that stay similar once every layer is random do not depend on what the model learnt.",
        ))
    return figures


def example_figures(run_dir: Path, rows=None, image_ids: list[str] | None = None) -> list[FigureEntry]:
    """The run's qualitative grid and overlays (best, median, worst of its first images, whose maps it kept; or ``image_ids``); none without kept maps."""
    examples = read_examples(run_dir)
    picks = pick_examples(run_rows(run_dir) if rows is None else rows, examples, image_ids=image_ids) if not examples.empty or image_ids else []
    if not picks:
        return []
    model = run_config(run_dir).get("model", {}).get("name", run_dir.name)
    how = "the chosen images" if image_ids else f"the best, median and worst of the run's first {len(examples.radiograph)} images by mean {picks[0].metric} over the methods"
    return [
        FigureEntry(f"{model}: maps beside the radiograph and the gaze", EXAMPLE_STEMS[0], draw_example_grid(examples, picks),
                    f"Model {model}, {how}: the radiograph, each method's map for the class it explains, the gaze density; each map divided by its maximum."),
        FigureEntry(f"{model}: maps over the radiograph", EXAMPLE_STEMS[1], draw_example_grid(examples, picks, overlay=True),
                    "The same maps overlaid on the radiograph (the same grid, orientation and letterbox), each map's opacity growing with its value."),
    ]  # fmt: skip


def write_figures(run_dir: Path, figures: list[FigureEntry]) -> list[Path]:
    """``RUN_DIR/figures/<stem>.png`` and ``.pdf`` of each figure, written atomically; returns the paths."""
    folder = Path(run_dir) / FIGURES_FOLDER
    for leftover in folder.glob(".*.tmp") if folder.is_dir() else []:  # a killed write's temporary file
        leftover.unlink(missing_ok=True)
    written = []
    for entry in figures:
        for suffix, data in (("png", entry.png), ("pdf", entry.pdf)):
            if data is not None:
                write_atomic(folder / f"{entry.stem}.{suffix}", data)
                written.append(folder / f"{entry.stem}.{suffix}")
    return written
