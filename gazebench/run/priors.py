"""Gaze priors of a run: the centre-bias map and the evaluated set's fixations.

Two metrics compare a map with more than its own image's gaze:

- ``info_gain`` and the ``*_cb`` metrics measure it against a **centre-bias map**: the mean gaze
  density of the training split (each density sums to 1, so the mean does too), or, when the
  dataset has no training images with gaze, a fixed centred Gaussian (sigma a quarter of the grid);
- ``auc_shuffled`` takes as negatives the **fixations of the other images of the evaluated set**:
  the evaluated set's total fixation counts minus the image's own.

Both are computed once per run (one pass over each split, with a progress bar), saved in the run
directory as ``gaze_priors.npz`` and read back when the run resumes.  The ``centre_bias``
reference map of the leaderboard (a floor) is the same map.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from gazebench.atomic import write_atomic
from gazebench.data.sample import fixation_map
from gazebench.errors import UserError
from gazebench.metrics.centre_bias import gaussian_centre_bias

PRIORS_FILE = "gaze_priors.npz"
GAUSSIAN_SIGMA_FRACTION = 0.25


@dataclass
class GazePriors:
    centre_bias: torch.Tensor  # [G, G], sums to 1
    fixation_total: torch.Tensor  # [G, G] fixation counts of the whole evaluated set
    centre_bias_source: str  # how the centre bias was estimated (recorded in config.yaml)

    def negatives(self, own_fixations: torch.Tensor) -> torch.Tensor:
        """[B, G, G] fixation counts of the other images: the set's total minus each image's own."""
        return (self.fixation_total.to(own_fixations.device) - own_fixations).clamp_min(0)

    def save(self, folder: Path) -> None:
        write_atomic(folder / PRIORS_FILE, _npz_bytes(self))

    @classmethod
    def load(cls, folder: Path) -> GazePriors | None:
        path = folder / PRIORS_FILE
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as arrays:
            return cls(torch.from_numpy(arrays["centre_bias"]), torch.from_numpy(arrays["fixation_total"]), str(arrays["source"]))


def _npz_bytes(priors: GazePriors) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, centre_bias=priors.centre_bias.numpy(), fixation_total=priors.fixation_total.numpy(), source=np.array(priors.centre_bias_source))
    return buffer.getvalue()


def estimate_centre_bias(train_split, grid: int) -> tuple[torch.Tensor, str]:
    """The training split's mean gaze density, or the fixed Gaussian when it has no gaze.

    ``metrics.centre_bias.mean_density`` on a stacked tensor, streamed one image at a time so
    that memory does not grow with the split (REFLACX's train split has thousands of images).
    """
    total = torch.zeros(grid, grid, dtype=torch.float64)
    used = 0
    for index in tqdm(range(len(train_split) if train_split is not None else 0), desc="centre bias (train split)", unit="image", leave=False):
        density = train_split[index].gaze.double()
        if float(density.sum()) > 0:
            total += density / density.sum()
            used += 1
    if used == 0:
        sigma = GAUSSIAN_SIGMA_FRACTION
        return gaussian_centre_bias(grid, grid, sigma).double(), f"fixed Gaussian (sigma {sigma} x grid): no training images with gaze"
    return (total / used), f"mean gaze density of the train split ({used} images)"


def fixation_total(items, indices, grid: int) -> torch.Tensor:
    """Sum of the fixation-count maps of the evaluated items (merged gaze)."""
    total = torch.zeros(grid, grid, dtype=torch.float64)
    for index in tqdm(indices, desc="fixations of the evaluated set", unit="image", leave=False):
        total += fixation_map(items[int(index)].fixations, grid).double()
    return total


def compute_priors(open_train_split, evaluated, indices, grid: int) -> GazePriors:
    """Estimate both priors; ``open_train_split()`` returns the train split or raises UserError."""
    try:
        train_split = open_train_split()
    except UserError:
        train_split = None
    centre_bias, source = estimate_centre_bias(train_split, grid)
    return GazePriors(centre_bias.float(), fixation_total(evaluated, indices, grid).float(), source)
