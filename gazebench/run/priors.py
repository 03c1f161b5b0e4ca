"""Gaze priors of a run: the centre-bias map and the evaluated set's fixations.

Two metrics compare a map with more than its own image's gaze:

- ``info_gain`` and the ``*_cb`` metrics measure it against a **centre-bias map**: the mean gaze
  density of the training split (each density sums to 1, so the mean does too), or, when the
  dataset has no training images with gaze, a fixed centred Gaussian (sigma a quarter of the grid);
- ``auc_shuffled`` takes as negatives the **fixations of the other images of the evaluated set**:
  the evaluated set's total fixation counts minus the image's own.

Both are computed once per run (one pass over each split, with a progress bar), saved in the run
directory as ``gaze_priors.npz`` and read back when the run resumes.  An image file that does
not decode is skipped and counted (``unreadable_train``, ``unreadable_evaluated``; the train count
also in ``centre_bias_source``), or stops the run with ``strict``.  The ``centre_bias``
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
from gazebench.data.loading import Unreadable, iter_items
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
    unreadable_train: int = 0  # train-split images skipped because their file does not decode
    unreadable_evaluated: int = 0  # evaluated images skipped (not in fixation_total; the run skips them too)

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
            # files written before the counts existed come from runs that stopped on unreadable images: 0
            train, evaluated = (int(n) for n in arrays["unreadable"]) if "unreadable" in arrays.files else (0, 0)
            return cls(torch.from_numpy(arrays["centre_bias"]), torch.from_numpy(arrays["fixation_total"]), str(arrays["source"]), train, evaluated)


def _npz_bytes(priors: GazePriors) -> bytes:
    buffer = io.BytesIO()
    np.savez(
        buffer,
        centre_bias=priors.centre_bias.numpy(),
        fixation_total=priors.fixation_total.numpy(),
        source=np.array(priors.centre_bias_source),
        unreadable=np.array([priors.unreadable_train, priors.unreadable_evaluated], dtype=np.int64),
    )
    return buffer.getvalue()


def estimate_centre_bias(train_split, grid: int, strict: bool = False, skipped: list[Unreadable] | None = None) -> tuple[torch.Tensor, str]:
    """The training split's mean gaze density, or the fixed Gaussian when it has no gaze.

    ``metrics.centre_bias.mean_density`` on a stacked tensor, streamed one image at a time so
    that memory does not grow with the split (REFLACX's train split has thousands of images).
    Unreadable images are appended to ``skipped`` (and named in the source) unless ``strict``.
    """
    skipped = [] if skipped is None else skipped
    total = torch.zeros(grid, grid, dtype=torch.float64)
    used = 0
    indices = tqdm(range(len(train_split) if train_split is not None else 0), desc="centre bias (train split)", unit="image", leave=False)
    for sample in iter_items(train_split, indices, strict, skipped):
        density = sample.gaze.double()
        if float(density.sum()) > 0:
            total += density / density.sum()
            used += 1
    unreadable = f"; {len(skipped)} unreadable image(s) skipped" if skipped else ""
    if used == 0:
        sigma = GAUSSIAN_SIGMA_FRACTION
        return gaussian_centre_bias(grid, grid, sigma).double(), f"fixed Gaussian (sigma {sigma} x grid): no training images with gaze{unreadable}"
    return (total / used), f"mean gaze density of the train split ({used} images{unreadable})"


def fixation_total(items, indices, grid: int, strict: bool = False, skipped: list[Unreadable] | None = None) -> torch.Tensor:
    """Sum of the fixation-count maps of the evaluated items (merged gaze); unreadable ones as above."""
    skipped = [] if skipped is None else skipped
    total = torch.zeros(grid, grid, dtype=torch.float64)
    for sample in iter_items(items, tqdm(indices, desc="fixations of the evaluated set", unit="image", leave=False), strict, skipped):
        total += fixation_map(sample.fixations, grid).double()
    return total


def compute_priors(open_train_split, evaluated, indices, grid: int, strict: bool = False) -> GazePriors:
    """Estimate both priors; ``open_train_split()`` returns the train split or raises UserError.

    Images whose file does not decode are skipped and counted on the result, or, with
    ``strict``, the first one stops with its ``UnreadableImage``.
    """
    try:
        train_split = open_train_split()
    except UserError:
        train_split = None
    train_skipped: list[Unreadable] = []
    evaluated_skipped: list[Unreadable] = []
    centre_bias, source = estimate_centre_bias(train_split, grid, strict, train_skipped)
    total = fixation_total(evaluated, indices, grid, strict, evaluated_skipped)
    return GazePriors(centre_bias.float(), total.float(), source, len(train_skipped), len(evaluated_skipped))
