"""Aggregate score rows into a leaderboard: one cell per (model,) method, metric (and gaze scope).

A cell's ``mean`` is the mean of its finite values (one row per image, target and reader), ``n``
their number; NaN values are left out (the engine counts and reports them).  The confidence
interval is a percentile bootstrap over **patients** (``gazebench.metrics.statistics``): a
replicate draws the cell's patients with replacement and averages all rows of the drawn patients.

Gaze scopes: cells over the rows scored against the merged gaze (``reader`` ``all``) have gaze
``merged``; when the rows also hold single-reader rows (images read by several radiologists),
cells over those rows (gaze ``single reader``, with the ``inter_observer`` ceiling) are added and
a ``gaze`` column says which is which.  Reference methods (REFERENCE_METHODS) are ranked with the
others but marked by ``role``; significance marks come from ``statistics.comparisons`` (paired
patient bootstrap on the shared images, Holm-corrected within each block).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from gazebench.errors import UserError
from gazebench.metrics.statistics import (  # noqa: F401  (bootstrap_ci: the historical import path)
    ALPHA,
    MERGED_GAZE,
    bootstrap_ci,
    cell_statistics,
    comparisons,
    has_single_reader_rows,
    higher_is_better,
    with_gaze_scope,
)
from gazebench.store import RunStore

# maps that ignore the model, scored beside every method: floors (no image information) and the
# ceiling (other radiologists' gaze against one radiologist's gaze)
REFERENCE_METHODS = {"centre_bias": "floor", "uniform": "floor", "inter_observer": "ceiling"}
FLOOR_TO_BEAT = "centre_bias"  # the vs_centre_bias column answers "better than centre bias?"
KEY_COLUMNS = ["method", "metric"]
STAT_COLUMNS = ["mean", "ci_low", "ci_high", "n"]
NO_TEST = "-"  # mark of a cell without a paired test


def build_leaderboard(rows: pd.DataFrame, n_boot: int = 1000, seed: int = 0, ci: float = 0.95, comparison_table: pd.DataFrame | None = None) -> pd.DataFrame:
    """Rows (image_id, patient_id, method, metric, value[, model, reader, target]) -> one row per cell.

    Columns: ``[model,] method, metric, [gaze,] mean, ci_low, ci_high, n, role, vs_best``, then
    ``vs_best_model`` (several models) and ``vs_centre_bias`` (rows with centre_bias).  ``model``
    only when the rows hold several models, ``gaze`` only with single-reader rows.  ``role``:
    method / floor / ceiling.  ``vs_best``: the cell against the best non-reference method of its
    block (model, metric, gaze): best, ns (not significantly different), worse, better, or - (no
    test); ``vs_best_model`` likewise against the best model for the same method;
    ``vs_centre_bias``: against the centre-bias floor.  Sorted by metric, gaze, then best mean
    first in the metric's direction (cells without finite values last).  ``comparison_table``:
    ``comparisons(rows, ...)`` when the caller already has it.  ``attrs``: ``ci``, ``n_boot``.
    """
    scoped = with_gaze_scope(rows)
    several_models = "model" in rows.columns and rows["model"].nunique(dropna=False) > 1
    keys = (["model"] if several_models else []) + KEY_COLUMNS + (["gaze"] if has_single_reader_rows(rows) else [])
    board = _sort_by_direction(cell_statistics(scoped, keys, n_boot, seed, ci))
    board["role"] = board["method"].map(lambda method: REFERENCE_METHODS.get(method, "method"))
    if comparison_table is None:
        comparison_table = comparisons(rows, n_boot, seed, ci, model_independent=REFERENCE_METHODS)
    lookup = _comparison_lookup(comparison_table, ignore_model=not several_models)
    board["vs_best"] = _marks(board, lookup, "methods", "best")
    if several_models:
        board["vs_best_model"] = _marks(board, lookup, "models", "best")
    if (board["method"] == FLOOR_TO_BEAT).any():
        board[f"vs_{FLOOR_TO_BEAT}"] = _marks(board, lookup, "methods", FLOOR_TO_BEAT)
    board.attrs.update(ci=ci, n_boot=n_boot)
    return board


def _sort_by_direction(board: pd.DataFrame) -> pd.DataFrame:
    """Sort by metric (and gaze scope), then best mean first (descending unless lower is better), NaN last."""
    sign = board["metric"].map(lambda metric: -1.0 if higher_is_better(metric) else 1.0)
    board = board.assign(_rank=board["mean"] * sign)
    order = ["metric"] + (["gaze"] if "gaze" in board.columns else []) + ["_rank"]
    board = board.sort_values(order, na_position="last", kind="stable")
    return board.drop(columns="_rank").reset_index(drop=True)


def _comparison_lookup(table: pd.DataFrame, ignore_model: bool) -> dict:
    """(kind, fixed, metric, gaze, x, y) -> (mean(x) - mean(y), p_holm, significant), both orders."""
    lookup = {}
    for row in table.itertuples(index=False):
        fixed = None if row.kind == "methods" and ignore_model else (row.model if row.kind == "methods" else row.method)
        lookup[(row.kind, fixed, row.metric, row.gaze, row.a, row.b)] = (row.diff, row.p_holm, row.significant)
        lookup[(row.kind, fixed, row.metric, row.gaze, row.b, row.a)] = (-row.diff, row.p_holm, row.significant)
    return lookup


def _marks(board: pd.DataFrame, lookup: dict, kind: str, against: str) -> list[str]:
    """Each cell's verdict against its block's ``best`` cell, or against the method ``against``.

    kind ``methods``: blocks are (model, metric, gaze), names are methods, the best is the best
    non-reference method; kind ``models``: blocks are (method, metric, gaze), names are models
    (reference methods, the same for every model, get ``-``).
    """
    name_column, fixed_column = ("method", "model") if kind == "methods" else ("model", "method")
    block_keys = [column for column in (fixed_column, "metric", "gaze") if column in board.columns]
    marks = pd.Series(NO_TEST, index=board.index, dtype=object)
    for _, block in board.groupby(block_keys, sort=False, dropna=False):
        candidates = block[block["mean"].notna()]
        if kind == "models":
            candidates = candidates[~candidates["method"].isin(list(REFERENCE_METHODS))]
        if against == "best":
            ranked = candidates[~candidates["method"].isin(list(REFERENCE_METHODS))] if kind == "methods" else candidates
            reference = ranked[name_column].iloc[0] if len(ranked) else None  # the board is sorted best first
        else:
            reference = against if (candidates[name_column] == against).any() else None
        if reference is None:
            continue
        for index, row in candidates.iterrows():
            if row[name_column] == reference:
                marks[index] = "best" if against == "best" else NO_TEST
                continue
            fixed = row.get(fixed_column) if fixed_column in board.columns else None
            entry = lookup.get((kind, fixed, row["metric"], row.get("gaze", MERGED_GAZE), row[name_column], reference))
            marks[index] = _verdict(entry, higher_is_better(row["metric"]))
    return marks.tolist()


def _verdict(entry: tuple | None, higher_better: bool) -> str:
    """ns / better / worse for a (cell - reference difference, p_holm, significant) entry."""
    if entry is None or pd.isna(entry[1]):
        return NO_TEST
    diff, _, significant = entry
    if not significant:
        return "ns"
    return "better" if (diff > 0) == higher_better else "worse"


def combine_runs(run_dirs: list[Path]) -> pd.DataFrame:
    """The score rows of several run directories, for one leaderboard over the same images.

    Refuses (UserError, one line) a directory without scores, runs with different scoring
    protocols or different datasets/splits (their numbers are not comparable), and two runs that
    hold the same (model, method) rows (rename the model of one of them).
    """
    frames = []
    resolved = [Path(run_dir).resolve() for run_dir in run_dirs]
    if len(set(resolved)) < len(resolved):
        twice = next(str(run_dir) for run_dir, path in zip(run_dirs, resolved) if resolved.count(path) > 1)
        raise UserError(f"run directory {twice} is given twice; give each run once")
    for run_dir in map(Path, run_dirs):
        rows = RunStore(run_dir).read_scores()
        if rows.empty:
            raise UserError(f"{run_dir} holds no score rows (scores/*.parquet); give a gazebench run directory")
        frames.append(rows.assign(_run=str(run_dir)))
    combined = pd.concat(frames, ignore_index=True)
    for columns, what in ((["protocol"], "scoring protocols"), (["dataset", "split"], "datasets or splits")):
        _refuse_mixed(combined, columns, what)
    owners = combined.groupby(["model", "method"])["_run"].unique()
    shared = owners[owners.map(len) > 1]
    if len(shared):
        (model, method), runs = shared.index[0], shared.iloc[0]
        raise UserError(f"runs {', '.join(runs)} all hold model {model!r} with method {method!r}; combine runs of different models or methods")
    return combined.drop(columns="_run")


def _refuse_mixed(combined: pd.DataFrame, columns: list[str], what: str) -> None:
    values = combined[columns].astype(str).agg(" ".join, axis=1)
    if values.nunique() > 1:
        first = values.groupby(combined["_run"]).first()
        listing = "; ".join(f"{run}: {value}" for run, value in first.items())
        raise UserError(f"the runs use different {what} and cannot share a leaderboard ({listing})")


MARK_NOTE = (
    "vs best: the cell against the best method of its block ({block}; reference maps are never 'best'), paired on the images "
    "both were scored on: patient bootstrap of the difference of means ({n_boot} replicates), p from its bootstrap standard "
    "error (t test, patients - 1 degrees of freedom), Holm-corrected over all method pairs of the block. **best** the best "
    "method; ns not significantly different at 5%; worse / better significantly worse / better; - no test (no shared finite "
    "values or fewer than 2 patients)."
)


def format_markdown(leaderboard: pd.DataFrame) -> str:
    """A markdown table: metric with its direction arrow, mean and CI to 4 decimals, n, marks; notes below."""
    ci = leaderboard.attrs.get("ci")
    ci_header = f"{ci:.0%} CI" if ci is not None else "CI"
    columns = _present(leaderboard, ["model", "metric", "gaze", "method"]) + ["mean", ci_header, "n"]
    marks = _present(leaderboard, ["vs_best", "vs_best_model", f"vs_{FLOOR_TO_BEAT}"])
    header = columns + [mark.replace("_", " ") for mark in marks]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for row in leaderboard.to_dict("records"):
        arrow = "↑" if higher_is_better(row["metric"]) else "↓"
        cells = {"model": str(row.get("model")), "metric": f"{row['metric']} {arrow}", "gaze": str(row.get("gaze")),
                 "method": _method_label(row, "_{}_ ({})"), "mean": _number(row["mean"]),
                 ci_header: f"[{_number(row['ci_low'])}, {_number(row['ci_high'])}]", "n": str(row["n"])}
        line = [cells[column] for column in columns] + [_bold_best(row[mark]) for mark in marks]
        lines.append("| " + " | ".join(line) + " |")
    return "\n".join(lines) + "\n" + _notes(leaderboard, marks)


def _present(board: pd.DataFrame, columns: list[str]) -> list[str]:
    return [column for column in columns if column in board.columns]


def _method_label(row: dict, reference_format: str) -> str:
    role = row.get("role", REFERENCE_METHODS.get(row["method"], "method"))
    return reference_format.format(row["method"], role) if role != "method" else str(row["method"])


def _bold_best(mark: str) -> str:
    return "**best**" if mark == "best" else str(mark)


def _notes(leaderboard: pd.DataFrame, marks: list[str]) -> str:
    notes = []
    if "vs_best" in marks:
        n_boot = leaderboard.attrs.get("n_boot", "?")
        block = ", ".join(_present(leaderboard, ["model", "metric", "gaze"]))
        notes.append(MARK_NOTE.format(n_boot=n_boot, block=block))
    if "vs_best_model" in marks:
        notes.append("vs best model: the same test against the best model for the same method (Holm over all model pairs).")
    if f"vs_{FLOOR_TO_BEAT}" in marks:
        notes.append("vs centre bias: the same test against the centre-bias floor; better = the method beats centre bias significantly.")
    if "role" in leaderboard.columns and (leaderboard["role"] != "method").any():
        notes.append("_italic_ (floor): a reference map that ignores the image (centre bias, uniform); _italic_ (ceiling): other radiologists' gaze against one radiologist's (inter-observer agreement).")
    if "gaze" in leaderboard.columns:
        notes.append("gaze: merged = scored against the merged gaze of all readers; single reader = against each radiologist's own gaze (images read by several).")
    return "".join(f"\n{note}\n" for note in notes)


def _number(value: float) -> str:
    return "n/a" if pd.isna(value) else f"{value:.4f}"


LATEX_ESCAPES = {"\\": r"\textbackslash{}", "_": r"\_", "%": r"\%", "&": r"\&", "#": r"\#", "$": r"\$", "{": r"\{", "}": r"\}"}


def format_latex(leaderboard: pd.DataFrame) -> str:
    """A booktabs tabular (needs ``\\usepackage{booktabs}``): best means in bold, references in italics, a rule per metric block."""
    ci = leaderboard.attrs.get("ci")
    columns = _present(leaderboard, ["model", "metric", "gaze", "method"])
    marks = _present(leaderboard, ["vs_best", "vs_best_model", f"vs_{FLOOR_TO_BEAT}"])
    header = [column.capitalize() for column in columns] + ["Mean", _latex(f"{ci:.0%} CI" if ci is not None else "CI"), "$n$"] + [_latex(mark.replace("_", " ")) for mark in marks]
    lines = [
        "% gazebench leaderboard; " + _latex_comment(leaderboard, marks),
        r"\begin{tabular}{" + "l" * len(columns) + "rcr" + "l" * len(marks) + "}",
        r"\toprule",
        " & ".join(header) + r" \\",
        r"\midrule",
    ]
    previous_block = None
    for row in leaderboard.to_dict("records"):
        block = (row["metric"], row.get("gaze"))
        if previous_block is not None and block != previous_block:
            lines.append(r"\midrule")
        previous_block = block
        arrow = r"$\uparrow$" if higher_is_better(row["metric"]) else r"$\downarrow$"
        names = {"model": _latex(str(row.get("model"))), "metric": f"{_latex(row['metric'])} {arrow}", "gaze": _latex(str(row.get("gaze"))),
                 "method": _method_label({**row, "method": _latex(row["method"])}, r"\textit{{{}}} ({})")}
        mean = _number(row["mean"])
        mean = rf"\textbf{{{mean}}}" if row.get("vs_best") == "best" else mean
        cells = [names[column] for column in columns] + [mean, f"[{_number(row['ci_low'])}, {_number(row['ci_high'])}]", str(row["n"])]
        lines.append(" & ".join(cells + [_latex(str(row[mark])) for mark in marks]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def _latex(text: str) -> str:
    return "".join(LATEX_ESCAPES.get(character, character) for character in str(text))


def _latex_comment(leaderboard: pd.DataFrame, marks: list[str]) -> str:
    n_boot = leaderboard.attrs.get("n_boot", "?")
    if not marks:
        return "patient bootstrap intervals"
    return (f"marks: paired patient bootstrap ({n_boot} replicates), Holm-corrected within each block; "
            "best / ns (not significantly different at 5%) / worse / better / - (no test); bold: the best method")
