"""The leaderboard for people: Markdown (printed at the end of a run) and LaTeX (booktabs)."""

from __future__ import annotations

import pandas as pd

from gazebench.aggregate.leaderboard import FLOOR_TO_BEAT
from gazebench.aggregate.statistics import higher_is_better
from gazebench.protocol import REFERENCE_MAPS

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
    role = row.get("role", REFERENCE_MAPS.get(row["method"], "method"))
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
