"""The loss pieces more than one model uses; each model's ``batch_loss`` combines them.

- ``class_loss``: BCE with logits against the label vectors [B, C] (one-hot for single-label
  data), mean over the known (image, class) entries: NaN labels (uncertain) are left out.
  ``classification_loss`` is the same on an adapter's logits for a batch (the whole training
  loss of the plain classifiers: densenet121, effnet_baseline, temporal_gaze, the open families).
- The EGD U-Nets' decoder target (unet_gaze, heatmap_generator): ``gaze_target`` scales the gaze
  density, resized to the model input, to a maximum of 1; ``gaze_bce`` is the per-pixel BCE over
  the maps that have gaze; ``gaze_classification_loss`` is the paper's
  ``gamma * class_loss + (1 - gamma) * gaze_bce``.
- The feature-grid gaze target (densenet_aug, mimic_guided): ``pool_gaze`` area-pools the density
  onto the feature grid, ``has_gaze`` says which images have any, ``gaze_heatmap_target`` scales
  the pooled map to a maximum of 1 and ``gaze_mse`` compares a gaze head's sigmoid with it.

Images without gaze (an all-zero density) have no gaze target: they are left out of the gaze
terms, which then average over the images that have one (and are 0 when none has).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gazebench.data.sample import Batch
from gazebench.models.base import ModelAdapter

# ----------------------------------------------------------------------------- class labels


def class_loss(class_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """BCE with logits against the label vectors [B, C], mean over the known entries (NaN labels left out)."""
    known = ~labels.isnan()
    if not bool(known.any()):
        return class_logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(class_logits[known], labels[known].to(class_logits.dtype))


def classification_loss(adapter: ModelAdapter, batch: Batch) -> torch.Tensor:
    """``class_loss`` of the adapter's logits for ``batch`` (image and any extra inputs): a ``ModelSpec.loss``."""
    return class_loss(adapter.logits(batch.images, *adapter.inputs_from(batch)), batch.labels)


# ----------------------------------------------------------------------------- gaze at the input size


def has_gaze(gaze: torch.Tensor) -> torch.Tensor:
    """[B] bool: which maps [B, ...] have gaze (not all zero)."""
    return gaze.flatten(1).amax(dim=1) > 0


def gaze_target(gaze: torch.Tensor, size: int) -> torch.Tensor:
    """Gaze densities [B, G, G] -> decoder targets [B, 1, size, size], each scaled to a maximum of 1.

    Resized like the images (bilinear, antialiased: non-negative weights, so no negative
    values); an all-zero density (an image without gaze) stays all zero.
    """
    target = gaze.unsqueeze(1).float()
    if target.shape[-1] != size:
        target = F.interpolate(target, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    peak = target.amax(dim=(1, 2, 3), keepdim=True)
    return target / peak.clamp_min(torch.finfo(target.dtype).tiny)


def gaze_bce(gaze_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-pixel BCE with logits, mean over the pixels of the maps that have gaze (0 if none has)."""
    with_gaze = has_gaze(targets)
    if not bool(with_gaze.any()):
        return gaze_logits.new_zeros(())
    return F.binary_cross_entropy_with_logits(gaze_logits[with_gaze], targets[with_gaze])


def gaze_classification_loss(
    class_logits: torch.Tensor,
    gaze_logits: torch.Tensor,
    labels: torch.Tensor,
    targets: torch.Tensor,
    gamma: float,
) -> torch.Tensor:
    """The EGD paper's loss, ``gamma * class_loss + (1 - gamma) * gaze_bce``; ``targets`` from ``gaze_target``."""
    return gamma * class_loss(class_logits, labels) + (1 - gamma) * gaze_bce(gaze_logits, targets)


# ----------------------------------------------------------------------------- gaze on the feature grid


def pool_gaze(gaze: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Gaze densities [B, G, G] -> [B, 1, h, w]: the mean density over each feature cell (area pooling).

    Proportional to the share of gaze inside each cell (exactly, when h and w divide G); an
    all-zero density (no gaze) stays all zero.
    """
    return F.adaptive_avg_pool2d(gaze.unsqueeze(1).float(), size)


def gaze_heatmap_target(gaze: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``E``: the density pooled onto the feature grid and divided by its maximum ([0, 1], peak 1)."""
    pooled = pool_gaze(gaze, size)
    peak = pooled.amax(dim=(1, 2, 3), keepdim=True)
    return pooled / peak.clamp_min(torch.finfo(pooled.dtype).tiny)


def gaze_mse(gaze_logits: torch.Tensor, gaze: torch.Tensor) -> torch.Tensor:
    """MSE(sigmoid(gaze_logits), E), mean over the cells of the images with gaze (0 if none has)."""
    with_gaze = has_gaze(gaze)
    if not bool(with_gaze.any()):
        return gaze_logits.sum() * 0.0
    target = gaze_heatmap_target(gaze[with_gaze], gaze_logits.shape[-2:]).to(gaze_logits.dtype)
    return F.mse_loss(gaze_logits[with_gaze].sigmoid(), target)
