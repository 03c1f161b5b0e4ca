"""regions.md: the region analysis for people (agreement with gaze, most salient region per class)."""

from __future__ import annotations

import pandas as pd

from gazebench.aggregate.regions import CLASS, GAZE_METHOD, RegionAnalysis


def format_markdown(analysis: RegionAnalysis) -> str:
    """Readable tables: agreement with gaze per method first, then the most salient region per class in %."""
    return "\n".join([
        "## Most salient region: agreement with gaze",
        "",
        _agreement_markdown(analysis.agreement),
        "## Most salient region per class (% of maps with one)",
        "",
        _distribution_markdown(analysis.class_distribution, analysis.region_names),
    ])


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines) + "\n"


def _percent(value: float) -> str:
    return "n/a" if pd.isna(value) else f"{100 * value:.1f}%"


def _agreement_markdown(agreement: pd.DataFrame) -> str:
    header = ["model", "method", "target", "agreement", "chance", "n compared", "n undefined"]
    rows = [
        [str(row.model), str(row.method), str(row.target), _percent(row.agreement), _percent(row.chance), str(row.n_compared), str(row.n_undefined)]
        for row in agreement.itertuples(index=False)
    ]
    return _markdown_table(header, rows)


def _distribution_markdown(distribution: pd.DataFrame, region_names: list[str]) -> str:
    """One row per (model, method, target), gaze first; one column per region in %."""
    fractions = distribution.set_index([*CLASS, "region"])["fraction"].unstack("region")
    counts = distribution.groupby(CLASS, dropna=False, sort=False)[["n_defined", "n_undefined"]].first()
    table = counts.join(fractions.reindex(columns=list(region_names))).reset_index()
    table = table.sort_values(["model", "method", "target"], key=_gaze_first, kind="stable")
    header = ["model", "method", "target", *region_names, "n", "n undefined"]
    rows = [
        [str(row["model"]), str(row["method"]), str(row["target"]), *(_percent(row[name]) for name in region_names), str(row["n_defined"]), str(row["n_undefined"])]
        for _, row in table.iterrows()
    ]
    return _markdown_table(header, rows)


def _gaze_first(column: pd.Series) -> pd.Series:
    """Sort key: the gaze rows before the methods, then by name."""
    return column.astype(str).map(lambda value: (value != GAZE_METHOD, value)) if column.name == "method" else column.astype(str)
