"""The metric interface: (maps, targets) -> one value per sample.

A metric declares what it consumes (``needs``, fields of ``GazeTargets``: the gaze ``density``,
the ``fixations`` counts, the ``centre_bias`` map, the shuffled-AUC ``negatives`` or a
localisation ``mask``), its direction (``higher_is_better``) and its range; ``settings`` are
recorded in the run's config.yaml.  Degenerate inputs (constant map, NaN/inf, no fixations,
empty mask) give NaN, never a crash.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar

import torch

from gazebench.data.sample import Batch

NEEDS = ("density", "fixations", "centre_bias", "negatives", "mask")


@dataclass
class GazeTargets:
    """What one batch of maps ``[B, H, W]`` is scored against (``None``: not available).

    - ``density``: gaze densities ``[B, H, W]``, each summing to 1 (all zero without gaze);
    - ``fixations``: fixation counts per pixel ``[B, H, W]`` (a binary map is a count map);
    - ``centre_bias``: one centre-bias density ``[H, W]`` summing to 1 (the training split's
      mean gaze density, or a fixed Gaussian);
    - ``negatives``: per image, the fixation counts of the *other* images of the evaluated set
      ``[B, H, W]`` (shuffled AUC);
    - ``mask``: a localisation mask per map ``[B, H, W]`` bool (lesion / evidence / region).
    """

    density: torch.Tensor | None = None
    fixations: torch.Tensor | None = None
    centre_bias: torch.Tensor | None = None
    negatives: torch.Tensor | None = None
    mask: torch.Tensor | None = None

    @classmethod
    def from_batch(cls, batch: Batch, **extra) -> "GazeTargets":
        """The batch's density and fixation counts, plus any of the other fields."""
        return cls(density=batch.gaze, fixations=batch.fixation_maps, **extra)

    def available(self) -> set[str]:
        return {f.name for f in fields(self) if getattr(self, f.name) is not None}

    def select(self, rows: list[int]) -> "GazeTargets":
        """The targets of some rows (``centre_bias`` is shared by all rows)."""
        index = torch.as_tensor(rows, dtype=torch.long)
        pick = lambda t: None if t is None else t[index.to(t.device)]  # noqa: E731
        return GazeTargets(pick(self.density), pick(self.fixations), self.centre_bias, pick(self.negatives), pick(self.mask))


class Metric:
    name: ClassVar[str]
    needs: ClassVar[tuple[str, ...]]  # fields of GazeTargets, see NEEDS
    higher_is_better: ClassVar[bool]
    value_range: ClassVar[tuple[float, float]]
    default_settings: ClassVar[dict] = {}

    def __init__(self, **settings):
        unknown = set(settings) - set(self.default_settings)
        if unknown:
            raise ValueError(f"{self.name}: unknown settings {sorted(unknown)}")
        self.settings = {**self.default_settings, **settings}

    def compute(self, maps: torch.Tensor, targets: GazeTargets) -> torch.Tensor:
        """Maps [B, H, W] against ``targets`` -> [B] float (NaN where undefined)."""
        raise NotImplementedError

    def __call__(self, maps: torch.Tensor, targets: GazeTargets | Batch) -> torch.Tensor:
        if isinstance(targets, Batch):
            targets = GazeTargets.from_batch(targets)
        missing = [need for need in self.needs if need not in targets.available()]
        if missing:
            raise ValueError(f"metric {self.name} needs {', '.join(missing)}, which these targets lack")
        return self.compute(maps.float(), targets)


def missing_needs(metric: type[Metric] | Metric, available: set[str]) -> list[str]:
    """What a metric needs that is not ``available`` (empty: it can be computed)."""
    return [need for need in metric.needs if need not in available]


def feedable_metrics(names: list[str], available: set[str]) -> tuple[dict[str, Metric], dict[str, list[str]]]:
    """Instantiate the registered metrics ``names``: (those ``available`` can feed, the others -> what they miss)."""
    from gazebench.registry import METRICS

    chosen, unmet = {}, {}
    for name in names:
        metric = METRICS.get(name)()
        missing = missing_needs(metric, available)
        if missing:
            unmet[name] = missing
        else:
            chosen[name] = metric
    return chosen, unmet
