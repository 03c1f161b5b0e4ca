"""What every study's tables share: the runs they read, the cells they print, the files they write.

A study module (``report/papers/<study>.py``) turns run directories into ``PaperTable`` s; this
module reads the runs (``read_runs``: their score rows and what ``config.yaml`` says about the model,
checkpoint and data), formats intervals the same way everywhere, refuses a missing ingredient in one
line that names the command making it (``missing``), and writes each table as Markdown, CSV and
LaTeX (booktabs) with the runs that produced it (``write_tables``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from gazebench.aggregate.classification import MEAN, auroc_table
from gazebench.aggregate.runs import run_config, run_predictions, run_rows
from gazebench.atomic import write_atomic
from gazebench.bootstrap import BOOTSTRAP
from gazebench.errors import UserError
from gazebench.resources import resource


@dataclass(frozen=True)
class RunInfo:
    """One run directory as a table sees it."""

    path: Path
    model: str
    checkpoint: str
    sha256: str
    data: str
    split: str
    images: int | None
    methods: tuple[str, ...]
    metrics: tuple[str, ...]
    rows: pd.DataFrame = field(compare=False, repr=False)
    predictions: pd.DataFrame = field(default_factory=pd.DataFrame, compare=False, repr=False)  # empty for runs made before they were stored

    def describe(self) -> str:
        """``runs/x: model unet_gaze (checkpoint ..., sha256 0a1b2c3d4e5f), data synth test (62 images)``."""
        images = f" ({self.images} images)" if self.images is not None else ""
        return f"{self.path}: model {self.model} (checkpoint {self.checkpoint}, sha256 {self.sha256[:12]}), data {self.data} {self.split}{images}"


@dataclass
class PaperTable:
    """One table of a study: display cells, the numbers behind them, and the lines printed under it."""

    name: str  # file stem, e.g. "shamsul2023_localisation"
    title: str
    columns: list[str]
    cells: list[list[str]]
    data: pd.DataFrame  # the numbers (written as the CSV)
    notes: list[str] = field(default_factory=list)


def read_runs(run_dirs: list[Path]) -> list[RunInfo]:
    """Each run directory's rows and provenance; a directory without score rows is refused in one line."""
    runs = []
    for run_dir in map(Path, run_dirs):
        rows = run_rows(run_dir) if run_dir.is_dir() else pd.DataFrame()
        if rows.empty:
            raise UserError(f"{run_dir} holds no score rows; pass the directory of a finished `gazebench run`")
        config = run_config(run_dir)
        model, data = config.get("model", {}), config.get("data", {})
        runs.append(
            RunInfo(
                path=run_dir,
                model=str(model.get("name") or rows["model"].iloc[0]),
                checkpoint=str(model.get("checkpoint", "?")),
                sha256=str(model.get("checkpoint_sha256") or rows["checkpoint"].iloc[0]),
                data=str(data.get("name") or rows["dataset"].iloc[0]),
                split=str(data.get("split") or rows["split"].iloc[0]),
                images=data.get("images"),
                methods=tuple(sorted(rows["method"].unique())),
                metrics=tuple(sorted(rows["metric"].unique())),
                rows=rows,
                predictions=run_predictions(run_dir),
            )
        )
    return runs


def reported(study: str) -> dict:
    """The study's reported numbers (``resources/reported/reported.yaml``)."""
    return yaml.safe_load(resource("reported", "reported.yaml").read_text())[study]


def missing(paper: str, what: str, command: str) -> UserError:
    """The one-line refusal of a table whose ingredient no run holds."""
    return UserError(f"tables --paper {paper} needs {what}; make it with: {command}")


def runs_of(paper: str, runs: list[RunInfo], model: str, command: str, what: str | None = None) -> RunInfo:
    """The one run of ``model`` among ``runs``; refused (naming ``command``) when there is none or several."""
    found = [run for run in runs if run.model == model]
    if not found:
        raise missing(paper, what or f"a run of model {model} (the runs given hold {', '.join(sorted({run.model for run in runs}))})", command)
    if len(found) > 1:
        raise UserError(f"tables --paper {paper} takes one run of model {model}; got {len(found)}: {', '.join(str(run.path) for run in found)}")
    return found[0]


def auroc_of(paper: str, run: RunInfo, n_boot: int, seed: int) -> pd.DataFrame:
    """The run's AUROC table (``aggregate.classification.auroc_table``); a run without stored predictions is refused."""
    if run.predictions.empty:
        again = f"the `gazebench run --model {run.model} --out {run.path} ...` that made it, again (a finished run only adds them)"
        raise missing(paper, f"the predictions of {run.path} (it was made before runs stored them)", again)
    return auroc_table(run.predictions, n_boot, seed).set_index("class")


@dataclass(frozen=True)
class AurocColumn:
    """One model's AUROC column of a study's table: its run, its label, the paper's numbers for it (class -> value or {value, ci95})."""

    label: str
    run: RunInfo
    paper: dict = field(default_factory=dict)


