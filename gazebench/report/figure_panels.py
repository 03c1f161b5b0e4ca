"""The report's figures, each drawn on a ``matplotlib.figure.Figure`` from a run's aggregated tables.

Agg canvas, no pyplot state, seaborn's colour-blind palette; every metric axis says the metric's
direction (``aggregate.statistics.higher_is_better``).  One panel per leaderboard block (metric,
and gaze scope when the data have single-reader rows), in the leaderboard's order.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import cbook
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from gazebench.aggregate.regions import GAZE_METHOD
from gazebench.aggregate.statistics import higher_is_better, with_gaze_scope
from gazebench.protocol import REFERENCE_MAPS

PALETTE = sns.color_palette("colorblind")
# reference map -> (colour, line style), the same in every panel and run: orange, green, purple, grey, apart from the boxes' blue
REFERENCE_LINES = dict(zip(REFERENCE_MAPS, zip([PALETTE[index] for index in (1, 2, 4, 7)], ("--", ":", "-.", (0, (5, 1, 1, 1, 1, 1))))))
MAX_COLUMNS = 3


def direction_label(metric: str) -> str:
    return "↑ higher is better" if higher_is_better(metric) else "↓ lower is better"


def block_name(block: dict) -> str:
    """'nss', or 'nss, merged gaze' when the leaderboard has gaze scopes."""
    return block["metric"] + (f", {block['gaze']} gaze" if block.get("gaze") else "")


def block_title(block: dict) -> str:
    """'nss (↑ higher is better)', with the gaze scope when the leaderboard has one."""
    return f"{block_name(block)} ({direction_label(block['metric'])})"


def leaderboard_blocks(leaderboard: pd.DataFrame) -> list[tuple[dict, pd.DataFrame]]:
    """(block key, its leaderboard rows best first) per (metric[, gaze]) block, in the leaderboard's order."""
    keys = [column for column in ("metric", "gaze") if column in leaderboard.columns]
    return [(dict(zip(keys, key if isinstance(key, tuple) else (key,))), rows) for key, rows in leaderboard.groupby(keys, sort=False)]


def panel_figure(n_panels: int, panel_size: tuple[float, float]) -> tuple[Figure, list]:
    """A Figure (Agg canvas, constrained layout) with ``n_panels`` axes in at most MAX_COLUMNS columns."""
    columns = min(MAX_COLUMNS, max(n_panels, 1))
    lines = max(math.ceil(n_panels / columns), 1)
    figure = Figure(figsize=(panel_size[0] * columns, panel_size[1] * lines + 0.8), layout="constrained")
    FigureCanvasAgg(figure)
    with sns.axes_style("whitegrid"):
        axes = figure.subplots(lines, columns, squeeze=False).ravel().tolist()
    for unused in axes[n_panels:]:
        unused.set_visible(False)
    return figure, axes[:n_panels]


def label_categories(ax, position: int, n_panels: int, names: list[str], axis: str, start: int = 0) -> None:
    """Name the categories at ``start``, ``start + 1``, ... on ``axis`` of the outer panels only (the last of each
    column for x, the first of each line for y): every panel has the same ones, and tick labels are most of the drawing time."""
    columns = min(MAX_COLUMNS, n_panels)
    outer = position + columns >= n_panels if axis == "x" else position % columns == 0
    set_ticks = ax.set_xticks if axis == "x" else ax.set_yticks
    if outer:
        set_ticks(range(start, start + len(names)), names, rotation=90 if axis == "x" else 0, fontsize="small")
    else:
        set_ticks([])


def method_order(leaderboard: pd.DataFrame) -> list[str]:
    """One order for every panel: the methods by their mean rank over the blocks (best first), then the reference maps."""
    keys = [column for column in ("metric", "gaze") if column in leaderboard.columns]
    methods = leaderboard[leaderboard["role"] == "method"]
    ranks = methods.assign(_rank=methods.groupby(keys, sort=False).cumcount())  # the leaderboard is sorted best first per block
    methods = ranks.groupby("method")["_rank"].mean().sort_values(kind="stable").index.tolist()  # ties: by name
    present = set(leaderboard["method"])
    return methods + [name for name in REFERENCE_MAPS if name in present]


def block_rows(frame: pd.DataFrame, block: dict) -> pd.DataFrame:
    """The rows of ``frame`` in one leaderboard block (same metric, and gaze scope when the block has one)."""
    if frame.empty:
        return frame
    return frame[np.logical_and.reduce([frame[column] == value for column, value in block.items()])]


