"""The HTML report: one self-contained file (figures as base64 PNG data URIs, inline CSS and script, no
network) with, per run, the leaderboard as a sortable table, the figures, the breakdown by class,
the region analysis, a data summary with the run's warnings and skips, the configuration and, for
credentialed data, the data-use notice; with several runs also their combined leaderboard.

``gazebench report RUN_DIR... [--out FILE]`` (``write_report``); ``gazebench run`` writes
``RUN_DIR/report.html`` from the tables it has just computed (``render_report``).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from gazebench.aggregate.leaderboard import rank
from gazebench.aggregate.notes import attention_lines
from gazebench.aggregate.runs import combine_runs, run_seed
from gazebench.atomic import write_atomic
from gazebench.bootstrap import BOOTSTRAP
from gazebench.errors import UserError
from gazebench.outputs import check_output_file
from gazebench.report.figures import FigureEntry, run_figures
from gazebench.report.html_tables import (
    breakdown_html,
    esc,
    html_table,
    leaderboard_html,
    notes_html,
    region_agreement_html,
    region_distribution_html,
)
from gazebench.report.run_tables import RunTables, read_run_tables

REPORT_FILE = "report.html"
DATA_USE_FILE = "DATA_USE.md"  # gazebench.data.data_use.NOTICE_FILE (report may not import data)

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1400px; padding: 1em 2em; color: #222; line-height: 1.4; }
h1, h2, h3 { line-height: 1.2; } h2 { border-bottom: 2px solid #0173b2; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; font-size: .85em; margin: .5em 0; }
th, td { border: 1px solid #ccc; padding: .25em .5em; text-align: left; vertical-align: top; }
th { background: #eef3f8; cursor: pointer; position: sticky; top: 0; user-select: none; }
th[aria-sort="ascending"]::after { content: " \\25B2"; } th[aria-sort="descending"]::after { content: " \\25BC"; }
td[data-sort] { text-align: right; font-variant-numeric: tabular-nums; }
tr.role-floor td { background: #f1f1f1; font-style: italic; }
tr.role-ceiling td { background: #e3effa; font-style: italic; }
tr.role-gaze td { font-weight: bold; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #ddd; }
figcaption { font-size: .9em; color: #444; max-width: 60em; }
.note { font-size: .85em; color: #444; max-width: 70em; }
.notice { border: 2px solid #d55e00; background: #fff4ec; padding: .5em 1em; white-space: pre-wrap; font-family: inherit; }
.warnings li { font-family: ui-monospace, monospace; font-size: .85em; }
pre.config { background: #f7f7f7; padding: 1em; overflow-x: auto; font-size: .8em; }
nav ul { columns: 2; } nav.contents { font-size: .9em; } nav.contents a { margin-right: 1em; }
input.filter { margin: .5em 0; padding: .2em .4em; width: 20em; }
"""

SCRIPT = """
function sortKey(row, column) {
  var cell = row.cells[column];
  return cell.hasAttribute("data-sort") ? cell.getAttribute("data-sort") : cell.textContent.trim();
}
function sortTable(table, column, header) {
  var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
  var ascending = header.getAttribute("aria-sort") !== "ascending";
  var keys = rows.map(function (row) { return sortKey(row, column); });
  var numeric = keys.every(function (key) { return key === "" || !isNaN(Number(key)); });
  var order = rows.map(function (row, index) { return index; });
  order.sort(function (a, b) {
    var x = keys[a], y = keys[b];
    if (x === "" || y === "") { return (x === "") - (y === "") || a - b; }
    var difference = numeric ? Number(x) - Number(y) : x.localeCompare(y);
    return (ascending ? difference : -difference) || a - b;
  });
  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (cell) { cell.removeAttribute("aria-sort"); });
  header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
  order.forEach(function (index) { body.appendChild(rows[index]); });
}
document.querySelectorAll("input.filter").forEach(function (box) {
  var table = box.nextElementSibling;
  box.addEventListener("input", function () {
    var text = box.value.toLowerCase();
    Array.prototype.forEach.call(table.tBodies[0].rows, function (row) { row.hidden = text !== "" && row.textContent.toLowerCase().indexOf(text) < 0; });
  });
});
document.querySelectorAll("table.sortable").forEach(function (table) {
  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (header, column) {
    header.addEventListener("click", function () { sortTable(table, column, header); });
  });
});
"""


