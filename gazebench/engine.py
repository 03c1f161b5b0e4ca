"""The loop: batches -> model -> methods -> metrics -> store, then the leaderboard.

``prepare_run`` validates everything a user can get wrong (names, data, checkpoint) before
anything is written; ``execute_run`` then fills the run directory, skipping the (batch,
method) shards that a previous run with the same directory already finished.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm import tqdm

import gazebench
from gazebench.atomic import write_atomic
from gazebench.data.data_use import write_data_use_notice
from gazebench.data.datasets import open_dataset
from gazebench.data.sample import Batch, collate
from gazebench.data.splits import write_splits
from gazebench.errors import UserError
from gazebench.leaderboard import build_leaderboard, format_latex, format_markdown
from gazebench.methods.base import Method, image_seed
from gazebench.metrics.base import Metric, feedable_metrics
from gazebench.metrics.regions import GAZE_METHOD, analyse_regions
from gazebench.metrics.regions import KEY_COLUMNS as REGION_KEYS
from gazebench.metrics.regions import format_markdown as format_region_markdown
from gazebench.metrics.statistics import ALPHA, breakdown, comparisons, format_breakdown_markdown
from gazebench.models.base import ModelAdapter
from gazebench.models.label_map import label_map_record, map_adapter
from gazebench.priors import GazePriors, compute_priors
from gazebench.protocol import DEFAULT_GRID, protocol_description
from gazebench.references import REFERENCE_METHODS, reference_maps
from gazebench.registry import METHODS
from gazebench.rows import ExplanationPairs, GazeGroup, gaze_groups, region_share_rows, score_rows
from gazebench.store import RunStore

BOOTSTRAP = {"replicates": 1000, "interval": "percentile", "level": 0.95, "unit": "patient"}
COMPARISONS = {"pairing": "same image, target and reader", "test": "paired patient bootstrap of the difference of means", "p_value": "t", "correction": "holm", "alpha": ALPHA}


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
    all_metrics: bool = False  # the user asked for "all": metrics the data cannot feed are left out, not refused


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
    left_out_metrics: dict[str, str] = field(default_factory=dict)  # metric -> why the data cannot feed it
    available: set[str] = field(default_factory=set)  # GazeTargets fields the data provide
    priors: GazePriors | None = None  # centre bias and the evaluated set's fixations (execute_run)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu or auto")
    return torch.device(name)


def open_run_dataset(request: RunRequest):
    """The split to score; an empty one is an error rather than an empty leaderboard."""
    dataset = open_dataset_split(request, request.split)
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
    available = available_targets(dataset)
    metrics, left_out = usable_metrics(request, available)
    device = resolve_device(request.device)
    run = PreparedRun(request, adapter.to(device).eval(), checkpoint_sha256, dataset, methods, metrics, device, left_out_metrics=left_out, available=available)
    run.class_index = [dataset.class_names.index(name) if name in dataset.class_names else -1 for name in adapter.class_names]
    return run


def available_targets(dataset) -> set[str]:
    """What the data can feed metrics (GazeTargets fields): masks only when the data have them."""
    available = {"density", "fixations", "centre_bias", "negatives"}
    first = dataset[0]
    if first.evidence is not None or first.lesions:
        available.add("mask")
    return available


def usable_metrics(request: RunRequest, available: set[str]) -> tuple[dict[str, Metric], dict[str, str]]:
    """The metrics to compute, and those left out of ``all`` because the data cannot feed them.

    A metric asked for by name that the data cannot feed is an error naming what is missing.
    """
    metrics, unmet = feedable_metrics(request.metrics, available)
    for name, missing in unmet.items():
        if not request.all_metrics:
            raise UserError(f"metric {name} needs {', '.join(missing)}, which {request.data} does not provide; choose other --metrics")
    left_out = {name: f"needs {', '.join(missing)}, which {request.data} does not provide" for name, missing in unmet.items()}
    return metrics, left_out


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
        "references": reference_config(run),
        "target": request.target,
        "seed": request.seed,
        "batch_size": request.batch_size,
        "bootstrap": {**BOOTSTRAP, "seed": request.seed},
        "comparisons": COMPARISONS,
        "device": str(run.device),
        "out": str(request.out),
    }


def reference_config(run: PreparedRun) -> dict:
    """How the reference maps and the gaze priors were made (config.yaml's ``references``)."""
    return {
        "maps": dict(REFERENCE_METHODS),
        "centre_bias": run.priors.centre_bias_source if run.priors else None,
        "shuffled_auc_negatives": "fixations of the other images of the evaluated set",
        "localisation_masks": "lesion mask of the target class, else the evidence mask when the target is a true label; empty -> NaN" if "mask" in run.available else None,
    }


def execute_run(run: PreparedRun) -> pd.DataFrame:
    """Fill the run directory and return the leaderboard."""
    request = run.request
    store = RunStore(request.out)
    indices = np.arange(len(run.dataset))[: request.limit]
    run.priors = GazePriors.load(request.out) if (request.out / "config.yaml").is_file() else None
    if run.priors is None:
        run.priors = compute_priors(lambda: open_dataset_split(request, "train"), run.dataset, indices, request.grid)
    store.open(run_config(run))
    run.priors.save(request.out)
    write_splits(run.dataset.table, request.out / "splits.csv")
    if run.dataset.manifest.credentialed:
        write_data_use_notice(request.out, run.dataset.manifest)
    log_inputs(run, store)
    batches = [indices[start : start + request.batch_size] for start in range(0, len(indices), request.batch_size)]
    counts: Counter[tuple[str, str]] = Counter()
    no_target = 0
    warned: set[str] = set()
    names = [*run.methods, *REFERENCE_METHODS]
    progress = tqdm(total=len(batches) * len(run.methods), desc="attributions + scores", unit="batch")
    for batch_index, batch_indices in enumerate(batches):
        todo = [name for name in names if not store.has(batch_index, name)]
        progress.update(len(run.methods) - len([name for name in todo if name in run.methods]))
        if not todo:
            continue
        samples = [run.dataset[int(i)] for i in batch_indices]
        batch = collate(samples).to(run.device)
        pairs = explanation_pairs(run.adapter, batch, request.target, run.dataset.multi_label)
        no_target += len(batch) - len(set(pairs.rows))
        groups = gaze_groups(run, pairs, samples) if pairs.rows else []
        with_regions = bool(groups) and bool(pairs.batch.regions)
        if with_regions and not store.region_shard_path(batch_index, GAZE_METHOD).is_file():
            store.write_region_shard(batch_index, GAZE_METHOD, region_share_rows(run, pairs, groups[0], GAZE_METHOD, groups[0].batch.gaze))
        for name in todo:
            if name in run.methods:
                maps = compute_maps(run, name, pairs, groups, store, warned)
                params = run.methods[name].params
                if with_regions:
                    store.write_region_shard(batch_index, name, region_share_rows(run, pairs, groups[0], name, maps[0]))
            else:
                maps = reference_maps(name, run.priors, pairs, groups, samples)
                params = {"reference": REFERENCE_METHODS[name]}
            rows = score_rows(run, pairs, groups, name, params, maps)
            if name != "uniform":  # a constant map by construction: its NaNs are not degenerate inputs
                for metric_name, group in rows[rows.value.isna()].groupby("metric"):
                    counts[(name, metric_name)] += len(group)
            store.write_shard(batch_index, name, rows)
            progress.update(name in run.methods)
    progress.close()
    if no_target:
        store.log(f"skipped: {no_target} image(s) with no positive label to explain (no row)")
    for (method, metric), count in sorted(counts.items()):
        store.log(f"warning: {count} NaN value(s) for {method}/{metric} (degenerate map, image without gaze or fixations, or empty mask); excluded from the leaderboard")
    write_region_analysis(store)
    return write_leaderboard(store, request.seed)


def write_region_analysis(store: RunStore) -> None:
    """regions.csv (per map: shares, z-scores, most salient region), regions_by_class.csv,
    regions_agreement.csv and regions.md -- when the data have anatomical regions."""
    shares = store.read_region_shares()
    if shares.empty:
        return
    names = [column for column in shares.columns if column not in REGION_KEYS]
    analysis = analyse_regions(shares, names)
    write_atomic(store.out / "regions.csv", analysis.per_map.to_csv(index=False))
    write_atomic(store.out / "regions_by_class.csv", analysis.class_distribution.to_csv(index=False))
    write_atomic(store.out / "regions_agreement.csv", analysis.agreement.to_csv(index=False))
    write_atomic(store.out / "regions.md", format_region_markdown(analysis))


def open_dataset_split(request: RunRequest, split: str):
    return open_dataset(request.data, request.root, split, request.grid, request.images_root, gaze_sigma=request.gaze_sigma, labels=request.labels)


def log_inputs(run: PreparedRun, store: RunStore) -> None:
    """run.log: what the data left out, where items come from, and which metrics could not run."""
    for reason, count in run.dataset.skips.items():
        if count:
            store.log(f"skipped: {count} {reason}")
    cache = getattr(run.dataset, "cache", None)
    if cache is not None:
        store.log(f"items read from the prepared cache {cache.folder} when present")
    for name, reason in run.left_out_metrics.items():
        store.log(f"metric {name} left out: it {reason}")
    store.log(f"centre bias: {run.priors.centre_bias_source}")


def compute_maps(run: PreparedRun, name: str, pairs: ExplanationPairs, groups: list[GazeGroup], store: RunStore, warned: set[str]) -> list[torch.Tensor]:
    """One method's maps for every group (the per-reader group reuses the pairs' maps)."""
    if not pairs.rows:
        return []
    method = run.methods[name]
    seeds = [image_seed(run.request.seed, image_id) for image_id in pairs.batch.image_ids]
    extra = run.adapter.inputs_from(pairs.batch)
    maps = method(run.adapter, pairs.batch.images, pairs.targets, seeds, run.request.grid, extra)
    for message in method.warnings:
        if message not in warned:
            warned.add(message)
            store.log(f"warning: {name}: {message}")
    return [maps[torch.as_tensor(group.positions, device=maps.device)] for group in groups]


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


def rank(rows: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The leaderboard of score rows and its paired comparisons (run settings: BOOTSTRAP, COMPARISONS)."""
    n_boot, ci = BOOTSTRAP["replicates"], BOOTSTRAP["level"]
    table = comparisons(rows, n_boot, seed, ci, model_independent=REFERENCE_METHODS, p_value=COMPARISONS["p_value"])
    return build_leaderboard(rows, n_boot=n_boot, seed=seed, ci=ci, comparison_table=table), table


def write_leaderboard(store: RunStore, seed: int) -> pd.DataFrame:
    """leaderboard.csv/.md/.tex, comparisons.csv (paired tests) and breakdown.csv/.md (by class and correctness)."""
    rows = store.read_scores()
    leaderboard, table = rank(rows, seed)
    by_class = breakdown(rows, BOOTSTRAP["replicates"], seed, BOOTSTRAP["level"])
    write_atomic(store.out / "comparisons.csv", table.to_csv(index=False))
    write_atomic(store.out / "breakdown.csv", by_class.to_csv(index=False))
    write_atomic(store.out / "breakdown.md", format_breakdown_markdown(by_class))
    write_atomic(store.out / "leaderboard.tex", format_latex(leaderboard))
    write_atomic(store.out / "leaderboard.csv", leaderboard.to_csv(index=False))
    write_atomic(store.out / "leaderboard.md", format_markdown(leaderboard))
    return leaderboard
