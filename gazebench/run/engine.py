"""The loop: batches -> model -> methods -> metrics -> the store.  It ends there.

``benchmark(request, model)`` is what both front doors call: it opens the data (every mistake a
user can make there is reported before a model is loaded or trained), checks the model against
the data, then fills the run directory (``gazebench.run.store``), skipping the (batch, method)
shards that a previous run with the same directory already finished.  Aggregation
(``gazebench.aggregate``) and the files people read (``gazebench.report``) come after, from the
store alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

import gazebench
from gazebench.bootstrap import BOOTSTRAP, COMPARISONS
from gazebench.data.data_use import write_data_use_notice
from gazebench.data.datasets import open_dataset
from gazebench.data.loading import UNREADABLE_REASON, load_items
from gazebench.data.sample import collate
from gazebench.data.splits import write_splits
from gazebench.device import resolve_device
from gazebench.errors import UserError
from gazebench.methods.base import Method, image_seed
from gazebench.methods.gradient import input_gradients_only
from gazebench.metrics.base import GazeTargets, Metric, feedable_metrics
from gazebench.models.base import ModelAdapter
from gazebench.models.label_map import label_map_record, map_adapter
from gazebench.protocol import REFERENCE_MAPS, protocol_description, protocol_id
from gazebench.registry import METHODS
from gazebench.run.pairs import (
    ExplanationPairs,
    GazeGroup,
    explanation_pairs,
    gaze_groups,
    localisation_masks,
)
from gazebench.run.priors import GazePriors, compute_priors
from gazebench.run.references import reference_maps
from gazebench.run.request import LoadedModel, RunRequest
from gazebench.run.rows import RowContext, prediction_rows, region_share_rows, score_rows
from gazebench.run.runlog import write_run_log
from gazebench.run.store import EXAMPLE_IMAGES, GAZE_METHOD, PREDICTION_SCHEMA, RunStore

NO_TARGET = "image(s) with no positive label to explain (no row)"


@dataclass
class PreparedRun:
    """A request checked against its data and model: everything the loop needs, nothing filled in later."""

    request: RunRequest
    model: LoadedModel  # the adapter as the user gave it, and its weights' identity
    adapter: ModelAdapter  # mapped onto the data's classes, on the device, in eval mode
    dataset: torch.utils.data.Dataset
    methods: dict[str, Method]
    metrics: dict[str, Metric]
    device: torch.device
    context: RowContext
    left_out_metrics: dict[str, str] = field(default_factory=dict)  # metric -> why the data cannot feed it
    left_out_methods: dict[str, str] = field(default_factory=dict)  # method (from a set) -> why it cannot explain the model
    available: set[str] = field(default_factory=set)  # GazeTargets fields the data provide


def benchmark(request: RunRequest, model: LoadedModel | Callable[[], LoadedModel]) -> RunStore:
    """Run ``request`` with ``model`` (or a function that loads it, called once the data are open) into ``request.out``."""
    dataset = open_run_dataset(request)
    loaded = model() if callable(model) else model
    return execute_run(prepare_run(request, dataset, loaded))


def open_run_dataset(request: RunRequest):
    """The split to score; an empty one is an error rather than an empty leaderboard."""
    dataset = open_dataset_split(request, request.split)
    if len(dataset) == 0:
        hint = "check the copy with `gazebench data check`" if request.split == "all" else "try --split all"
        raise UserError(f"split {request.split!r} of {request.data} has no image with gaze to score; {hint}")
    return dataset


def open_dataset_split(request: RunRequest, split: str):
    return open_dataset(request.data, request.root, split, request.grid, request.images_root, gaze_sigma=request.gaze_sigma, labels=request.labels)


def prepare_run(request: RunRequest, dataset, model: LoadedModel) -> PreparedRun:
    """Check the model against the data and instantiate methods and metrics; writes nothing.

    A model whose classes differ from the data's is evaluated through a label map (the given
    ``label_map``, else the default one for the data's classes), or, with ``--target pred``, on
    its own predicted classes; with neither, the error lists both class lists.
    """
    adapter = map_adapter(model.adapter, dataset.class_names, request.label_map, request.target)
    device = resolve_device(request.device)
    adapter = adapter.to(device).eval()
    methods, left_out_methods = ready_methods(request, adapter)
    available = available_targets(dataset)
    metrics, left_out = usable_metrics(request, available)
    context = RowContext(
        dataset=request.data,
        split=request.split,
        model=request.model,
        checkpoint=model.sha256,
        protocol=protocol_id(request.grid, dataset.convention),
        class_names=tuple(adapter.class_names),
        class_index=tuple(dataset.class_names.index(name) if name in dataset.class_names else -1 for name in adapter.class_names),
        dataset_classes=tuple(dataset.class_names),
        multi_label=dataset.multi_label,
    )
    return PreparedRun(request, model, adapter, dataset, methods, metrics, device, context, left_out, left_out_methods, available)


def ready_methods(request: RunRequest, adapter: ModelAdapter) -> tuple[dict[str, Method], dict[str, str]]:
    """The methods with the user's parameters and chunk size, each checked against the model (pre-flight).

    A method that cannot explain the model is refused in one line when the user named it, and left
    out (the reason goes to run.log) when it came from a set such as ``all``.
    """
    methods, left_out = {}, {}
    for name in request.methods:
        method = METHODS.get(name)(**request.method_params.get(name, {}))
        method.max_rows = request.max_batch_elements
        try:
            method.check_model(adapter)
        except UserError as refusal:
            if name not in request.optional_methods:
                raise
            left_out[name] = str(refusal)
            continue
        methods[name] = method
    if not methods:
        raise UserError(f"none of the methods asked for can explain {request.model}: " + "; ".join(left_out.values()))
    return methods, left_out


def available_targets(dataset) -> set[str]:
    """What the data can feed metrics (GazeTargets fields): masks only when the data have them."""
    available = {"density", "fixations", "centre_bias", "negatives"}
    first = first_readable(dataset)
    if first is not None and (first.evidence is not None or first.lesions):
        available.add("mask")
    return available


def first_readable(dataset):
    """The first item whose image can be decoded (unreadable ones are the loop's to count), or None."""
    for start in range(0, len(dataset), 8):
        samples, _ = load_items(dataset, list(range(start, min(start + 8, len(dataset)))), strict=False)
        if samples:
            return samples[0]
    return None


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


def run_config(run: PreparedRun, priors: GazePriors) -> dict:
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
            "checkpoint": str(run.model.checkpoint),
            "checkpoint_sha256": run.model.sha256,
            "class_names": run.adapter.class_names,
            "label_map": label_map_record(run.adapter),
        },
        "methods": {name: method.params for name, method in run.methods.items()},
        "metrics": {name: metric.settings for name, metric in run.metrics.items()},
        "references": reference_config(run, priors),
        "target": request.target,
        "seed": request.seed,
        "batch_size": request.batch_size,
        "max_batch_elements": request.max_batch_elements,
        "bootstrap": {**BOOTSTRAP, "seed": request.seed},
        "comparisons": COMPARISONS,
        "device": str(run.device),
        "out": str(request.out),
    }


