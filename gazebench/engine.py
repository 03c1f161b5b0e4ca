"""The loop: batches -> model -> methods -> metrics -> store, then the leaderboard.

``prepare_run`` validates everything a user can get wrong (names, data, checkpoint) before
anything is written; ``execute_run`` then fills the run directory, skipping the (batch,
method) shards that a previous run with the same directory already finished.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm import tqdm

import gazebench
from gazebench.data.data_use import write_data_use_notice
from gazebench.data.datasets import open_dataset
from gazebench.data.sample import Batch, collate
from gazebench.data.splits import write_splits
from gazebench.errors import UserError
from gazebench.leaderboard import build_leaderboard, format_markdown
from gazebench.methods.base import Method, image_seed
from gazebench.metrics.base import Metric
from gazebench.models.base import ModelAdapter
from gazebench.models.label_map import label_map_record, map_adapter
from gazebench.protocol import DEFAULT_GRID, protocol_description, protocol_id
from gazebench.registry import METHODS, METRICS
from gazebench.atomic import write_atomic
from gazebench.store import ROW_SCHEMA, RunStore

BOOTSTRAP = {"replicates": 1000, "interval": "percentile", "level": 0.95, "unit": "patient"}


@dataclass
class RunRequest:
    """What the user asked for (the CLI's options)."""

    model: str
    methods: list[str]
    metrics: list[str]
    out: Path
    data: str = "synth"
    root: Path | None = None
    images_root: Path | None = None
    split: str = "test"
    checkpoint: Path | None = None
    target: str = "label"
    device: str = "auto"
    batch_size: int = 8
    limit: int | None = None
    seed: int = 0
    grid: int = DEFAULT_GRID
    gaze_sigma: float | None = None  # None: the dataset's published sigma
    labels: str | None = None  # the reader's label set (None: its default)
    label_map: Path | None = None  # YAML mapping dataset classes to model outputs (None: the default map)


@dataclass
class PreparedRun:
    request: RunRequest
    adapter: ModelAdapter
    checkpoint_sha256: str
    dataset: torch.utils.data.Dataset
    methods: dict[str, Method]
    metrics: dict[str, Metric]
    device: torch.device
    skips: Counter = field(default_factory=Counter)
    class_index: list[int] = field(default_factory=list)  # model output -> dataset class index (-1: none)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu or auto")
    return torch.device(name)


def open_run_dataset(request: RunRequest):
    """The split to score; an empty one is an error rather than an empty leaderboard."""
    dataset = open_dataset(request.data, request.root, request.split, request.grid, request.images_root, gaze_sigma=request.gaze_sigma, labels=request.labels)
    if len(dataset) == 0:
        raise UserError(f"split {request.split!r} of {request.data} has no image with gaze to score; try --split all")
    return dataset


def prepare_run(request: RunRequest, dataset, adapter: ModelAdapter, checkpoint_sha256: str) -> PreparedRun:
    """Check the model against the data and instantiate methods and metrics; writes nothing.

    A model whose classes differ from the data's is evaluated through a label map (the given
    ``--label-map`` file, else the default one for the data's classes), or, with ``--target
    pred``, on its own predicted classes; with neither, the error lists both class lists.
    """
    adapter = map_adapter(adapter, dataset.class_names, request.label_map, request.target)
    methods = {name: METHODS.get(name)() for name in request.methods}
    metrics = {name: METRICS.get(name)() for name in request.metrics}
    device = resolve_device(request.device)
    run = PreparedRun(request, adapter.to(device).eval(), checkpoint_sha256, dataset, methods, metrics, device)
    run.class_index = [dataset.class_names.index(name) if name in dataset.class_names else -1 for name in adapter.class_names]
    return run


def run_config(run: PreparedRun) -> dict:
    request = run.request
    return {
        "gazebench_version": gazebench.__version__,
        "protocol": protocol_description(request.grid, run.dataset.convention),
        "data": {
            "name": request.data,
            "root": str(run.dataset.root),
            "images_root": str(run.dataset.images_root),
            "split": request.split,
            "labels": request.labels,
            "images": len(run.dataset),
            "limit": request.limit,
        },
        "model": {
            "name": request.model,
            "checkpoint": str(request.checkpoint),
            "checkpoint_sha256": run.checkpoint_sha256,
            "class_names": run.adapter.class_names,
            "label_map": label_map_record(run.adapter),
        },
        "methods": {name: method.params for name, method in run.methods.items()},
        "metrics": {name: metric.settings for name, metric in run.metrics.items()},
        "target": request.target,
        "seed": request.seed,
        "batch_size": request.batch_size,
        "bootstrap": {**BOOTSTRAP, "seed": request.seed},
        "device": str(run.device),
        "out": str(request.out),
    }


def execute_run(run: PreparedRun) -> pd.DataFrame:
    """Fill the run directory and return the leaderboard."""
    request = run.request
    store = RunStore(request.out)
    store.open(run_config(run))
    write_splits(run.dataset.table, request.out / "splits.csv")
    if run.dataset.manifest.credentialed:
        write_data_use_notice(request.out, run.dataset.manifest)
    for reason, count in run.dataset.skips.items():
        if count:
            store.log(f"skipped: {count} {reason}")
    cache = getattr(run.dataset, "cache", None)
    if cache is not None:
        store.log(f"items read from the prepared cache {cache.folder} when present")
    indices = np.arange(len(run.dataset))[: request.limit]
    batches = [indices[start : start + request.batch_size] for start in range(0, len(indices), request.batch_size)]
    counts: Counter[tuple[str, str]] = Counter()
    no_target = 0
    warned: set[str] = set()
    progress = tqdm(total=len(batches) * len(run.methods), desc="attributions + scores", unit="batch")
    for batch_index, batch_indices in enumerate(batches):
        todo = [name for name in run.methods if not store.has(batch_index, name)]
        progress.update(len(run.methods) - len(todo))
        if not todo:
            continue
        samples = [run.dataset[int(i)] for i in batch_indices]
        batch = collate(samples).to(run.device)
        pairs = explanation_pairs(run.adapter, batch, request.target, run.dataset.multi_label)
        no_target += len(batch) - len(set(pairs.rows))
        seeds = [image_seed(request.seed, image_id) for image_id in pairs.batch.image_ids]
        for name in todo:
            method = run.methods[name]
            extra = run.adapter.inputs_from(pairs.batch)
            maps = method(run.adapter, pairs.batch.images, pairs.targets, seeds, request.grid, extra) if len(pairs.rows) else None
            for message in method.warnings:
                if message not in warned:
                    warned.add(message)
                    store.log(f"warning: {name}: {message}")
            rows = score_rows(run, pairs, name, maps, samples)
            for metric_name, group in rows[rows.value.isna()].groupby("metric"):
                counts[(name, metric_name)] += len(group)
            store.write_shard(batch_index, name, rows)
            progress.update(1)
    progress.close()
    if no_target:
        store.log(f"skipped: {no_target} image(s) with no positive label to explain (no row)")
    for (method, metric), count in sorted(counts.items()):
        store.log(f"warning: {count} NaN value(s) for {method}/{metric} (degenerate map or gaze); excluded from the leaderboard")
    return write_leaderboard(store, request.seed)


@dataclass
class ExplanationPairs:
    """The (image, target class) pairs of one batch that maps are computed for."""

    rows: list[int]  # batch row of each pair (an image repeats once per target)
    targets: torch.Tensor  # [P] class index each map explains
    probabilities: torch.Tensor  # [B, C] model probabilities of the batch's images
    batch: Batch  # the batch's rows repeated in pair order


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


def score_rows(run: PreparedRun, pairs: ExplanationPairs, method_name: str, maps: torch.Tensor | None, samples: list) -> pd.DataFrame:
    """One row per (image, target, reader, metric) in the run-directory row schema of DESIGN.md.

    Every pair is scored against the merged gaze (``reader`` ``all``); an image that several
    radiologists read is also scored against each reader's own gaze.
    """
    if not pairs.rows:
        return pd.DataFrame(columns=list(ROW_SCHEMA))
    frames = [_metric_rows(run, pairs, method_name, maps, pairs.batch)]
    extra = [(p, reader, gaze) for p, row in enumerate(pairs.rows) if len(samples[row].readers) > 1 for reader, gaze in samples[row].readers.items()]
    if extra:
        positions = [p for p, _, _ in extra]
        device = pairs.batch.gaze.device
        by_reader = pairs.batch.select(positions).with_gaze(
            torch.stack([g.gaze for _, _, g in extra]).to(device),
            [g.fixations.to(device) for _, _, g in extra],
            [reader for _, reader, _ in extra],
        )
        subset = ExplanationPairs([pairs.rows[p] for p in positions], pairs.targets[positions], pairs.probabilities, by_reader)
        frames.append(_metric_rows(run, subset, method_name, maps[positions], by_reader))
    return pd.concat(frames, ignore_index=True)[list(ROW_SCHEMA)]


def _metric_rows(run: PreparedRun, pairs: ExplanationPairs, method_name: str, maps: torch.Tensor, batch: Batch) -> pd.DataFrame:
    classes = run.adapter.class_names
    rows = torch.tensor(pairs.rows, device=pairs.probabilities.device)
    probabilities = pairs.probabilities[rows]
    targets = pairs.targets.to(rows.device)
    label = true_label(batch.labels.cpu(), [run.class_index[t] for t in targets.tolist()])
    predicted = probabilities.argmax(dim=1)
    target_prob = probabilities.gather(1, targets[:, None])[:, 0]
    if run.dataset.multi_label:
        correct = (target_prob >= 0.5).cpu().numpy() == label
    elif -1 in run.class_index:  # the model's own classes (--target pred): right when its top class is a true label
        correct = true_label(batch.labels.cpu(), [run.class_index[p] for p in predicted.tolist()])
    else:
        correct = (predicted.cpu() == torch.nan_to_num(batch.labels.cpu(), nan=0.0).argmax(dim=1)).numpy()
    base = pd.DataFrame(
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
            "method_params": json.dumps(run.methods[method_name].params, sort_keys=True),
            "protocol": protocol_id(run.request.grid, run.dataset.convention),
        }
    )
    frames = []
    for metric_name, metric in run.metrics.items():
        values = metric(maps, batch).detach().double().cpu().numpy()
        frames.append(base.assign(metric=metric_name, value=values))
    return pd.concat(frames, ignore_index=True)


def true_label(labels: torch.Tensor, classes: list[int]) -> np.ndarray:
    """Whether each row's class (a dataset class index, -1 for a class the data lack) is a true label."""
    index = torch.tensor(classes, dtype=torch.long)
    known = index >= 0
    values = labels.gather(1, index.clamp_min(0)[:, None])[:, 0]
    return ((values == 1) & known).numpy()


def write_leaderboard(store: RunStore, seed: int) -> pd.DataFrame:
    rows = store.read_scores()
    leaderboard = build_leaderboard(rows, n_boot=BOOTSTRAP["replicates"], seed=seed, ci=BOOTSTRAP["level"])
    write_atomic(store.out / "leaderboard.csv", leaderboard.to_csv(index=False))
    write_atomic(store.out / "leaderboard.md", format_markdown(leaderboard))
    return leaderboard
