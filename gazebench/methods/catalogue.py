"""``gazebench list methods``: every registered method with its family, cost, source library and defaults."""

from __future__ import annotations

from gazebench.methods.specs import set_members, set_names
from gazebench.registry import METHODS

HEADER = ("method", "family", "passes per image (fwd / bwd)", "library", "map", "parameters (defaults)")


def method_row(name: str) -> tuple[str, ...]:
    method_class = METHODS.get(name)
    method = method_class()
    forward, backward = method.passes()
    params = ", ".join(f"{key}={value}" for key, value in method.params.items()) or "-"
    return name, method_class.family, f"{forward} / {backward}", method_class.library, method_class.postprocess, params


def methods_table() -> str:
    """A Markdown table of the registered methods, then the named sets."""
    rows = [method_row(name) for name in METHODS.fixed_names()]
    widths = [max(len(str(row[column])) for row in [HEADER, *rows]) for column in range(len(HEADER))]
    line = lambda cells: "| " + " | ".join(str(cell).ljust(width) for cell, width in zip(cells, widths)) + " |"
    lines = [line(HEADER), "|" + "|".join("-" * (width + 2) for width in widths) + "|", *map(line, rows), ""]
    lines += [f"set {name}: {', '.join(set_members(name))}" for name in set_names()]
    lines.append("map: the protocol's post-processing of the raw map (abs: magnitude; relu: positive evidence), then channels summed and bilinear resampling to the grid")
    lines.append("parameters: --methods NAME:key=value,key=value (e.g. smoothgrad:n_samples=25,stdev=0.1); C = channels of the model's cam_layer")
    return "\n".join(lines)