def auroc_side_by_side(name: str, title: str, columns: list[AurocColumn], n_boot: int, seed: int, notes: list[str], paper_classes: bool = True) -> PaperTable:
    """Rows: the models' classes (then, with ``paper_classes``, classes only the paper reports), then the mean.

    Per model: our AUROC [95% CI] and, when the paper reports any number for it, the paper's
    beside it; last, the images (positives) of the first model.  The CSV holds the numbers.
    """
    aurocs = [auroc_of(name, column.run, n_boot, seed) for column in columns]
    classes = list(dict.fromkeys(c for table in aurocs for c in table.index if c != MEAN))
    if paper_classes:
        classes += [c for column in columns for c in column.paper if c != MEAN and c not in classes]
    header, cells, records = ["class"], [], []
    for column in columns:
        header += [f"{column.label} AUROC [95% CI]"] + ([f"{column.label} (paper)"] if column.paper else [])
    header.append("n (positives)")
    for cls in [*classes, MEAN]:
        row, record = [cls], {"class": cls}
        for column, table in zip(columns, aurocs):
            ours = table.loc[cls] if cls in table.index else pd.Series({"auroc": math.nan, "ci_low": math.nan, "ci_high": math.nan})
            theirs = paper_value(column.paper.get(cls))
            row.append(interval(ours["auroc"], ours["ci_low"], ours["ci_high"]) if cls in table.index else "not in these data")
            if column.paper:
                row.append(interval(*theirs))
            record |= {f"{column.label} {stat}": ours[stat] for stat in ("auroc", "ci_low", "ci_high")}
            record |= {f"{column.label} paper{suffix}": value for suffix, value in zip(("", " ci_low", " ci_high"), theirs)}
        first = aurocs[0].loc[cls] if cls in aurocs[0].index else None
        row.append("-" if first is None else f"{int(first['n'])}" + ("" if cls == MEAN else f" ({int(first['n_positive'])})"))
        cells.append(row)
        records.append(record)
    notes = notes + [f"Ours: one-vs-rest AUROC of each run's stored predictions with patient-bootstrap {BOOTSTRAP['level']:.0%} CIs ({n_boot} replicates); mean over the classes; '-': not reported."]
    return PaperTable(f"{name}_auroc", title, header, cells, pd.DataFrame(records), notes)


def paper_value(reported_value) -> tuple[float, float, float]:
    """(value, ci_low, ci_high) of a reported number: a float, or ``{value, ci95: [low, high]}``; NaN where absent."""
    if reported_value is None:
        return math.nan, math.nan, math.nan
    if isinstance(reported_value, dict):
        low, high = reported_value.get("ci95", (math.nan, math.nan))
        return float(reported_value["value"]), float(low), float(high)
    return float(reported_value), math.nan, math.nan


def interval(mean: float, low: float, high: float, digits: int = 3) -> str:
    """``0.412 [0.371, 0.455]``; ``-`` when there is no value, the mean alone when there is no interval."""
    if mean is None or math.isnan(mean):
        return "-"
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def percent(change: float | None) -> str:
    """``-90%`` / ``+216%``; ``-`` when undefined."""
    if change is None or math.isnan(change):
        return "-"
    return f"{100 * change:+.0f}%"


def markdown(table: PaperTable, runs: list[RunInfo]) -> str:
    lines = [f"## {table.title}", "", "| " + " | ".join(table.columns) + " |", "|" + "|".join("---" for _ in table.columns) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in table.cells]
    lines += [""] + [f"{note}  " for note in table.notes] + ([""] if table.notes else [])
    lines += ["Made by gazebench from:", ""] + [f"- {run.describe()}" for run in runs] + [""]
    return "\n".join(lines)


def latex(table: PaperTable, runs: list[RunInfo]) -> str:
    """A booktabs table; provenance and notes as comments and caption."""
    spec = "l" * len(table.columns)
    lines = [f"% made by gazebench from: {run.describe()}" for run in runs]
    lines += [
        r"\begin{table}[t]",
        r"\centering",
        f"\\caption{{{escape(table.title)}}}",
        f"\\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        " & ".join(escape(column) for column in table.columns) + r" \\",
        r"\midrule",
    ]
    lines += [" & ".join(escape(cell) for cell in row) + r" \\" for row in table.cells]
    lines += [r"\bottomrule", r"\end{tabular}"]
    lines += [f"% {note}" for note in table.notes]
    lines += [r"\end{table}", ""]
    return "\n".join(lines)


LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def escape(text: str) -> str:
    """LaTeX-safe text (each special character replaced once; ``[`` and ``]`` are fine in tabular cells)."""
    return "".join(LATEX_SPECIAL.get(char, char) for char in text)


def write_tables(tables: list[PaperTable], runs: list[RunInfo], out: Path) -> list[Path]:
    """``<name>.md``, ``<name>.csv`` and ``<name>.tex`` per table in ``out``, each written atomically."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for table in tables:
        for suffix, text in ((".md", markdown(table, runs)), (".csv", table.data.to_csv(index=False)), (".tex", latex(table, runs))):
            path = out / f"{table.name}{suffix}"
            write_atomic(path, text)
            written.append(path)
    return written
