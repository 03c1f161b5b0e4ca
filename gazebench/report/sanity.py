"""Sanity check, the files: sanity.csv, sanity.md (tables and verdicts), sanity.png and config.yaml."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pandas as pd
import yaml

from gazebench.aggregate.sanity import MEASURES, SanityResult, group_label
from gazebench.atomic import write_atomic
from gazebench.report.sanity_figure import sanity_figure_png


def format_markdown(result: SanityResult) -> str:
    """sanity.md: method x step tables of mean Spearman and SSIM [95% CI], the steps' layers, the verdicts."""
    lines = ["# Sanity check: cascading model-parameter randomisation", ""]
    for measure in MEASURES:
        lines += [f"## Mean {measure} similarity to the trained model's maps [95% CI]", "", *_measure_table(result.summary, measure), ""]
    lines += ["## Steps (step k: groups 1..k re-initialised, output layer first; every name in sanity.csv)", "", "step | layers re-initialised at this step", "---|---", "0 | none (trained model)"]
    lines += [f"{step} | {group_label(group)}" for step, group in enumerate(result.groups, start=1)]  # full names here
    if result.unused_layers:
        lines += ["", f"Left as trained: {len(result.unused_layers)} parameterised module(s) that the classifier's forward never calls (e.g. a gaze decoder; names in config.yaml)."]
    lines += ["", f"## Verdicts (fails: mean Spearman at full randomisation > {result.threshold:g})", ""]
    lines += ["The threshold is a heuristic (the paper judges the curves by eye): read it with the table above.", ""]
    lines += [f"- {line}" for line in result.verdicts.values()]
    lines += ["", *nan_lines(result.summary), *(f"- warning: {message}" for message in result.warnings)]
    return "\n".join(lines).rstrip() + "\n"


def _measure_table(summary: pd.DataFrame, measure: str) -> list[str]:
    cells = summary[summary.measure == measure]
    steps = sorted(cells.step.unique())
    rows = [" | ".join(["method", *(str(step) for step in steps)]), " | ".join(["---"] * (len(steps) + 1))]
    for method, group in cells.groupby("method", sort=False):
        by_step = group.set_index("step")
        rows.append(" | ".join([method, *(_cell(by_step.loc[step]) for step in steps)]))
    return rows


def _cell(row) -> str:
    if math.isnan(row["mean"]):
        return "NaN"
    return f"{row['mean']:.2f} [{row['ci_low']:.2f}, {row['ci_high']:.2f}]"


def nan_lines(summary: pd.DataFrame) -> list[str]:
    """One line per (method, step, measure) with NaN similarities (constant or non-finite maps)."""
    return [f"- NaN: {row.method} step {row.step} {row.measure}: {row.n_nan} of {row.n + row.n_nan} pairs (constant or non-finite map)" for row in summary[summary.n_nan > 0].itertuples()]


def write_outputs(result: SanityResult, out: Path, config: dict) -> None:
    """sanity.csv, sanity.md, sanity.png and config.yaml, each written atomically."""
    png = sanity_figure_png(result.summary)
    buffer = io.StringIO()
    result.summary.to_csv(buffer, index=False)
    write_atomic(out / "sanity.csv", buffer.getvalue())
    write_atomic(out / "sanity.md", format_markdown(result))
    write_atomic(out / "sanity.png", png)
    write_atomic(out / "config.yaml", yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
