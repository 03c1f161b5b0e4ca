"""What a batch's maps explain and what they are scored against.

``explanation_pairs`` picks the (image, target class) pairs of a batch (DESIGN.md's row schema);
``gaze_groups`` says which gaze each pair is scored against: every pair against the merged gaze
(``reader`` ``all``) and, for images that several radiologists read, each reader's own gaze as
well.  What a map is scored against is a ``GazeTargets``: the gaze density and fixations, the
run's centre-bias map, the other images' fixations (shuffled AUC) and, where the data have them,
a localisation mask.  Everything comes from the collated batch; nothing leaves the device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gazebench.data.sample import Batch
from gazebench.metrics.base import GazeTargets
from gazebench.models.base import ModelAdapter


@dataclass
class ExplanationPairs:
    """The (image, target class) pairs of one batch that maps are computed for."""

    rows: list[int]  # batch row of each pair (an image repeats once per target)
    targets: torch.Tensor  # [P] class index (model output) each map explains
    probabilities: torch.Tensor  # [B, C] model probabilities of the batch's images
    batch: Batch  # the batch's rows repeated in pair order


@dataclass
class GazeGroup:
    """Pairs scored against one gaze source: the merged gaze, or each reader's own."""

    positions: list[int]  # which pairs (indices into ExplanationPairs.rows)
    batch: Batch  # their rows, with the gaze they are scored against
    targets: GazeTargets

    @property
    def per_reader(self) -> bool:
        return any(reader != "all" for reader in self.batch.readers)


@torch.no_grad()
def explanation_pairs(adapter: ModelAdapter, batch: Batch, target: str, multi_label: bool) -> ExplanationPairs:
    """Which classes each image's maps explain (DESIGN.md's row schema).

    ``label``: the true class (single-label) or every positive label (multi-label);
    ``pred``: the top predicted class (single-label) or every class with probability >= 0.5,
    the top one when none is (multi-label).  An image without a positive label has no pair.
    """
    probabilities = adapter.probabilities(adapter.logits(batch.images, *adapter.inputs_from(batch)))
    if target == "label":
        chosen = batch.labels == 1
        if not multi_label:
            chosen &= torch.cumsum(chosen.int(), dim=1) == 1  # the first positive only
    elif multi_label:
        chosen = probabilities >= 0.5
        top = F.one_hot(probabilities.argmax(dim=1), probabilities.shape[1]).bool()
        chosen = torch.where(chosen.any(dim=1, keepdim=True), chosen, top)
    else:
        chosen = F.one_hot(probabilities.argmax(dim=1), probabilities.shape[1]).bool()
    rows, targets = chosen.nonzero(as_tuple=True)
    return ExplanationPairs(rows.tolist(), targets, probabilities, batch.select(rows.tolist()))


def gaze_groups(pairs: ExplanationPairs, merged: GazeTargets) -> list[GazeGroup]:
    """The merged group (every pair, scored against ``merged``) and, when images have several readers, the per-reader one.

    The per-reader group scores each of its rows against one reader's gaze; its shuffled-AUC
    negatives stay the other *images'* fixations (merged), its masks the image's.
    """
    merged_group = GazeGroup(list(range(len(pairs.rows))), pairs.batch, merged)
    readings = pairs.batch.readings
    if readings is None:
        return [merged_group]
    by_reader = pairs.batch.with_readings()
    targets = GazeTargets.from_batch(by_reader, centre_bias=merged.centre_bias, negatives=_rows_of(merged.negatives, readings.rows), mask=_rows_of(merged.mask, readings.rows))
    return [merged_group, GazeGroup(list(readings.rows), by_reader, targets)]


def _rows_of(tensor: torch.Tensor | None, positions: list[int]) -> torch.Tensor | None:
    return None if tensor is None else tensor[torch.as_tensor(positions, device=tensor.device)]


def localisation_masks(pairs: ExplanationPairs, class_index: tuple[int, ...], dataset_classes: tuple[str, ...]) -> torch.Tensor:
    """[P, G, G] bool: where the finding each map explains is.

    The image's lesion mask for the target class (REFLACX ellipses), else its evidence mask
    (the synthetic data) when the target is a true label of the image; otherwise empty, which
    the localisation metrics score as NaN (never a hit).  ``class_index`` maps each model
    output to a dataset class (-1: none); ``dataset_classes`` names the dataset's classes.
    """
    batch = pairs.batch
    device = batch.gaze.device
    targets = [class_index[t] for t in pairs.targets.tolist()]
    masks = torch.zeros(batch.gaze.shape, dtype=torch.bool, device=device)
    annotated = batch.annotated if batch.annotated is not None else torch.zeros(len(targets), dtype=torch.bool, device=device)
    for name, lesion in batch.lesions.items():
        explains = torch.tensor([t >= 0 and dataset_classes[t] == name for t in targets], device=device)
        masks = torch.where((annotated & explains)[:, None, None], lesion, masks)
    if batch.evidence is not None:
        is_true = true_label(batch.labels, targets)
        masks = torch.where((~annotated & is_true)[:, None, None], batch.evidence, masks)
    return masks


def true_label(labels: torch.Tensor, classes: list[int]) -> torch.Tensor:
    """[P] bool on the labels' device: whether each row's class (a dataset class index, -1 for a
    class the data lack) is a true label of its image (``labels`` [P, C])."""
    index = torch.tensor(classes, dtype=torch.long, device=labels.device)
    known = index >= 0
    values = labels.gather(1, index.clamp_min(0)[:, None])[:, 0]
    return (values == 1) & known
