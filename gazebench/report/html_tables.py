"""The HTML report's tables: leaderboard, breakdown and region analysis as sortable ``<table>`` s.

Every text is escaped (``html.escape``).  A cell may carry a sort key (``data-sort``): numbers
sort numerically, a missing value (empty key) sorts last; the page's script does the sorting.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

import pandas as pd

from gazebench.aggregate.leaderboard import FLOOR_TO_BEAT, structurally_undefined
from gazebench.aggregate.regions import CLASS, GAZE_METHOD, RegionAnalysis
from gazebench.aggregate.statistics import higher_is_better
from gazebench.protocol import REFERENCE_MAPS

Cell = str | tuple[str, object]  # text, or (text, sort key)
MARK_COLUMNS = ("vs_best", "vs_best_model", f"vs_{FLOOR_TO_BEAT}")


def esc(value: object) -> str:
    return html.escape(str(value))


def number(value: float, digits: int = 4) -> str:
    return "n/a" if value is None or pd.isna(value) else f"{value:.{digits}f}"


def percent(value: float) -> str:
    return "n/a" if pd.isna(value) else f"{100 * value:.1f}%"


def sort_key(value: object) -> str:
    """A number as its full repr (so the script sorts it numerically), NaN as empty (sorted last)."""
    if isinstance(value, float) and math.isnan(value):
        return ""
    return repr(float(value)) if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def cell_html(cell: Cell, tag: str = "td") -> str:
    text, key = cell if isinstance(cell, tuple) else (cell, None)
    attribute = "" if key is None else f' data-sort="{esc(sort_key(key))}"'
    return f"<{tag}{attribute}>{esc(text)}</{tag}>"


FILTER_FROM = 20  # rows: a longer table gets a box that hides the rows not containing its text


def html_table(header: Sequence[str], rows: Sequence[tuple[Sequence[Cell], str]], table_id: str = "") -> str:
    """A sortable table: ``rows`` are (cells, CSS class of the row or ""); a long one with a filter box above it."""
    identifier = f' id="{esc(table_id)}"' if table_id else ""
    head = "".join(f'<th title="click to sort">{esc(name)}</th>' for name in header)
    body = "".join((f'<tr class="{esc(css)}">' if css else "<tr>") + "".join(cell_html(cell) for cell in cells) + "</tr>" for cells, css in rows)
    search = '<input type="search" class="filter" placeholder="show only rows containing..." aria-label="filter rows">' if len(rows) >= FILTER_FROM else ""
    return f'{search}<table class="sortable"{identifier}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def present(frame: pd.DataFrame, columns: Sequence[str]) -> list[str]:
    return [column for column in columns if column in frame.columns]


def leaderboard_html(board: pd.DataFrame, ci: float, table_id: str = "") -> str:
    """The leaderboard (without the constant floor's cells that are undefined by construction), floors and ceiling marked, then its notes."""
    hidden = structurally_undefined(board)
    shown = board[~hidden]
    keys, marks = present(shown, ["model", "metric", "gaze", "method"]), present(shown, MARK_COLUMNS)
    header = [*keys, "role", "mean", f"{ci:.0%} CI", "n", *(mark.replace("_", " ") for mark in marks)]
    rows = []
    for row in shown.to_dict("records"):
        arrow = "↑" if higher_is_better(row["metric"]) else "↓"
        named = [f"{row[key]} {arrow}" if key == "metric" else str(row[key]) for key in keys]
        cells = [*named, str(row["role"]), (number(row["mean"]), row["mean"]), (f"[{number(row['ci_low'])}, {number(row['ci_high'])}]", row["ci_low"]),
                 (str(row["n"]), row["n"]), *(str(row[mark]) for mark in marks)]
        rows.append((cells, f"role-{row['role']}" if row["role"] != "method" else ""))
    notes = [f"{int(hidden.sum())} cell(s) of the uniform floor left out: a constant map is undefined for metrics that need a map with some variation."] if hidden.any() else []
    return html_table(header, rows, table_id) + notes_html([*notes, *leaderboard_notes(shown, marks)])


def leaderboard_notes(board: pd.DataFrame, marks: Sequence[str]) -> list[str]:
    notes = ["↑ higher is better, ↓ lower is better. Intervals: percentile bootstrap over patients. Click a column header to sort (again: reverse)."]
    if "vs_best" in marks:
        notes.append("vs best: the cell against the best method of its block (reference maps are never 'best'), paired on the images both were scored on, "
                     "Holm-corrected within the block: best / ns (not significantly different at 5%) / worse / better / - (no test).")
    if "vs_best_model" in marks:
        notes.append("vs best model: the same test against the best model for the same method (Holm over the model pairs).")
    if f"vs_{FLOOR_TO_BEAT}" in marks:
        notes.append("vs centre bias: the same test against the centre-bias floor.")
    if "gaze" in board.columns:
        notes.append("gaze: merged = scored against the merged gaze of all readers; single reader = against each radiologist's own gaze.")
    if (board["role"] != "method").any():
        roles = ", ".join(f"{name} ({role})" for name, role in REFERENCE_MAPS.items() if name in set(board["method"]))
        notes.append(f"Shaded rows are reference maps that ignore the model: {roles}. A method should beat the floors; the ceiling is other radiologists' gaze against one radiologist's.")
    return notes


def notes_html(notes: Sequence[str]) -> str:
    return "".join(f'<p class="note">{esc(note)}</p>' for note in notes)


def breakdown_html(table: pd.DataFrame, table_id: str = "") -> str:
    """One row per (model, method, metric, gaze, target): mean [CI] (n) of correct and of incorrect predictions (Kim et al.'s layout)."""
    keys = present(table, ["model", "method", "metric", "gaze", "target"])
    rows = []
    for key, group in table.groupby(keys, sort=False, dropna=False):
        by_outcome = {bool(row["correct"]): row for row in group.to_dict("records")}
        cells = [str(part) for part in (key if isinstance(key, tuple) else (key,))]
        rows.append(([*cells, *(_outcome_cell(by_outcome.get(outcome)) for outcome in (True, False))], ""))
    return html_table([*keys, "correct prediction", "incorrect prediction"], rows, table_id)


def _outcome_cell(row: dict | None) -> Cell:
    if row is None or row["n"] == 0:
        return ("-", math.nan)
    return (f"{number(row['mean'])} [{number(row['ci_low'])}, {number(row['ci_high'])}] (n={row['n']})", row["mean"])


def region_agreement_html(analysis: RegionAnalysis) -> str:
    """How often each method's most salient region is the gaze's, with the agreement expected by chance."""
    rows = [([str(row["model"]), str(row["method"]), str(row["target"]), (percent(row["agreement"]), row["agreement"]), (percent(row["chance"]), row["chance"]),
              (str(row["n_compared"]), row["n_compared"]), (str(row["n_undefined"]), row["n_undefined"])], "")
            for row in analysis.agreement.to_dict("records")]
    return html_table(["model", "method", "target", "agreement", "chance", "n compared", "n undefined"], rows)


def region_distribution_html(analysis: RegionAnalysis) -> str:
    """One row per (model, method, target), gaze first: the % of its maps whose most salient region each region is."""
    distribution, names = analysis.class_distribution, analysis.region_names
    fractions = distribution.set_index([*CLASS, "region"])["fraction"].unstack("region").reindex(columns=names)
    counts = distribution.groupby(CLASS, dropna=False, sort=False)[["n_defined", "n_undefined"]].first()
    table = counts.join(fractions).reset_index()
    table = table.assign(_gaze_last=table["method"] != GAZE_METHOD).sort_values(["model", "target", "_gaze_last", "method"], kind="stable")
    rows = [([str(row["model"]), str(row["method"]), str(row["target"]), *((percent(row[name]), row[name]) for name in names),
              (str(row["n_defined"]), row["n_defined"]), (str(row["n_undefined"]), row["n_undefined"])], "role-gaze" if row["method"] == GAZE_METHOD else "")
            for row in table.to_dict("records")]
    return html_table(["model", "method", "target", *names, "n", "n undefined"], rows)