def reference_config(run: PreparedRun, priors: GazePriors) -> dict:
    """How the reference maps and the gaze priors were made (config.yaml's ``references``)."""
    return {
        "maps": dict(REFERENCE_MAPS),
        "centre_bias": priors.centre_bias_source,
        "shuffled_auc_negatives": "fixations of the other images of the evaluated set",
        "localisation_masks": "lesion mask of the target class, else the evidence mask when the target is a true label; empty -> NaN" if "mask" in run.available else None,
    }


def execute_run(run: PreparedRun) -> RunStore:
    """Fill the run directory: config, priors, splits, notes, predictions, score and region-share shards, run.log.

    A (batch, method) shard is computed when it is missing, or extended when it lacks metrics the
    request asks for; an image that cannot be decoded is skipped and noted (``strict`` stops).
    """
    request = run.request
    store = RunStore(request.out)
    indices = np.arange(len(run.dataset))[: request.limit]
    priors = GazePriors.load(request.out) if (request.out / "config.yaml").is_file() else None
    if priors is None:
        priors = compute_priors(lambda: open_dataset_split(request, "train"), run.dataset, indices, request.grid, strict=request.strict)
    store.open(run_config(run, priors))
    priors.save(request.out)
    write_splits(run.dataset.table, request.out / "splits.csv")
    if run.dataset.manifest.credentialed:
        write_data_use_notice(request.out, run.dataset.manifest)
    skipped = {reason: int(count) for reason, count in run.dataset.skips.items() if count}
    if priors.unreadable_train:
        skipped[f"{UNREADABLE_REASON} in the train split, left out of the centre bias"] = int(priors.unreadable_train)
    store.write_note(None, {"skipped": skipped})
    batches = [indices[start : start + request.batch_size] for start in range(0, len(indices), request.batch_size)]
    names = [*run.methods, *REFERENCE_MAPS]
    progress = tqdm(total=len(batches) * len(run.methods), desc="attributions + scores", unit="batch")
    with input_gradients_only(run.adapter.module):  # once for the run, not once per method call
        for batch_index, batch_indices in enumerate(batches):
            todo = {}
            for name in names:
                lacking = [metric for metric in run.metrics if metric not in store.shard_metrics(batch_index, name)]
                if lacking:
                    todo[name] = lacking
            progress.update(len(run.methods) - len([name for name in todo if name in run.methods]))
            if todo or not store.has_predictions(batch_index):
                run_batch(run, store, priors, batch_index, batch_indices, todo, progress)
    progress.close()
    write_run_log(store, setting_lines(run, priors))
    return store


