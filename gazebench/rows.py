"""One batch's maps -> score rows in DESIGN.md's row schema.

Every (image, target) pair is scored against the merged gaze (``reader`` ``all``); an image that
several radiologists read is also scored against each reader's own gaze.  What a map is scored
against is a ``GazeTargets``: the gaze density and fixations, the run's centre-bias map, the
other images' fixations (shuffled AUC) and, where the data have them, a localisation mask.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from gazebench.data.sample import Batch
from gazebench.metrics.base import GazeTargets
from gazebench.metrics.regions import KEY_COLUMNS as REGION_KEYS
from gazebench.metrics.regions import region_shares
from gazebench.metrics.scoring import score_maps
from gazebench.protocol import protocol_id
from gazebench.store import ROW_SCHEMA


@dataclass
class ExplanationPairs:
    """The (image, target class) pairs of one batch that maps are computed for."""

    rows: list[int]  # batch row of each pair (an image repeats once per target)
    targets: torch.Tensor  # [P] class index each map explains
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


def gaze_groups(run, pairs: ExplanationPairs, samples: list) -> list[GazeGroup]:
    """The merged group (every pair) and, when images have several readers, the per-reader one."""
    merged = GazeGroup(list(range(len(pairs.rows))), pairs.batch, merged_targets(run, pairs, samples))
    readings = [(p, reader, gaze) for p, row in enumerate(pairs.rows) if len(samples[row].readers) > 1 for reader, gaze in samples[row].readers.items()]
    if not readings:
        return [merged]
    positions = [p for p, _, _ in readings]
    device = pairs.batch.gaze.device
    by_reader = pairs.batch.select(positions).with_gaze(
        torch.stack([gaze.gaze for _, _, gaze in readings]).to(device),
        [gaze.fixations.to(device) for _, _, gaze in readings],
        [reader for _, reader, _ in readings],
    )
    # negatives stay the other *images'* fixations (merged), masks stay the image's
    targets = GazeTargets.from_batch(by_reader, centre_bias=merged.targets.centre_bias, negatives=_rows_of(merged.targets.negatives, positions), mask=_rows_of(merged.targets.mask, positions))
    return [merged, GazeGroup(positions, by_reader, targets)]


def _rows_of(tensor: torch.Tensor | None, positions: list[int]) -> torch.Tensor | None:
    return None if tensor is None else tensor[torch.as_tensor(positions, device=tensor.device)]


def merged_targets(run, pairs: ExplanationPairs, samples: list) -> GazeTargets:
    batch = pairs.batch
    device = batch.gaze.device
    return GazeTargets.from_batch(
        batch,
        centre_bias=run.priors.centre_bias.to(device),
        negatives=run.priors.negatives(batch.fixation_maps),
        mask=localisation_masks(run, pairs, samples) if "mask" in run.available else None,
    )


def localisation_masks(run, pairs: ExplanationPairs, samples: list) -> torch.Tensor:
    """[P, G, G] bool: where the finding each map explains is.

    The image's lesion mask for the target class (REFLACX ellipses), else its evidence mask
    (the synthetic data) when the target is a true label of the image; otherwise empty, which
    the localisation metrics score as NaN (never a hit).
    """
    grid = pairs.batch.gaze.shape[-1]
    dataset_classes = [run.class_index[t] for t in pairs.targets.tolist()]
    is_true = true_label(pairs.batch.labels.cpu(), dataset_classes)
    masks = torch.zeros(len(pairs.rows), grid, grid, dtype=torch.bool)
    for p, row in enumerate(pairs.rows):
        sample = samples[row]
        name = run.dataset.class_names[dataset_classes[p]] if dataset_classes[p] >= 0 else None
        if sample.lesions:
            if name in sample.lesions:
                masks[p] = sample.lesions[name]
        elif sample.evidence is not None and is_true[p]:
            masks[p] = sample.evidence
    return masks.to(pairs.batch.gaze.device)


def score_rows(run, pairs: ExplanationPairs, groups: list[GazeGroup], method_name: str, params: dict, maps: list[torch.Tensor | None]) -> pd.DataFrame:
    """Rows of one method (or reference map) for every group; ``maps[i]`` are group i's maps (None: not scored)."""
    frames = [_metric_rows(run, pairs, group, method_name, params, group_maps) for group, group_maps in zip(groups, maps) if group_maps is not None and group.positions]
    if not frames:
        return pd.DataFrame(columns=list(ROW_SCHEMA))
    return pd.concat(frames, ignore_index=True)[list(ROW_SCHEMA)]