def draw_metric_distributions(rows: pd.DataFrame, leaderboard: pd.DataFrame) -> Figure:
    """Per block, a box of each method's per-image values; the floors and the ceiling as labelled horizontal lines at their means."""
    scoped = with_gaze_scope(rows)
    blocks = leaderboard_blocks(leaderboard)
    methods = [name for name in method_order(leaderboard) if name not in REFERENCE_MAPS]
    figure, axes = panel_figure(len(blocks), (max(3.6, 0.4 * len(methods) + 1.6), 3.4))
    legend = {}
    for position, (ax, (block, cells)) in enumerate(zip(axes, blocks)):
        selected = block_rows(scoped, block)
        values = [selected.loc[selected["method"] == method, "value"].dropna().to_numpy() for method in methods]
        draw_boxes(ax, values)
        label_categories(ax, position, len(blocks), methods, "x", start=1)
        for row in cells[cells["role"] != "method"].dropna(subset=["mean"]).to_dict("records"):
            colour, style = REFERENCE_LINES[row["method"]]
            legend[row["method"]] = ax.axhline(row["mean"], color=colour, linestyle=style, linewidth=1.6, label=f"{row['method']} ({row['role']}), mean")
        ax.set_title(block_name(block), fontsize="medium")
        ax.set_ylabel(f"{block['metric']} per image\n({direction_label(block['metric'])})")
    if legend:
        handles = [legend[name] for name in REFERENCE_MAPS if name in legend]
        figure.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize="small", title="reference maps (horizontal lines at their means)")
    figure.suptitle("Per-image values of each method (box: quartiles, whiskers: 1.5 IQR)")
    return figure


def draw_boxes(ax, values: list[np.ndarray], width: float = 0.6) -> None:
    """Box plots at x = 1, 2, ... (quartiles, whiskers at 1.5 IQR, outliers as dots) in four artists, not seven per box:
    the same picture as ``Axes.boxplot`` at a fraction of its drawing time."""
    stats = [cbook.boxplot_stats(array)[0] if len(array) else None for array in values]
    drawn = [(position, stat) for position, stat in enumerate(stats, start=1) if stat is not None]
    half = width / 2
    boxes = [[(x - half, stat["q1"]), (x + half, stat["q1"]), (x + half, stat["q3"]), (x - half, stat["q3"])] for x, stat in drawn]
    ax.add_collection(PolyCollection(boxes, facecolors=[(*PALETTE[0], 0.35)], edgecolors="black", linewidths=1.0))
    segments = [segment for x, stat in drawn for segment in (
        [(x - half, stat["med"]), (x + half, stat["med"])],  # median
        [(x, stat["whislo"]), (x, stat["q1"])], [(x, stat["q3"]), (x, stat["whishi"])],  # whiskers
        [(x - half / 2, stat["whislo"]), (x + half / 2, stat["whislo"])], [(x - half / 2, stat["whishi"]), (x + half / 2, stat["whishi"])],  # caps
    )]
    ax.add_collection(LineCollection(segments, colors="black", linewidths=1.0))
    outliers = [(x, value) for x, stat in drawn for value in stat["fliers"]]
    if outliers:
        ax.plot(*zip(*outliers), linestyle="none", marker="o", markerfacecolor="none", markeredgecolor="black", markersize=4)
    ax.set_xlim(0.5, len(values) + 0.5)
    ax.autoscale_view(scalex=False)


SIGNIFICANCE_COLOURS = {"better": PALETTE[0], "worse": PALETTE[1]}


def significance_matrix(comparisons: pd.DataFrame, names: list[str], metric: str) -> tuple[np.ndarray, np.ndarray]:
    """[names x names] verdicts (+1: the row's method is significantly better, -1: worse, 0: not significant, NaN: no test) and Holm p."""
    index = {name: position for position, name in enumerate(names)}
    verdicts, p_holm = np.full((len(names), len(names)), np.nan), np.full((len(names), len(names)), np.nan)
    for pair in comparisons.to_dict("records"):
        if pair["a"] not in index or pair["b"] not in index or pd.isna(pair["p_holm"]):
            continue
        a, b = index[pair["a"]], index[pair["b"]]
        a_better = (pair["diff"] > 0) == higher_is_better(metric)
        sign = (1.0 if a_better else -1.0) if pair["significant"] else 0.0
        verdicts[a, b], verdicts[b, a] = sign, -sign
        p_holm[a, b] = p_holm[b, a] = pair["p_holm"]
    return verdicts, p_holm


def p_text(p_value: float) -> str:
    return "<.001" if p_value < 0.001 else f"{p_value:.3f}".lstrip("0")


def draw_cells(ax, size: int, better: np.ndarray, worse: np.ndarray) -> None:
    """A size x size matrix (row 0 on top) with the ``better`` and ``worse`` cells coloured and the diagonal grey, as one collection."""
    kinds = [(better, _light(SIGNIFICANCE_COLOURS["better"])), (worse, _light(SIGNIFICANCE_COLOURS["worse"])), (np.eye(size, dtype=bool), (0.85, 0.85, 0.85))]
    cells = [(row, column, colour) for mask, colour in kinds for row, column in zip(*np.nonzero(mask))]
    squares = [[(column - 0.5, row - 0.5), (column + 0.5, row - 0.5), (column + 0.5, row + 0.5), (column - 0.5, row + 0.5)] for row, column, _ in cells]
    ax.add_collection(PolyCollection(squares, facecolors=[colour for _, _, colour in cells], edgecolors="none"))
    ax.set_xlim(-0.5, size - 0.5)
    ax.set_ylim(size - 0.5, -0.5)
    ax.set_aspect("equal")


