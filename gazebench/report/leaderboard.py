"""The leaderboard for people: Markdown (printed at the end of a run) and LaTeX (booktabs, one table per block).

Both leave out the constant floor's cells that are undefined by construction
(``aggregate.leaderboard.structurally_undefined``) and say so in a note; the CSV keeps every cell.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from gazebench.aggregate.leaderboard import (
    CONSTANT_FLOOR,
    FLOOR_TO_BEAT,
    structurally_undefined,
)
from gazebench.aggregate.statistics import higher_is_better
from gazebench.protocol import REFERENCE_MAPS

MARK_NOTE = (
    "vs best: the cell against the best method of its block ({block}; reference maps are never 'best'), paired on the images "
    "both were scored on: patient bootstrap of the difference of means ({n_boot} replicates), p from its bootstrap standard "
    "error (t test, patients - 1 degrees of freedom), Holm-corrected over all method pairs of the block. **best** the best "
    "method; ns not significantly different at 5%; worse / better significantly worse / better; - no test (no shared finite "
    "values or fewer than 2 patients)."
)


def format_markdown(leaderboard: pd.DataFrame, notes: Sequence[str] = ()) -> str:
    """A markdown table: metric with its direction arrow, mean and CI to 4 decimals, n, marks; ``notes`` and the marks' notes below."""
    leaderboard, hidden = _shown(leaderboard)
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
    return "\n".join(lines) + "\n" + "".join(f"\n{note}\n" for note in [*notes, *_notes(leaderboard, marks), *hidden])


def _shown(leaderboard: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The cells a table shows, and the note that says which constant-floor cells it leaves out (none: no note)."""
    undefined = structurally_undefined(leaderboard)
    if not undefined.any():
        return leaderboard, []
    shown = leaderboard[~undefined]  # keeps attrs (ci, n_boot)
    defined = sorted(set(shown.loc[shown["method"] == CONSTANT_FLOOR, "metric"]))
    where = f"shown for {', '.join(defined)} only" if defined else "shown for no metric here"
    block_keys = _present(leaderboard, ["metric", "gaze"])
    left_out, blocks = (len(frame[block_keys].drop_duplicates()) for frame in (leaderboard[undefined], leaderboard))
    return shown, [f"{CONSTANT_FLOOR} (floor): a constant map, undefined for metrics that need a map with some variation; {where} (left out of {left_out} of {blocks} blocks, where it has no value)."]


def _present(board: pd.DataFrame, columns: list[str]) -> list[str]:
    return [column for column in columns if column in board.columns]


def _method_label(row: dict, reference_format: str) -> str:
    role = row.get("role", REFERENCE_MAPS.get(row["method"], "method"))
    return reference_format.format(row["method"], role) if role != "method" else str(row["method"])


def _bold_best(mark: str) -> str:
    return "**best**" if mark == "best" else str(mark)


def _notes(leaderboard: pd.DataFrame, marks: list[str]) -> list[str]:
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
        notes.append("_italic_ (floor): a reference map that ignores the model (centre bias and uniform ignore the image too; edges is the image's own Sobel edge map, which several saliency methods resemble); _italic_ (ceiling): other radiologists' gaze against one radiologist's (inter-observer agreement).")
    if "gaze" in leaderboard.columns:
        notes.append("gaze: merged = scored against the merged gaze of all readers; single reader = against each radiologist's own gaze (images read by several).")
    return notes


def _number(value: float) -> str:
    return "n/a" if pd.isna(value) else f"{value:.4f}"


LATEX_ESCAPES = {"\\": r"\textbackslash{}", "_": r"\_", "%": r"\%", "&": r"\&", "#": r"\#", "$": r"\$", "{": r"\{", "}": r"\}"}


def format_latex(leaderboard: pd.DataFrame, notes: Sequence[str] = ()) -> str:
    """One booktabs ``table`` per block (metric, gaze), so each fits a page; needs ``\\usepackage{booktabs}``.

    The caption names the metric, its direction and the gaze; best means in bold, references in
    italics; ``notes`` and what the marks mean go in comments above the tables.
    """
    leaderboard, hidden = _shown(leaderboard)
    ci = leaderboard.attrs.get("ci")
    columns = _present(leaderboard, ["model", "method"])
    marks = _present(leaderboard, ["vs_best", "vs_best_model", f"vs_{FLOOR_TO_BEAT}"])
    ci_label = _latex(f"{ci:.0%} CI" if ci is not None else "CI")
    header = [column.capitalize() for column in columns] + ["Mean", ci_label, "$n$"] + [_latex(mark.replace("_", " ")) for mark in marks]
    lines = [f"% {line}" for line in ["gazebench leaderboard, one table per block; needs \\usepackage{booktabs}", _latex_comment(leaderboard, marks), *notes, *hidden]]
    for _, block in leaderboard.groupby(_present(leaderboard, ["metric", "gaze"]), sort=False):
        metric, gaze = block["metric"].iloc[0], block["gaze"].iloc[0] if "gaze" in block.columns else None
        lines += ["", r"\begin{table}[htbp]", r"\centering", _caption(metric, gaze, ci_label, marks), rf"\label{{tab:leaderboard-{_label(metric)}{'-' + _label(gaze) if gaze else ''}}}",
                  r"\begin{tabular}{" + "l" * len(columns) + "rcr" + "l" * len(marks) + "}", r"\toprule", " & ".join(header) + r" \\", r"\midrule"]
        for row in block.to_dict("records"):
            names = {"model": _latex(str(row.get("model"))), "method": _method_label({**row, "method": _latex(row["method"])}, r"\textit{{{}}} ({})")}
            mean = _number(row["mean"])
            mean = rf"\textbf{{{mean}}}" if row.get("vs_best") == "best" else mean
            cells = [names[column] for column in columns] + [mean, f"[{_number(row['ci_low'])}, {_number(row['ci_high'])}]", str(row["n"])]
            lines.append(" & ".join(cells + [_latex(str(row[mark])) for mark in marks]) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def _caption(metric: str, gaze: str | None, ci_label: str, marks: list[str]) -> str:
    direction = r"$\uparrow$ higher is better" if higher_is_better(metric) else r"$\downarrow$ lower is better"
    scope = f", {_latex(gaze)} gaze" if gaze else ""
    bold = "; bold: the best method" if "vs_best" in marks else ""
    return rf"\caption{{{_latex(metric)} ({direction}){scope}: mean and {ci_label} (patient bootstrap){bold}.}}"


def _label(text: str) -> str:
    return "".join(character if character.isalnum() else "-" for character in str(text))


def _latex(text: str) -> str:
    return "".join(LATEX_ESCAPES.get(character, character) for character in str(text))


def _latex_comment(leaderboard: pd.DataFrame, marks: list[str]) -> str:
    n_boot = leaderboard.attrs.get("n_boot", "?")
    if not marks:
        return "patient bootstrap intervals"
    return (f"marks: paired patient bootstrap ({n_boot} replicates), Holm-corrected within each block; "
            "best / ns (not significantly different at 5%) / worse / better / - (no test); bold: the best method")
