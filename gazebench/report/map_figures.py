"""Figures that show maps: the qualitative grid (Kim et al.'s poster) and the maps overlaid on the radiograph.

Both draw the kept maps of a run (``aggregate.examples``): the radiograph, every map and the
gaze density live on the same scoring grid (the image letterboxed, row 0 at the top), so they
are drawn with the same ``imshow`` extent and orientation and a map sits on the anatomy it
scores.  Each map is shown divided by its own maximum (a map's scale is arbitrary and differs
between methods); the colour bar says so.  Matplotlib ``Figure`` with the Agg canvas, no pyplot.
"""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from gazebench.aggregate.examples import Examples, Pick

MAP_COLOURS = "viridis"  # perceptually uniform and colour-blind safe
PANEL_INCHES = (1.7, 1.25)  # the side of one panel: up to WIDE_AFTER columns, and beyond (keeps the PNG of `all` methods near 1 MB)
WIDE_AFTER = 9
OVERLAY_OPACITY = 0.8  # of a map's peak over the radiograph


def unit_scaled(values: np.ndarray) -> np.ndarray:
    """The map divided by its maximum (clipped at 0), so that every panel spans 0..1; all zeros stay zeros."""
    values = np.clip(np.nan_to_num(values), 0.0, None)
    peak = values.max()
    return values / peak if peak > 0 else values


def overlay_rgba(scaled: np.ndarray) -> np.ndarray:
    """[G, G, 4] colours of a 0..1 map whose opacity grows with the value, so the anatomy shows where the map is low."""
    rgba = colormaps[MAP_COLOURS](scaled)
    rgba[..., 3] = OVERLAY_OPACITY * np.sqrt(scaled)
    return rgba


def columns_of(examples: Examples) -> list[str]:
    """The panels of a row after the radiograph: every method with kept maps, then the gaze."""
    return [*examples.methods, "gaze"]


def panel_map(examples: Examples, pick: Pick, column: str) -> np.ndarray | None:
    if column == "gaze":
        return examples.gaze.get(pick.image_id)
    return examples.maps.get((column, pick.image_id, pick.target))


def row_title(pick: Pick) -> str:
    score = "-" if pick.score != pick.score else f"{pick.score:.2f}"  # NaN: the image has no defined score
    return f"{pick.label}: {pick.metric} {score}\n{pick.image_id[:14]}\nclass {pick.target}"


def draw_example_grid(examples: Examples, picks: list[Pick], overlay: bool = False) -> Figure:
    """One row per picked image: the radiograph, each method's map, the gaze density.

    ``overlay``: each map drawn over the radiograph (semi-transparent) instead of on its own.
    """
    columns = columns_of(examples)
    side = PANEL_INCHES[len(columns) + 1 > WIDE_AFTER]
    figure = Figure(figsize=(side * (len(columns) + 1) + 1.0, side * len(picks) + 0.9), layout="constrained")
    FigureCanvasAgg(figure)
    axes = np.atleast_2d(figure.subplots(len(picks), len(columns) + 1, squeeze=False))
    for row, pick in enumerate(picks):
        radiograph = examples.radiograph.get(pick.image_id)
        axes[row, 0].imshow(radiograph, cmap="gray", vmin=0.0, vmax=1.0, interpolation="bilinear")
        axes[row, 0].set_ylabel(row_title(pick), fontsize="small", rotation=0, ha="right", va="center")
        for column, name in enumerate(columns, start=1):
            values = panel_map(examples, pick, name)
            ax = axes[row, column]
            if values is None:
                ax.text(0.5, 0.5, "not kept", ha="center", va="center", transform=ax.transAxes, fontsize="small")
            elif overlay:
                ax.imshow(radiograph, cmap="gray", vmin=0.0, vmax=1.0, interpolation="bilinear")
                ax.imshow(overlay_rgba(unit_scaled(values)), interpolation="bilinear")
            else:
                ax.imshow(unit_scaled(values), cmap=MAP_COLOURS, vmin=0.0, vmax=1.0, interpolation="bilinear")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for column, name in enumerate(["radiograph", *columns]):
        axes[0, column].set_title(name, fontsize="small")
    colour_bar = figure.colorbar(ScalarMappable(Normalize(0.0, 1.0), colormaps[MAP_COLOURS]), ax=axes, shrink=0.8, pad=0.01)
    colour_bar.set_label("map / its maximum" + ("\n(opacity grows with it)" if overlay else ""))
    kind = "overlaid on the radiograph" if overlay else "beside the radiograph and the gaze density"
    automatic = picks and all(pick.label != "chosen" for pick in picks)
    figure.suptitle(f"Maps {kind}: best, median and worst kept image by mean {picks[0].metric} over methods" if automatic else f"Maps {kind}")
    return figure
