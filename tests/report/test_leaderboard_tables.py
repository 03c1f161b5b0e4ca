"""The leaderboard people read: no rows of the constant floor's undefined cells, one LaTeX table per block that fits a page."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from gazebench.aggregate.leaderboard import build_leaderboard
from gazebench.report.leaderboard import format_latex, format_markdown


def board_rows(readers=("all",)):
    """nss and kl rows of two methods, a method whose nss maps are all degenerate (NaN), and the two floors.

    The uniform floor is constant: NaN for nss (needs a map with some variation), defined for kl.
    """
    rng = np.random.default_rng(0)
    offsets = {"gradcam": 0.6, "saliency_x": 0.2, "broken": 0.4, "centre_bias": 0.35, "uniform": 0.1}
    rows = []
    for reader in readers:
        for method, offset in offsets.items():
            for metric in ("nss", "kl"):
                undefined = metric == "nss" and method in ("broken", "uniform")
                rows += [{"image_id": f"i{i}", "patient_id": f"p{i // 2}", "reader": reader, "target": "CHF", "method": method, "metric": metric,
                          "value": np.nan if undefined else offset + rng.normal(0, 0.05)} for i in range(12)]
    return pd.DataFrame(rows)


def test_markdown_leaves_out_the_uniform_floor_where_it_is_undefined_but_keeps_real_failures():
    board = build_leaderboard(board_rows(), n_boot=50)
    assert len(board[(board.method == "uniform") & (board.metric == "nss")]) == 1  # the CSV keeps every cell
    text = format_markdown(board)
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert not any(line.startswith("| nss ↑ | _uniform_") for line in table)
    assert any(line.startswith("| kl ↓ | _uniform_ (floor) |") for line in table)
    assert "| nss ↑ | broken | n/a | [n/a, n/a] | 0 |" in text  # a method whose maps all failed still shows
    assert len(table) == 1 + len(board) - 1
    assert "uniform (floor): a constant map, undefined for metrics that need a map with some variation; shown for kl only (left out of 1 of 2 blocks, where it has no value)." in text


def test_markdown_keeps_every_row_when_nothing_is_structurally_undefined():
    rows = board_rows()
    rows = rows[rows.method != "uniform"]
    board = build_leaderboard(rows, n_boot=20)
    text = format_markdown(board, notes=["a caller's note"])
    assert sum(line.startswith("| ") for line in text.splitlines()) == 1 + len(board)
    assert "constant map" not in text and "\na caller's note\n" in text


def latex_environments(text):
    """Checks that every \\begin has its \\end in order; returns the environments opened, in order."""
    stack, opened = [], []
    for kind, name in re.findall(r"\\(begin|end)\{(\w+)\}", text):
        if kind == "begin":
            stack.append(name)
            opened.append(name)
        else:
            assert stack and stack.pop() == name, f"\\end{{{name}}} does not close {stack}"
    assert not stack
    return opened


def test_latex_is_one_booktabs_table_per_block_with_a_caption_naming_the_metric():
    board = build_leaderboard(board_rows(readers=("all", "r1")), n_boot=50)
    text = format_latex(board, notes=["the runs scored different images: ..."])
    blocks = board[["metric", "gaze"]].drop_duplicates()
    assert latex_environments(text) == ["table", "tabular"] * len(blocks) == ["table", "tabular"] * 4
    body = re.sub(r"\\[{}%_&#$]", "", text)  # escaped characters
    assert body.count("{") == body.count("}")
    for table in re.findall(r"\\begin\{table\}.*?\\end\{table\}", text, re.DOTALL):
        lines = table.splitlines()
        assert lines[4:8] == [r"\begin{tabular}{lrcrll}", r"\toprule", r"Method & Mean & 95\% CI & $n$ & vs best & vs centre bias \\", r"\midrule"]
        assert lines[-3:] == [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
        assert 2 <= sum(line.endswith(r"\\") for line in lines) <= 1 + 5  # header + at most the 5 methods: fits a page
    assert r"\caption{nss ($\uparrow$ higher is better), merged gaze: mean and 95\% CI (patient bootstrap); bold: the best method.}" in text
    assert r"\caption{kl ($\downarrow$ lower is better), single reader gaze:" in text and r"\label{tab:leaderboard-kl-single-reader}" in text
    nss_merged = re.search(r"\\caption\{nss .*?merged.*?\\end\{table\}", text, re.DOTALL).group(0)
    assert "uniform" not in nss_merged and "broken & n/a & [n/a, n/a] & 0" in nss_merged
    best = board[(board.metric == "nss") & (board.gaze == "merged")].iloc[0]
    assert rf"gradcam & \textbf{{{best['mean']:.4f}}} &" in nss_merged
    assert r"\textit{centre\_bias} (floor)" in text and "centre_bias" not in text.replace(r"centre\_bias", "")
    assert "saliency_x" not in text and r"saliency\_x" in text
    assert "% the runs scored different images: ..." in text.splitlines()[:5]


def test_latex_with_several_models_has_a_model_column():
    rows = board_rows()
    several = pd.concat([rows.assign(model="densenet"), rows.assign(model="unet", value=rows.value + 0.1)])
    text = format_latex(build_leaderboard(several, n_boot=20))
    assert text.count(r"\begin{tabular}{llrcrlll}") == 2
    assert r"Model & Method & Mean & 95\% CI & $n$ & vs best & vs best model & vs centre bias \\" in text
