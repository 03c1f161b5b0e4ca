"""One-vs-rest AUROC and its patient-bootstrap interval: one implementation for training and tables.

Training reports the selected model's test AUROC with it (``models.training.loop``) and the
studies' tables read the runs' stored predictions with it (``aggregate.classification``), so the
two never disagree.  The bootstrap draws patients exactly as every other interval does
(``gazebench.bootstrap``).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from scipy.stats import rankdata

from gazebench.bootstrap import BOOTSTRAP, patient_draws, percentile_interval


def auroc_ovr(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """One-vs-rest AUROC per class [C] (float64) from scores [N, C] and labels [N, C] (1 / 0 / NaN).

    Mann-Whitney form: ``(sum of positive ranks - P(P+1)/2) / (P * N)`` with average ranks for
    ties (a tied positive/negative pair counts one half), over the images whose label for the
    class is known (NaN = uncertain, left out).  NaN for a class without positives or negatives.
    """
    scores, labels = float64(probs), float64(labels)
    aurocs = torch.full((scores.shape[1],), math.nan, dtype=torch.float64)
    for cls in range(scores.shape[1]):
        known = ~labels[:, cls].isnan()
        positive = labels[known, cls] == 1
        n_pos, n_neg = int(positive.sum()), int((~positive).sum())
        if n_pos == 0 or n_neg == 0:
            continue
        ranks = torch.from_numpy(rankdata(scores[known, cls].numpy(), method="average"))
        aurocs[cls] = (ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return aurocs


def float64(values) -> torch.Tensor:
    """A float64 CPU tensor (a copy) of a tensor or an array."""
    if isinstance(values, torch.Tensor):
        return values.detach().to("cpu", torch.float64)
    return torch.tensor(np.asarray(values), dtype=torch.float64)


def auroc_replicates(probs: torch.Tensor, labels: torch.Tensor, groups: Sequence[str], n_boot: int = BOOTSTRAP["replicates"], seed: int = 0) -> np.ndarray:
    """[n_boot, C] AUROC of each patient-bootstrap replicate (NaN where a class lacks positives or negatives).

    ``groups`` (patient ids) label the rows; a replicate draws groups with replacement and takes
    all their images, so images of one patient move together (groups in sorted-id order).
    """
    probs, labels = float64(probs), float64(labels)
    _, group_index = np.unique(np.asarray(groups), return_inverse=True)
    n_groups = int(group_index.max()) + 1 if len(groups) else 0
    members = [np.flatnonzero(group_index == g) for g in range(n_groups)]
    replicates = []
    for drawn in patient_draws(n_groups, n_boot, seed) if n_groups else []:
        rows = torch.from_numpy(np.concatenate([members[g] for g in drawn]))
        replicates.append(auroc_ovr(probs[rows], labels[rows]))
    return torch.stack(replicates).numpy() if replicates else np.full((0, probs.shape[1]), np.nan)


def interval_of(replicates: np.ndarray, level: float = BOOTSTRAP["level"]) -> tuple[float, float]:
    """The percentile interval of one statistic's replicates, ignoring undefined (NaN) ones; (NaN, NaN) when none is defined."""
    defined = replicates[~np.isnan(replicates)]
    return tuple(float(v) for v in percentile_interval(defined, level)) if len(defined) else (math.nan, math.nan)


def bootstrap_auroc_ci(
    probs: torch.Tensor,
    labels: torch.Tensor,
    groups: Sequence[str],
    n_boot: int = BOOTSTRAP["replicates"],
    seed: int = 0,
    level: float = BOOTSTRAP["level"],
) -> list[tuple[float, float]]:
    """Percentile bootstrap interval of each class's one-vs-rest AUROC, resampling ``groups`` (patients).

    Replicates where a class lacks positives or negatives are left out of that class's interval;
    a class with no scorable replicate gets (NaN, NaN).
    """
    return [interval_of(column, level) for column in auroc_replicates(probs, labels, groups, n_boot, seed).T]
