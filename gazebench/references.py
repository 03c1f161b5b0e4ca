"""Reference maps scored beside every method: the floors and the inter-observer ceiling.

- ``centre_bias`` (floor): the run's centre-bias map (the training split's mean gaze density),
  the same for every image -- a method that does not beat it has learnt nothing image-specific;
- ``uniform`` (floor): a constant map -- chance.  Metrics that need a map with some variation
  (CC, NSS, SSIM, SIM, the AUCs) are undefined (NaN) for it by construction; KL and information
  gain are defined;
- ``inter_observer`` (ceiling): for an image that several radiologists read, the mean gaze
  density of the *other* readers, scored against each reader's own gaze (per-reader rows only).
"""

from __future__ import annotations

import torch

from gazebench.leaderboard import REFERENCE_METHODS
from gazebench.rows import ExplanationPairs, GazeGroup

__all__ = ["REFERENCE_METHODS", "reference_maps"]  # REFERENCE_METHODS: name -> role (floor / ceiling)


def reference_maps(name: str, priors, pairs: ExplanationPairs, groups: list[GazeGroup], samples: list) -> list[torch.Tensor | None]:
    """Each group's maps for reference ``name`` (None where the reference does not apply)."""
    grid = pairs.batch.gaze.shape[-1]
    device = pairs.batch.gaze.device
    if name == "inter_observer":
        return [_other_readers(group, pairs, samples).to(device) if group.per_reader else None for group in groups]
    if name == "centre_bias":
        single = priors.centre_bias.to(device)
    elif name == "uniform":
        single = torch.full((grid, grid), 1.0 / grid**2, device=device)
    else:
        raise KeyError(name)
    return [single.expand(len(group.positions), grid, grid) for group in groups]


def _other_readers(group: GazeGroup, pairs: ExplanationPairs, samples: list) -> torch.Tensor:
    """[R, G, G]: per reader row, the mean gaze density of the image's other readers."""
    maps = []
    for position, reader in zip(group.positions, group.batch.readers):
        readers = samples[pairs.rows[position]].readers
        maps.append(torch.stack([gaze.gaze for other, gaze in readers.items() if other != reader]).mean(dim=0))
    return torch.stack(maps)