@dataclass
class RunReport:
    """One run's section: its tables and its figures."""

    tables: RunTables
    figures: list[FigureEntry]


@dataclass
class CombinedLeaderboard:
    """The leaderboard over several runs (None: they cannot share one) and the line said about it."""

    board: pd.DataFrame | None
    note: str | None


def write_report(run_dirs: list[str | Path], out: str | Path | None = None, image_ids: list[str] | None = None) -> Path:
    """``gazebench report``: the report of ``run_dirs`` into ``out`` (default ``RUN_DIR/report.html`` for one run; required for several);
    ``image_ids``: the images its maps figures show (default: each run's best, median and worst kept image)."""
    run_dirs = [Path(run_dir) for run_dir in run_dirs]
    out = report_path(run_dirs, out)
    check_output_file(out)
    runs = [read_run_tables(run_dir) for run_dir in run_dirs]
    write_atomic(out, render_report([RunReport(tables, run_figures(tables.run_dir, tables, image_ids)) for tables in runs], combined_leaderboard(runs)))
    return out


def report_path(run_dirs: list[Path], out: str | Path | None) -> Path:
    """Where the report goes; refuses no run, a run given twice, and several runs without ``out`` (UserError)."""
    if not run_dirs:
        raise UserError("give at least one run directory (the --out of `gazebench run`)")
    resolved = [run_dir.resolve() for run_dir in run_dirs]
    twice = [str(run_dir) for run_dir, path in zip(run_dirs, resolved) if resolved.count(path) > 1]
    if twice:
        raise UserError(f"run directory {twice[0]} is given twice; give each run once")
    if out is None and len(run_dirs) > 1:
        raise UserError("--out is required with several run directories (the report's file, e.g. --out report.html)")
    return Path(out) if out is not None else run_dirs[0] / REPORT_FILE


def combined_leaderboard(runs: list[RunTables]) -> CombinedLeaderboard | None:
    """One leaderboard over the runs with scores (None with fewer than two), with what was dropped, or why there is none."""
    scored = [tables.run_dir for tables in runs if tables.has_scores]
    if len(scored) < 2:
        return None
    try:
        combined = combine_runs(scored)
    except UserError as refusal:  # runs that cannot share a leaderboard still get their own sections
        return CombinedLeaderboard(None, f"no combined leaderboard: {refusal}")
    board, _ = rank(combined.rows, run_seed(scored[0]))
    return CombinedLeaderboard(board, combined.note)


def render_report(runs: list[RunReport], combined: CombinedLeaderboard | None = None) -> str:
    """The whole HTML page."""
    names = [str(run.tables.run_dir) for run in runs]
    anchors = [f"run-{index}" for index in range(1, len(runs) + 1)]
    contents = "".join(f'<li><a href="#{anchor}">{esc(name)}</a></li>' for anchor, name in zip(anchors, names))
    parts = [f"<h1>gazebench report</h1><p>{len(runs)} run(s).</p>"]
    if any(data_use_notice(run.tables.run_dir) for run in runs):
        parts.append('<p class="notice">Built from credentialed data: see the data-use notice of each run below before sharing anything.</p>')
    parts.append(f"<nav><ul>{contents}</ul></nav>" if len(runs) > 1 else "")
    parts.append(combined_section(combined) if combined is not None else "")
    parts += [run_section(run, anchor) for run, anchor in zip(runs, anchors)]
    title = "gazebench report: " + ", ".join(names)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>{''.join(parts)}<script>{SCRIPT}</script></body></html>\n")


def combined_section(combined: CombinedLeaderboard) -> str:
    body = leaderboard_html(combined.board, BOOTSTRAP["level"], "combined-leaderboard-table") if combined.board is not None else ""
    return f'<section id="combined"><h2>All runs: combined leaderboard</h2>{notes_html([combined.note] if combined.note else [])}{body}</section>'


