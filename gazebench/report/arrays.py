"""``gazebench score``'s outputs: the CSV of scores (one row per map) and the printed summary."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from gazebench.atomic import write_atomic
from gazebench.outputs import writing
from gazebench.registry import METRICS


def write_scores(table: pd.DataFrame, out: Path) -> None:
    """The scores as CSV (``index`` then one column per metric), written atomically; a failed write (permission, no space) is one UserError line."""
    with writing(Path(out), "no scores were written: choose another --out or free some space"):
        write_atomic(Path(out), table.to_csv(index=False))


def summary_markdown(table: pd.DataFrame, left_out: dict[str, str] | None = None) -> str:
    """metric, direction, mean over defined values, n defined, n NaN -- one line per metric; then the metrics left out and why."""
    lines = ["| metric | better | mean | n | NaN |", "|---|---|---|---|---|"]
    for name in table.columns.drop("index"):
        column = table[name]
        finite = column[np.isfinite(column)]
        mean = f"{finite.mean():.4f}" if len(finite) else "n/a"
        better = "higher" if METRICS.get(name).higher_is_better else "lower"
        lines.append(f"| {name} | {better} | {mean} | {len(finite)} | {len(column) - len(finite)} |")
    lines += [f"left out: {name} ({reason})" for name, reason in (left_out or {}).items()]
    return "\n".join(lines) + "\n"
