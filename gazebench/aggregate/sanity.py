"""Sanity check, the summary: mean similarity per (method, step, measure) with patient-bootstrap CIs, and verdicts.

A method whose mean Spearman similarity with the fully randomised model is above ``threshold``
fails: its maps do not depend on what the model learned (the values: ``gazebench.run.sanity``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from gazebench.bootstrap import BOOTSTRAP, bootstrap_ci

# Heuristic cut-off, not from the paper (Adebayo et al. judge the curves by eye): above 0.5,
# more than half of the maps' rank order survives a model whose every weight is random.
DEFAULT_THRESHOLD = 0.5
MEASURES = ("spearman", "ssim")


@dataclass
class SanityResult:
    """The sanity check summarised (``gazebench.api.sanity_check``; ``summary`` is sanity.csv)."""

    summary: pd.DataFrame  # method, step, label, layers, measure, mean, ci_low, ci_high, n, n_nan
    values: pd.DataFrame  # one row per (method, step, image, target, measure)
    groups: list[list[str]]  # layer groups, top first; step k randomises groups[:k]
    unused_layers: list[str]  # parameterised modules the classifier's forward never calls (left as trained)
    threshold: float
    verdicts: dict[str, str] = field(default_factory=dict)  # method -> one line
    failing: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    out: Path | None = None


def shared_prefix(names: list[str]) -> str:
    """The dotted module path that every name starts with ('unet.' for unet.encoder.x, unet.head): left out of labels."""
    parts = [name.split(".")[:-1] for name in names]
    common = []
    for level in zip(*parts):
        if len(set(level)) > 1:
            break
        common.append(level[0])
    return "".join(f"{part}." for part in common)


def group_label(group: list[str], prefix: str = "") -> str:
    """A short axis label for a layer group: its one name, or 'top … bottom (n)', without ``prefix``."""
    names = [name.removeprefix(prefix) for name in group]
    return names[0] if len(names) == 1 else f"{names[0]} … {names[-1]} ({len(names)})"


def summarise(values: pd.DataFrame, groups: list[list[str]], seed: int) -> pd.DataFrame:
    """sanity.csv: per (method, step, measure) the mean over pairs, its patient-bootstrap CI, n and NaN count."""
    prefix = shared_prefix([name for group in groups for name in group])
    labels = ["trained", *(group_label(group, prefix) for group in groups)]
    layers = ["", *(";".join(group) for group in groups)]
    cells = []
    for (method, step, measure), cell in values.groupby(["method", "step", "measure"], sort=False):
        finite = np.isfinite(cell["value"].to_numpy(dtype=float))
        mean = float(cell["value"][finite].mean()) if finite.any() else math.nan
        low, high = bootstrap_ci(cell["value"], cell["patient_id"], n_boot=BOOTSTRAP["replicates"], seed=seed, ci=BOOTSTRAP["level"])
        cells.append({"method": method, "step": step, "label": labels[step], "layers": layers[step], "measure": measure, "mean": mean, "ci_low": low, "ci_high": high, "n": int(finite.sum()), "n_nan": int((~finite).sum())})
    return pd.DataFrame(cells)


def fully_randomised_spearman(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary rows of the mean Spearman similarity at the last step (everything randomised)."""
    return summary[(summary.measure == "spearman") & (summary.step == summary.step.max())]


def failing_methods(summary: pd.DataFrame, threshold: float) -> list[str]:
    """Methods whose mean Spearman similarity at full randomisation is above ``threshold``."""
    final = fully_randomised_spearman(summary)
    return final.loc[final["mean"] > threshold, "method"].tolist()


def verdicts(summary: pd.DataFrame, threshold: float) -> dict[str, str]:
    """method -> one line: FAILS when its mean Spearman at full randomisation is above ``threshold``."""
    final = fully_randomised_spearman(summary)
    lines = {}
    for row in final.itertuples():
        if math.isnan(row.mean):
            lines[row.method] = f"{row.method}: undetermined — no finite Spearman at full randomisation ({row.n_nan} constant or non-finite map(s))"
        elif row.mean > threshold:
            lines[row.method] = f"{row.method}: FAILS — maps survive randomisation (Spearman {row.mean:.2f} at full randomisation > {threshold:g})"
        else:
            lines[row.method] = f"{row.method}: passes — Spearman {row.mean:.2f} at full randomisation (<= {threshold:g})"
    return lines


def summarise_cascade(values: pd.DataFrame, groups: list[list[str]], unused_layers: list[str], warnings: list[str], threshold: float, seed: int) -> SanityResult:
    """The summary, verdicts and failing methods of a cascade's values."""
    summary = summarise(values, groups, seed)
    return SanityResult(summary, values, groups, unused_layers, threshold, verdicts(summary, threshold), failing_methods(summary, threshold), list(warnings))
