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
from tqdm import tqdm

import gazebench
from gazebench.data.datasets import open_dataset
from gazebench.data.sample import Batch, collate
from gazebench.data.splits import write_splits
from gazebench.errors import UserError
from gazebench.leaderboard import build_leaderboard, format_markdown
from gazebench.methods.base import Method, image_seed
from gazebench.metrics.base import Metric
from gazebench.models.base import ModelAdapter
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


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu or auto")
    return torch.device(name)


def open_run_dataset(request: RunRequest):
    """The split to score; an empty one is an error rather than an empty leaderboard."""
    dataset = open_dataset(request.data, request.root, request.split, request.grid, request.images_root)
    if len(dataset) == 0:
        raise UserError(f"split {request.split!r} of {request.data} has no image with gaze to score; try --split all")
    return dataset


def prepare_run(request: RunRequest, dataset, adapter: ModelAdapter, checkpoint_sha256: str) -> PreparedRun:
    """Check the model against the data and instantiate methods and metrics; writes nothing."""
    if list(adapter.class_names) != list(dataset.class_names):
        raise UserError(f"model {request.model} predicts {adapter.class_names} but {request.data} has classes {dataset.class_names}")
    methods = {name: METHODS.get(name)() for name in request.methods}
    metrics = {name: METRICS.get(name)() for name in request.metrics}
    device = resolve_device(request.device)
    return PreparedRun(request, adapter.to(device).eval(), checkpoint_sha256, dataset, methods, metrics, device)


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
            "images": len(run.dataset),
            "limit": request.limit,
        },
        "model": {"name": request.model, "checkpoint": str(request.checkpoint), "checkpoint_sha256": run.checkpoint_sha256, "class_names": run.adapter.class_names},
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
    for reason, count in run.dataset.skips.items():
        if count:
            store.log(f"skipped: {count} {reason}")
    indices = np.arange(len(run.dataset))[: request.limit]
    batches = [indices[start : start + request.batch_size] for start in range(0, len(indices), request.batch_size)]
    nan_counts: Counter[tuple[str, str]] = Counter()
    warned: set[str] = set()
    progress = tqdm(total=len(batches) * len(run.methods), desc="attributions + scores", unit="batch")
    for batch_index, batch_indices in enumerate(batches):
        todo = [name for name in run.methods if not store.has(batch_index, name)]
        progress.update(len(run.methods) - len(todo))
        if not todo:
            continue
        batch = collate([run.dataset[int(i)] for i in batch_indices]).to(run.device)
        predictions = batch_predictions(run.adapter, batch, request.target)
        seeds = [image_seed(request.seed, image_id) for image_id in batch.image_ids]
        for name in todo:
            method = run.methods[name]
            maps = method(run.adapter, batch.images, predictions["target"], seeds, request.grid)
            for message in method.warnings:
                if message not in warned:
                    warned.add(message)
                    store.log(f"warning: {name}: {message}")
            rows = score_rows(run, batch, predictions, name, maps)
            for metric_name, group in rows[rows.value.isna()].groupby("metric"):
                nan_counts[(name, metric_name)] += len(group)
            store.write_shard(batch_index, name, rows)
            progress.update(1)
    progress.close()
    for (method, metric), count in sorted(nan_counts.items()):
        store.log(f"warning: {count} NaN value(s) for {method}/{metric} (degenerate map or gaze); excluded from the leaderboard")
    return write_leaderboard(store, request.seed)


@torch.no_grad()
def batch_predictions(adapter: ModelAdapter, batch: Batch, target: str) -> dict[str, torch.Tensor]:
    """Predicted class, the attribution target (true or predicted class) and its probability."""
    probabilities = adapter.probabilities(adapter.logits(batch.images))
    predicted = probabilities.argmax(dim=1)
    targets = batch.labels if target == "label" else predicted
    return {"pred": predicted, "target": targets, "prob": probabilities.gather(1, targets[:, None])[:, 0]}


def score_rows(run: PreparedRun, batch: Batch, predictions: dict, method_name: str, maps: torch.Tensor) -> pd.DataFrame:
    """One row per (image, metric) in the run-directory row schema of DESIGN.md."""
    classes = run.adapter.class_names
    targets = predictions["target"].cpu().numpy()
    preds = predictions["pred"].cpu().numpy()
    labels = batch.labels.cpu().numpy()
    base = pd.DataFrame(
        {
            "dataset": run.request.data,
            "split": run.request.split,
            "image_id": batch.image_ids,
            "patient_id": batch.patient_ids,
            "reader": "all",
            "target": [classes[t] for t in targets],
            "label": (targets == labels).astype(np.int8),
            "pred": [classes[p] for p in preds],
            "prob": predictions["prob"].cpu().numpy().astype(np.float64),
            "correct": preds == labels,
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
    return pd.concat(frames, ignore_index=True)[list(ROW_SCHEMA)]


def write_leaderboard(store: RunStore, seed: int) -> pd.DataFrame:
    rows = store.read_scores()
    leaderboard = build_leaderboard(rows, n_boot=BOOTSTRAP["replicates"], seed=seed, ci=BOOTSTRAP["level"])
    write_atomic(store.out / "leaderboard.csv", leaderboard.to_csv(index=False))
    write_atomic(store.out / "leaderboard.md", format_markdown(leaderboard))
    return leaderboard
