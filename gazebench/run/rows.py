"""One batch's maps -> score rows in DESIGN.md's row schema, and region-share rows.

Rows are built from a small frozen ``RowContext`` (what every row of the run shares) and the
explicit pairs, gaze groups and maps of one batch; nothing else is read.  Every (image, target)
pair is scored against the merged gaze (``reader`` ``all``); an image that several radiologists
read is also scored against each reader's own gaze (``gazebench.run.pairs.gaze_groups``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from gazebench.data.sample import Batch
from gazebench.metrics.base import Metric
from gazebench.metrics.regions import region_shares
from gazebench.metrics.scoring import score_maps
from gazebench.run.pairs import ExplanationPairs, GazeGroup, true_label
from gazebench.run.store import PREDICTION_SCHEMA, REGION_KEYS, ROW_SCHEMA


@dataclass(frozen=True)
class RowContext:
    """What every row of a run shares: the columns that do not depend on the map, and the class bookkeeping."""

    dataset: str  # dataset name (``synth``, ``egd``, ...)
    split: str
    model: str
    checkpoint: str  # the checkpoint's sha256 (rows keep its first 12 characters)
    protocol: str  # protocol id
    class_names: tuple[str, ...]  # the model's outputs
    class_index: tuple[int, ...]  # model output -> dataset class index (-1: a class the data lack)
    dataset_classes: tuple[str, ...]  # the dataset's class names
    multi_label: bool


def score_rows(context: RowContext, pairs: ExplanationPairs, groups: list[GazeGroup], method_name: str, params: dict, maps: list[torch.Tensor | None], metrics: dict[str, Metric]) -> pd.DataFrame:
    """Rows of one method (or reference map) for every group; ``maps[i]`` are group i's maps (None: not scored)."""
    frames = [_metric_rows(context, pairs, group, method_name, params, group_maps, metrics) for group, group_maps in zip(groups, maps) if group_maps is not None and group.positions]
    if not frames:
        return pd.DataFrame(columns=list(ROW_SCHEMA))
    return pd.concat(frames, ignore_index=True)[list(ROW_SCHEMA)]


def region_share_rows(context: RowContext, pairs: ExplanationPairs, group: GazeGroup, method_name: str, maps: torch.Tensor) -> pd.DataFrame:
    """One row per map: REGION_KEYS plus each anatomical region's share of the map's mass."""
    shares, names = region_shares(maps, group.batch.regions)
    keys = _base_rows(context, pairs, group, method_name, {})[list(REGION_KEYS)]
    return keys.assign(**{name: shares[:, column].double().cpu().numpy() for column, name in enumerate(names)})


def prediction_rows(context: RowContext, batch: Batch, probabilities: torch.Tensor) -> pd.DataFrame:
    """PREDICTION_SCHEMA rows: each image's probability of each model output and its label for it
    (1 / 0, NaN when uncertain or when the data lack the class), so that tables can compute AUROC."""
    n_images, n_classes = probabilities.shape
    labels = np.full((n_images, n_classes), np.nan)
    dataset_labels = batch.labels.detach().cpu().double().numpy()
    for output, index in enumerate(context.class_index):
        if index >= 0:
            labels[:, output] = dataset_labels[:, index]
    return pd.DataFrame(
        {
            "dataset": context.dataset,
            "split": context.split,
            "image_id": np.repeat(batch.image_ids, n_classes),
            "patient_id": np.repeat(batch.patient_ids, n_classes),
            "model": context.model,
            "checkpoint": context.checkpoint[:12],
            "class": np.tile(context.class_names, n_images),
            "label": labels.reshape(-1),
            "prob": probabilities.detach().cpu().double().numpy().reshape(-1),
        }
    )[list(PREDICTION_SCHEMA)]


def _metric_rows(context: RowContext, pairs: ExplanationPairs, group: GazeGroup, method_name: str, params: dict, maps: torch.Tensor, metrics: dict[str, Metric]) -> pd.DataFrame:
    base = _base_rows(context, pairs, group, method_name, params)
    values = score_maps(maps.detach(), group.targets, metrics)  # all metrics at once: they share intermediates
    frames = [base.assign(metric=name, value=values[name].numpy()) for name in metrics]
    return pd.concat(frames, ignore_index=True)


def _base_rows(context: RowContext, pairs: ExplanationPairs, group: GazeGroup, method_name: str, params: dict) -> pd.DataFrame:
    """The row-schema columns other than ``metric`` and ``value``, one row per map of the group."""
    batch = group.batch
    classes = context.class_names
    rows = torch.tensor([pairs.rows[p] for p in group.positions], device=pairs.probabilities.device)
    probabilities = pairs.probabilities[rows]
    targets = pairs.targets[torch.as_tensor(group.positions, device=pairs.targets.device)].to(rows.device)
    label = true_label(batch.labels, [context.class_index[t] for t in targets.tolist()]).cpu().numpy()
    predicted = probabilities.argmax(dim=1)
    target_prob = probabilities.gather(1, targets[:, None])[:, 0]
    if context.multi_label:
        correct = (target_prob >= 0.5).cpu().numpy() == label
    elif -1 in context.class_index:  # the model's own classes (--target pred): right when its top class is a true label
        correct = true_label(batch.labels, [context.class_index[p] for p in predicted.tolist()]).cpu().numpy()
    else:
        correct = (predicted.cpu() == torch.nan_to_num(batch.labels.cpu(), nan=0.0).argmax(dim=1)).numpy()
    return pd.DataFrame(
        {
            "dataset": context.dataset,
            "split": context.split,
            "image_id": batch.image_ids,
            "patient_id": batch.patient_ids,
            "reader": batch.readers,
            "target": [classes[t] for t in targets.tolist()],
            "label": label.astype(np.int8),
            "pred": [classes[p] for p in predicted.tolist()],
            "prob": target_prob.cpu().numpy().astype(np.float64),
            "correct": correct,
            "model": context.model,
            "checkpoint": context.checkpoint[:12],
            "method": method_name,
            "method_params": json.dumps(params, sort_keys=True),
            "protocol": context.protocol,
        }
    )