def region_share_rows(run, pairs: ExplanationPairs, group: GazeGroup, method_name: str, maps: torch.Tensor) -> pd.DataFrame:
    """One row per map: REGION_KEYS plus each anatomical region's share of the map's mass."""
    shares, names = region_shares(maps, group.batch.regions)
    keys = _base_rows(run, pairs, group, method_name, {})[list(REGION_KEYS)]
    return keys.assign(**{name: shares[:, column].double().cpu().numpy() for column, name in enumerate(names)})


def _metric_rows(run, pairs: ExplanationPairs, group: GazeGroup, method_name: str, params: dict, maps: torch.Tensor) -> pd.DataFrame:
    base = _base_rows(run, pairs, group, method_name, params)
    values = score_maps(maps.detach(), group.targets, run.metrics)  # all metrics at once: they share intermediates
    frames = [base.assign(metric=name, value=values[name].numpy()) for name in run.metrics]
    return pd.concat(frames, ignore_index=True)


def _base_rows(run, pairs: ExplanationPairs, group: GazeGroup, method_name: str, params: dict) -> pd.DataFrame:
    """The row-schema columns other than ``metric`` and ``value``, one row per map of the group."""
    batch = group.batch
    classes = run.adapter.class_names
    rows = torch.tensor([pairs.rows[p] for p in group.positions], device=pairs.probabilities.device)
    probabilities = pairs.probabilities[rows]
    targets = pairs.targets[torch.as_tensor(group.positions, device=pairs.targets.device)].to(rows.device)
    label = true_label(batch.labels.cpu(), [run.class_index[t] for t in targets.tolist()])
    predicted = probabilities.argmax(dim=1)
    target_prob = probabilities.gather(1, targets[:, None])[:, 0]
    if run.dataset.multi_label:
        correct = (target_prob >= 0.5).cpu().numpy() == label
    elif -1 in run.class_index:  # the model's own classes (--target pred): right when its top class is a true label
        correct = true_label(batch.labels.cpu(), [run.class_index[p] for p in predicted.tolist()])
    else:
        correct = (predicted.cpu() == torch.nan_to_num(batch.labels.cpu(), nan=0.0).argmax(dim=1)).numpy()
    return pd.DataFrame(
        {
            "dataset": run.request.data,
            "split": run.request.split,
            "image_id": batch.image_ids,
            "patient_id": batch.patient_ids,
            "reader": batch.readers,
            "target": [classes[t] for t in targets.tolist()],
            "label": label.astype(np.int8),
            "pred": [classes[p] for p in predicted.tolist()],
            "prob": target_prob.cpu().numpy().astype(np.float64),
            "correct": correct,
            "model": run.request.model,
            "checkpoint": run.checkpoint_sha256[:12],
            "method": method_name,
            "method_params": json.dumps(params, sort_keys=True),
            "protocol": protocol_id(run.request.grid, run.dataset.convention),
        }
    )


def true_label(labels: torch.Tensor, classes: list[int]) -> np.ndarray:
    """Whether each row's class (a dataset class index, -1 for a class the data lack) is a true label."""
    index = torch.tensor(classes, dtype=torch.long)
    known = index >= 0
    values = labels.gather(1, index.clamp_min(0)[:, None])[:, 0]
    return ((values == 1) & known).numpy()