def run_batch(run: PreparedRun, store: RunStore, priors: GazePriors, batch_index: int, batch_indices, todo: dict[str, list[str]], progress) -> None:
    """Compute and store the shards of one batch that ``todo`` names (method -> the metrics it lacks)."""
    request = run.request
    samples, unreadable = load_items(run.dataset, [int(i) for i in batch_indices], strict=request.strict)
    note = {"skipped": {}, "unreadable": [{"image_id": item.image_id, "reason": item.reason} for item in unreadable]}
    if unreadable:
        note["skipped"][UNREADABLE_REASON] = len(unreadable)
    if not samples:
        store.write_note(batch_index, note)
        store.write_predictions(batch_index, pd.DataFrame(columns=list(PREDICTION_SCHEMA)))
        progress.update(len([name for name in todo if name in run.methods]))
        return
    batch = collate(samples).to(run.device)
    pairs = explanation_pairs(run.adapter, batch, request.target, run.dataset.multi_label)
    if not store.has_predictions(batch_index):
        store.write_predictions(batch_index, prediction_rows(run.context, batch, pairs.probabilities))
    if no_target := len(batch) - len(set(pairs.rows)):
        note["skipped"][NO_TARGET] = no_target
    store.write_note(batch_index, note)
    groups = gaze_groups(pairs, merged_targets(run, pairs, priors)) if pairs.rows else []
    keep_maps = bool(groups) and int(batch_indices[0]) < EXAMPLE_IMAGES
    if keep_maps:
        for name, maps in (("radiograph", batch.images[:, 0]), ("gaze", batch.gaze)):
            if not store.has_maps(batch_index, name, is_input=True):
                store.write_maps(batch_index, name, batch.image_ids, maps.detach().cpu().numpy(), is_input=True)
    with_regions = bool(groups) and bool(pairs.batch.regions)
    if with_regions and not store.region_shard_path(batch_index, GAZE_METHOD).is_file():
        store.write_region_shard(batch_index, GAZE_METHOD, region_share_rows(run.context, pairs, groups[0], GAZE_METHOD, groups[0].batch.gaze))
    for name, lacking in todo.items():
        metrics = {metric: run.metrics[metric] for metric in lacking}
        if name in run.methods:
            maps = compute_maps(run, name, pairs, groups)
            if run.methods[name].warnings:
                store.write_note(batch_index, {"warnings": [warning_line(name, message) for message in run.methods[name].warnings]}, method=name)
            params = run.methods[name].params
            if keep_maps and not store.has_maps(batch_index, name):
                store.write_maps(batch_index, name, groups[0].batch.image_ids, maps[0].detach().cpu().numpy(), [run.context.class_names[t] for t in pairs.targets.tolist()])
            if with_regions and not store.region_shard_path(batch_index, name).is_file():
                store.write_region_shard(batch_index, name, region_share_rows(run.context, pairs, groups[0], name, maps[0]))
        else:
            maps = reference_maps(name, priors.centre_bias, pairs, groups)
            params = {"reference": REFERENCE_MAPS[name]}
        rows = score_rows(run.context, pairs, groups, name, params, maps, metrics)
        if store.has(batch_index, name):  # a finished shard grows by the metrics it lacked
            rows = pd.concat([store.read_shard(batch_index, name), rows], ignore_index=True)
        store.write_shard(batch_index, name, rows, store.shard_metrics(batch_index, name) | set(metrics))
        progress.update(name in run.methods)


def warning_line(method: str, message: str) -> str:
    """run.log's line for a method's warning, named once (messages often start with the method's name)."""
    return f"warning: {message}" if message.startswith(f"{method} ") else f"warning: {method}: {message}"


def setting_lines(run: PreparedRun, priors: GazePriors) -> list[str]:
    """run.log's description of the set-up: where items come from, metrics left out, the centre bias."""
    lines = []
    cache = getattr(run.dataset, "cache", None)
    if cache is not None:
        lines.append(f"items read from the prepared cache {cache.folder} when present")
    lines += [f"metric {name} left out: it {reason}" for name, reason in run.left_out_metrics.items()]
    lines += [f"left out: method {name}: {reason}" for name, reason in run.left_out_methods.items()]
    lines.append(f"centre bias: {priors.centre_bias_source}")
    return lines


def merged_targets(run: PreparedRun, pairs: ExplanationPairs, priors: GazePriors) -> GazeTargets:
    """What every pair is scored against with the merged gaze: density, fixations, centre bias, negatives, masks."""
    batch = pairs.batch
    masks = localisation_masks(pairs, run.context.class_index, run.context.dataset_classes) if "mask" in run.available else None
    return GazeTargets.from_batch(batch, centre_bias=priors.centre_bias.to(batch.gaze.device), negatives=priors.negatives(batch.fixation_maps), mask=masks)


def compute_maps(run: PreparedRun, name: str, pairs: ExplanationPairs, groups: list[GazeGroup]) -> list[torch.Tensor]:
    """One method's maps for every group (the per-reader group reuses the pairs' maps)."""
    if not pairs.rows:
        return []
    method = run.methods[name]
    seeds = [image_seed(run.request.seed, image_id) for image_id in pairs.batch.image_ids]
    extra = run.adapter.inputs_from(pairs.batch)
    maps = method(run.adapter, pairs.batch.images, pairs.targets, seeds, run.request.grid, extra)
    return [maps[torch.as_tensor(group.positions, device=maps.device)] for group in groups]