def run_section(run: RunReport, anchor: str) -> str:
    """One run: notice, leaderboard, figures, breakdown, regions, data summary, configuration, each with a heading the section's links point at."""
    tables = run.tables
    notice = data_use_notice(tables.run_dir)
    parts = {"Data use": f'<pre class="notice">{esc(notice)}</pre>' if notice else ""}
    if tables.has_scores:
        parts["Leaderboard"] = leaderboard_html(tables.leaderboard, ci_level(tables.config), f"{anchor}-leaderboard-table")
    parts["Figures"] = "".join(figure_html(entry) for entry in run.figures)
    if tables.has_scores:
        by_class = breakdown_html(tables.breakdown, f"{anchor}-breakdown-table")
        parts["Breakdown by class"] = f"<details><summary>mean [CI] (n) per method, metric and class, for correct and incorrect predictions</summary>{by_class}</details>"
    if tables.regions is not None:
        parts["Region analysis"] = ("<p>Most salient region: agreement with the gaze's, per method and class.</p>" + region_agreement_html(tables.regions)
                                    + f"<details><summary>Most salient region per class (% of maps)</summary>{region_distribution_html(tables.regions)}</details>")
    parts["Data"] = data_summary(tables)
    parts["Configuration"] = config_html(tables.run_dir)
    shown = {title: body for title, body in parts.items() if body}
    ids = {title: f"{anchor}-{title.lower().replace(' ', '-')}" for title in shown}
    links = "".join(f'<a href="#{ids[title]}">{esc(title)}</a>' for title in shown)
    body = "".join(f'<h3 id="{ids[title]}">{esc(title)}</h3>{content}' for title, content in shown.items())
    return f'<section class="run" id="{anchor}"><h2>Run {esc(tables.run_dir)}</h2><p>{esc(run_description(tables.config))}</p><nav class="contents">{links}</nav>{body}</section>'


def run_description(config: dict) -> str:
    """'model unet_gaze, data synth (split test, 62 images), gazebench 0.1.0' from config.yaml."""
    model = (config.get("model") or {}).get("name", "?")
    data = config.get("data") or {}
    images = f", {data['images']} images" if data.get("images") is not None else ""
    return f"model {model}, data {data.get('name', '?')} (split {data.get('split', '?')}{images}), gazebench {config.get('gazebench_version', '?')}"


def ci_level(config: dict) -> float:
    """The run's interval level (config.yaml's bootstrap), 0.95 by default."""
    return float((config.get("bootstrap") or {}).get("level", BOOTSTRAP["level"]))


def figure_html(entry: FigureEntry) -> str:
    source = "data:image/png;base64," + base64.b64encode(entry.png).decode("ascii")
    return f'<figure id="figure-{esc(entry.stem)}"><img src="{source}" alt="{esc(entry.title)}"><figcaption><b>{esc(entry.title)}.</b> {esc(entry.caption)}</figcaption></figure>'


def data_summary(tables: RunTables) -> str:
    """Images, patients and classes scored (from the score rows), then run.log's warnings and skips."""
    parts = []
    if tables.has_scores:
        units = tables.rows.drop_duplicates(["image_id", "target"])
        limit = (tables.config.get("data") or {}).get("limit")
        parts.append(f"<p>{units['image_id'].nunique()} image(s) of {units['patient_id'].nunique()} patient(s) scored"
                     + (f" (--limit {esc(limit)})" if limit else "") + ".</p>")
        per_class = units.groupby("target")["correct"].agg(["size", "sum"]).astype(int)
        rows = [([str(target), *((str(count), count) for count in (total, correct, total - correct))], "") for target, (total, correct) in per_class.iterrows()]
        parts.append(html_table(["class explained (target)", "images", "correct prediction", "incorrect prediction"], rows))
    lines = attention_lines(tables.run_dir)
    items = "".join(f"<li>{esc(line)}</li>" for line in lines)
    parts.append(f'<p>{len(lines)} warning/skip line(s) in run.log:</p><ul class="warnings">{items}</ul>' if lines else "<p>No warnings or skips in run.log.</p>")
    return "".join(parts)


def config_html(run_dir: Path) -> str:
    path = run_dir / "config.yaml"
    if not path.is_file():
        return "<p>No config.yaml.</p>"
    return f'<details><summary>config.yaml (every setting of the run)</summary><pre class="config">{esc(path.read_text())}</pre></details>'


def data_use_notice(run_dir: Path) -> str:
    """The run's DATA_USE.md (credentialed data), or empty."""
    path = Path(run_dir) / DATA_USE_FILE
    return path.read_text() if path.is_file() else ""
