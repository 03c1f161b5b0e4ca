"""The sanity check's figure: similarity to the trained model's maps as the layers are randomised.

Drawn on a ``matplotlib.figure.Figure`` with the Agg canvas (no pyplot, no global backend or
style change), so it works headless and inside other programs.
"""

from __future__ import annotations

import io
import textwrap

import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

PANELS = (("spearman", "Spearman rank correlation"), ("ssim", "SSIM"))
LABEL_WIDTH = 28  # characters per line of a step's axis label


def step_labels(summary: pd.DataFrame) -> dict[int, str]:
    """step -> 'k: layers' axis label (wrapped), from sanity.csv's ``label`` column."""
    labels = summary.drop_duplicates("step").set_index("step")["label"].to_dict()
    return {step: textwrap.fill(f"{step}: {label}", LABEL_WIDTH) for step, label in sorted(labels.items())}


def draw_sanity(summary: pd.DataFrame) -> Figure:
    """Two panels (Spearman, SSIM): mean similarity per step, one line per method, 95% CI band."""
    labels = step_labels(summary)
    methods = list(dict.fromkeys(summary["method"]))
    colours = dict(zip(methods, sns.color_palette("colorblind", len(methods))))
    figure = Figure(figsize=(max(7.0, 0.9 * len(labels) + 3.0), 8.5), layout="constrained")
    FigureCanvasAgg(figure)
    with sns.axes_style("whitegrid"):
        axes = figure.subplots(2, 1, sharex=True)
    for ax, (measure, title) in zip(axes, PANELS):
        cells = summary[summary["measure"] == measure]
        for method in methods:
            line = cells[cells["method"] == method].sort_values("step")
            ax.plot(line["step"], line["mean"], marker="o", color=colours[method], label=method)
            ax.fill_between(line["step"], line["ci_low"], line["ci_high"], color=colours[method], alpha=0.15, linewidth=0)
        ax.axhline(0.0, color="grey", linewidth=0.8)
        ax.set_ylabel(f"{title}\n(randomised vs trained maps)")
        low = cells["ci_low"].min() if cells["ci_low"].notna().any() else 0.0
        ax.set_ylim(min(-0.1, low - 0.05), 1.05)
    axes[0].set_title("Cascading randomisation, output layer first (mean over images, 95% CI)")
    axes[0].legend(title="method", loc="lower left", fontsize="small")
    axes[-1].set_xticks(list(labels), list(labels.values()), rotation=45, ha="right", fontsize="small")
    axes[-1].set_xlabel("step: layers re-initialised at that step (cumulative)")
    return figure


def sanity_figure_png(summary: pd.DataFrame) -> bytes:
    """The figure as PNG bytes (the caller writes them atomically)."""
    buffer = io.BytesIO()
    draw_sanity(summary).savefig(buffer, format="png", dpi=120)
    return buffer.getvalue()
