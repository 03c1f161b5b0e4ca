"""breakdown.md: the breakdown by class and correct / incorrect prediction, in Kim et al.'s layout."""

from __future__ import annotations

import pandas as pd


def format_breakdown_markdown(table: pd.DataFrame) -> str:
    """Kim et al.'s layout: one line per (model, method, metric, gaze, target), correct | incorrect."""
    ci = table.attrs.get("ci")
    ci_label = f"{ci:.0%} CI" if ci is not None else "CI"
    keys = [column for column in ("model", "method", "metric", "gaze", "target") if column in table.columns]
    header = keys + ["correct prediction", "incorrect prediction"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for key, group in table.groupby(keys, sort=False, dropna=False):
        by_outcome = {row.correct: row for row in group.itertuples(index=False)}
        cells = [_breakdown_cell(by_outcome.get(outcome)) for outcome in (True, False)]
        lines.append("| " + " | ".join([str(part) for part in key] + cells) + " |")
    note = f"\nEach cell: mean [{ci_label}, patient bootstrap] (n images x targets); - : no such image.\n"
    return "\n".join(lines) + "\n" + note


def _breakdown_cell(row) -> str:
    if row is None or row.n == 0:
        return "-"
    return f"{row.mean:.4f} [{row.ci_low:.4f}, {row.ci_high:.4f}] (n={row.n})"
