"""The metric interface: (maps, batch) -> one value per sample.

A metric declares what it consumes (``needs``: the gaze ``density`` or the ``fixations``), its
direction (``higher_is_better``) and its range; ``settings`` are recorded in the run's
config.yaml.  Degenerate inputs (constant map, NaN/inf, no fixations) give NaN, never a crash.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from gazebench.data.sample import Batch


class Metric:
    name: ClassVar[str]
    needs: ClassVar[str]  # "density" or "fixations"
    higher_is_better: ClassVar[bool]
    value_range: ClassVar[tuple[float, float]]
    default_settings: ClassVar[dict] = {}

    def __init__(self, **settings):
        unknown = set(settings) - set(self.default_settings)
        if unknown:
            raise ValueError(f"{self.name}: unknown settings {sorted(unknown)}")
        self.settings = {**self.default_settings, **settings}

    def compute(self, maps: torch.Tensor, density: torch.Tensor, fixation_maps: torch.Tensor) -> torch.Tensor:
        """Maps [B, H, W] against densities [B, H, W] / fixation counts [B, H, W] -> [B] float."""
        raise NotImplementedError

    def __call__(self, maps: torch.Tensor, batch: Batch) -> torch.Tensor:
        return self.compute(maps.float(), batch.gaze.float(), batch.fixation_maps.float())