def draw_significance(comparisons: pd.DataFrame, leaderboard: pd.DataFrame) -> Figure:
    """Per block, the lower triangle of a method x method matrix (each pair once): coloured where the row's method is
    significantly better or worse than the column's, with the Holm-adjusted p; blank where the difference is not significant."""
    tests = comparisons[comparisons["kind"] == "methods"] if len(comparisons) else comparisons
    blocks = leaderboard_blocks(leaderboard)
    names = method_order(leaderboard)
    below = np.tril(np.ones((len(names), len(names)), dtype=bool), k=-1)
    side = max(3.6, 0.3 * len(names) + 1.2)
    figure, axes = panel_figure(len(blocks), (side, side))
    for position, (ax, (block, _)) in enumerate(zip(axes, blocks)):
        verdicts, p_holm = significance_matrix(block_rows(tests, block), names, block["metric"])
        draw_cells(ax, len(names), below & (verdicts == 1), below & (verdicts == -1))
        for row, column in zip(*np.nonzero(below & np.isin(verdicts, (1, -1)))):
            ax.text(column, row, p_text(p_holm[row, column]), ha="center", va="center", fontsize=6)
        label_categories(ax, position, len(blocks), names, "x")
        label_categories(ax, position, len(blocks), names, "y")
        ax.grid(False)
        ax.set_title(block_title(block), fontsize="medium")
    handles = [Patch(facecolor=_light(SIGNIFICANCE_COLOURS["better"]), label="row significantly better than column (Holm-adjusted p in the cell)"),
               Patch(facecolor=_light(SIGNIFICANCE_COLOURS["worse"]), label="row significantly worse"),
               Patch(facecolor="white", edgecolor="grey", label="blank: not significant, or no test")]
    figure.legend(handles=handles, loc="outside lower center", ncols=3, fontsize="small")
    figure.supxlabel("compared with (column)", fontsize="medium")
    figure.supylabel("method (row)", fontsize="medium")
    figure.suptitle("Paired comparisons, each pair once (patient bootstrap of the difference of means, Holm-corrected per block)")
    return figure


def _light(colour, amount: float = 0.55) -> tuple[float, float, float]:
    """The colour mixed with white, so black text stays readable on it."""
    return tuple(amount * channel + (1 - amount) for channel in colour)


def region_bars(class_distribution: pd.DataFrame) -> pd.DataFrame:
    """The distribution with one ``bar`` label per (model, method): the method alone for one model, ``model: method``
    for several; the gaze once (every model's maps are compared with the same gaze), on top."""
    frame = class_distribution.copy()
    models = list(dict.fromkeys(frame["model"].astype(str)))
    frame = frame[(frame["method"] != GAZE_METHOD) | (frame["model"].astype(str) == models[0])]
    several = len(models) > 1
    frame["bar"] = [
        f"{GAZE_METHOD} (radiologists)" if method == GAZE_METHOD else (f"{model}: {method}" if several else str(method))
        for model, method in zip(frame["model"].astype(str), frame["method"])
    ]
    frame["order"] = [(method != GAZE_METHOD, models.index(model), str(method)) for model, method in zip(frame["model"].astype(str), frame["method"])]
    return frame.sort_values("order", kind="stable")


def draw_region_distribution(class_distribution: pd.DataFrame, region_names: list[str]) -> Figure:
    """Per class, one stacked bar per method (per model and method for several models; gaze first): how often each region is the maps' most salient one."""
    bars = region_bars(class_distribution)
    targets = sorted(bars["target"].astype(str).unique())
    methods = list(dict.fromkeys(bars["bar"]))  # gaze first, then each model's methods
    labels = methods
    colours = dict(zip(region_names, PALETTE))
    figure, axes = panel_figure(len(targets), (5.2, 0.32 * len(methods) + 1.6))
    for position, (ax, target) in enumerate(zip(axes, targets)):
        cells = bars[bars["target"].astype(str) == target]
        percent = 100 * cells.pivot_table(index="bar", columns="region", values="fraction", aggfunc="first", dropna=False).reindex(index=methods, columns=region_names)
        left = np.zeros(len(methods))
        for region in region_names:
            shares = percent[region].fillna(0.0).to_numpy()
            ax.barh(np.arange(len(methods)), shares, left=left, color=colours[region], label=region)
            left += shares
        label_categories(ax, position, len(targets), labels, "y")
        ax.set_ylim(len(methods) - 0.5, -0.5)  # the gaze on top
        ax.set_xlim(0, 100)
        ax.set_title(f"class {target}", fontsize="medium")
        ax.set_xlabel("% of the maps whose most salient region it is")
    handles = [Line2D([], [], color=colours[region], linewidth=8, label=region) for region in region_names]
    figure.legend(handles=handles, loc="outside lower center", ncols=len(region_names), fontsize="small", title="most salient region (highest z-scored share)")
    figure.suptitle("Most salient region per class: each method beside the radiologists' gaze")
    return figure
