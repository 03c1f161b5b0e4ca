"""Sanity check, the computation: the cascading model-parameter randomisation test (Adebayo et al. 2018).

A saliency method that explains the *model* must change when the model's weights are
destroyed.  ``run_cascade`` computes each method's maps with the trained model, then
re-initialises the model's parameterised layers cumulatively from the output layer down (step
k: the top k layer groups randomised) and, at every step, recomputes the maps for the same
(image, target) pairs and measures how similar they still are to the trained-model maps:

- ``spearman``: Spearman rank correlation of the two maps' pixels (average ranks for ties, as
  ``scipy.stats.spearmanr``); NaN when either map is constant or holds a non-finite pixel;
- ``ssim``: gazebench's SSIM metric (min-maxed maps, Gaussian window) with the trained-model
  map in the place of the gaze density; NaN for a constant or all-zero map.

Targets are those of the trained model's run (the true label, ``explanation_pairs`` with
target ``label``); sampling methods draw the same per-image noise at every step
(``image_seed``), so step 0 (nothing randomised) measures the method's own determinism and
gives 1.  The summary, the verdicts (``gazebench.aggregate.sanity``) and the files
(``gazebench.report.sanity``) come after; ``gazebench.api.sanity_check`` does all three.
"""

from __future__ import annotations

import copy
import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

import gazebench
from gazebench.data.sample import Batch, collate
from gazebench.device import resolve_device
from gazebench.errors import UserError
from gazebench.methods.base import Method, image_seed
from gazebench.methods.specs import MethodSelection, select_methods
from gazebench.metrics.base import GazeTargets
from gazebench.metrics.ops import average_ranks
from gazebench.models.base import ModelAdapter
from gazebench.models.label_map import map_adapter
from gazebench.registry import METHODS, METRICS
from gazebench.run.pairs import explanation_pairs

DEFAULT_STEPS = 8
DEFAULT_LIMIT = 16
INIT_STD = 0.02  # normal(0, 0.02) for parameters of modules without reset_parameters (biases: zeros)


@dataclass
class PairBatch:
    """One batch of (image, target) pairs, fixed for every step."""

    batch: Batch  # rows repeated in pair order
    targets: torch.Tensor  # [P] class index each map explains
    seeds: list[int]  # per-pair noise seeds of sampling methods
    extra: tuple  # the model's extra inputs (none for image-only models)


@dataclass
class Cascade:
    """What ``run_cascade`` measured, before any summary."""

    values: pd.DataFrame  # one row per (method, step, image, target, measure): method, step, image_id, patient_id, target, measure, value
    groups: list[list[str]]  # layer groups, top first; step k randomises groups[:k]
    unused_layers: list[str]  # parameterised modules the classifier's forward never calls (left as trained)
    methods: dict[str, Method]  # the instances used (their params go to config.yaml)
    warnings: list[str]  # the methods' warnings, and images left out
    settings: dict  # limit, batch_size, device, seed, steps: how it was run


# --- similarity measures ---------------------------------------------------------------


def spearman(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Spearman correlation of each pair of maps [B, H, W] -> [B] float64.

    Pearson correlation of the average ranks (no epsilon); NaN when either map is constant
    (zero rank variance) or holds a non-finite pixel.
    """
    first, second = first.flatten(1), second.flatten(1)
    finite = torch.isfinite(first).all(dim=1) & torch.isfinite(second).all(dim=1)
    ranks_first = average_ranks(first)
    ranks_second = average_ranks(second)
    ranks_first -= ranks_first.mean(dim=1, keepdim=True)
    ranks_second -= ranks_second.mean(dim=1, keepdim=True)
    covariance = (ranks_first * ranks_second).sum(dim=1)
    scale = (ranks_first.square().sum(dim=1) * ranks_second.square().sum(dim=1)).sqrt()
    rho = (covariance / scale).clamp(-1.0, 1.0)
    return torch.where(finite & (scale > 0), rho, torch.full_like(rho, math.nan))


def map_similarity(trained: torch.Tensor, randomised: torch.Tensor) -> dict[str, torch.Tensor]:
    """{measure: [B] float64} of maps [B, H, W] from the randomised model against the trained ones."""
    ssim = METRICS.get("ssim")()(randomised, GazeTargets(density=trained))
    return {"spearman": spearman(trained, randomised), "ssim": ssim.double()}


# --- layers and their re-initialisation ------------------------------------------------------


def parameterised_modules(module: nn.Module) -> dict[str, nn.Module]:
    """Name -> module for every module that holds parameters of its own (definition order)."""
    return {name: child for name, child in module.named_modules() if next(child.parameters(recurse=False), None) is not None}


@torch.no_grad()
def forward_order(adapter: ModelAdapter, pairs: PairBatch) -> tuple[list[str], list[str]]:
    """(parameterised modules in the order the classifier's forward first calls them, those it never calls)."""
    candidates = parameterised_modules(adapter.module)
    called: list[str] = []
    hooks = [child.register_forward_pre_hook(lambda _m, _i, name=name: called.append(name) if name not in called else None) for name, child in candidates.items()]
    try:
        adapter.logits(pairs.batch.images[:1], *(tensor[:1] for tensor in pairs.extra))
    finally:
        for hook in hooks:
            hook.remove()
    return called, [name for name in candidates if name not in called]


def layer_groups(names_in_forward_order: list[str], steps: int) -> list[list[str]]:
    """Contiguous groups of layers, output layer first, at most ``steps`` of them.

    With more layers than steps, the groups differ in size by at most one and the larger ones
    come last (the top of the network is randomised in the smallest pieces).
    """
    top_first = list(reversed(names_in_forward_order))
    count = min(steps, len(top_first))
    sizes = [len(top_first) // count + (index >= count - len(top_first) % count) for index in range(count)] if count else []
    bounds = np.cumsum([0, *sizes])
    return [top_first[bounds[index] : bounds[index + 1]] for index in range(count)]


def layer_seed(seed: int, layer_name: str) -> int:
    """A 63-bit seed from (run seed, layer name): a layer's new weights do not depend on the grouping."""
    digest = hashlib.sha256(f"{seed}:layer:{layer_name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@torch.no_grad()
def reinitialise(module: nn.Module, seed: int) -> None:
    """Re-initialise ``module``'s own parameters in place, deterministically from ``seed``.

    A module with ``reset_parameters`` runs it on a CPU copy under a forked CPU RNG seeded with
    ``seed`` (BatchNorm: weight 1, bias 0, running statistics reset), then copies back the
    module's *own* parameters and buffers only (its children, other layers, stay as they are);
    otherwise each own parameter is drawn from normal(0, 0.02) by a ``torch.Generator`` seeded
    with ``seed`` (parameters named ``*bias``: zeros).  Same seed, same weights, on any device.
    """
    if callable(getattr(module, "reset_parameters", None)):
        fresh = copy.deepcopy(module).cpu()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            fresh.reset_parameters()
        for target, source in zip([*module.parameters(recurse=False), *module.buffers(recurse=False)], [*fresh.parameters(recurse=False), *fresh.buffers(recurse=False)]):
            target.copy_(source)
        return
    generator = torch.Generator().manual_seed(seed)
    for name, parameter in module.named_parameters(recurse=False):
        fresh = torch.zeros(parameter.shape) if name.endswith("bias") else torch.randn(parameter.shape, generator=generator) * INIT_STD
        parameter.copy_(fresh)


def randomised_cascade(adapter: ModelAdapter, groups: list[list[str]], seed: int) -> Iterator[tuple[int, ModelAdapter]]:
    """Yield (k, adapter with groups[:k] re-initialised) for k = 0..len(groups), on one deep copy.

    The caller's adapter is never touched; the yielded adapter is the same object each time,
    randomised further at every step.
    """
    randomised = copy.deepcopy(adapter)
    modules = dict(randomised.module.named_modules())
    yield 0, randomised
    for step, group in enumerate(groups, start=1):
        for name in group:
            reinitialise(modules[name], layer_seed(seed, name))
        yield step, randomised


# --- the check -------------------------------------------------------------------------


def pair_batches(adapter: ModelAdapter, dataset, limit: int | None, batch_size: int, seed: int, device: torch.device) -> tuple[list[PairBatch], int]:
    """The (image, true-label) pairs of the first ``limit`` images, and how many images have none."""
    count = len(dataset) if limit is None else min(limit, len(dataset))
    batches, no_target = [], 0
    for start in range(0, count, batch_size):
        batch = collate([dataset[index] for index in range(start, min(start + batch_size, count))]).to(device)
        pairs = explanation_pairs(adapter, batch, "label", dataset.multi_label)
        no_target += len(batch) - len(set(pairs.rows))
        if pairs.rows:
            seeds = [image_seed(seed, image_id) for image_id in pairs.batch.image_ids]
            batches.append(PairBatch(pairs.batch, pairs.targets, seeds, adapter.inputs_from(pairs.batch)))
    return batches, no_target


def method_maps(method: Method, adapter: ModelAdapter, batches: list[PairBatch], grid: int) -> list[torch.Tensor]:
    """The method's maps [P, grid, grid] for each pair batch."""
    return [method(adapter, pairs.batch.images, pairs.targets, pairs.seeds, grid, pairs.extra) for pairs in batches]


def step_rows(method_name: str, step: int, batches: list[PairBatch], trained: list[torch.Tensor], maps: list[torch.Tensor]) -> pd.DataFrame:
    """One row per (pair, measure) of one method at one step."""
    frames = []
    for pairs, reference, current in zip(batches, trained, maps):
        measures = map_similarity(reference, current)
        base = {"method": method_name, "step": step, "image_id": pairs.batch.image_ids, "patient_id": pairs.batch.patient_ids, "target": pairs.targets.tolist()}
        frames += [pd.DataFrame({**base, "measure": name, "value": values.cpu().numpy()}) for name, values in measures.items()]
    return pd.concat(frames, ignore_index=True)


def cascade_values(trained: ModelAdapter, methods: dict[str, Method], batches: list[PairBatch], groups: list[list[str]], seed: int, grid: int) -> pd.DataFrame:
    """Every method's similarity to its trained-model maps at every step (one row per pair and measure)."""
    reference = {name: method_maps(method, trained, batches, grid) for name, method in methods.items()}
    frames = []
    for step, randomised in tqdm(randomised_cascade(trained, groups, seed), total=len(groups) + 1, desc="randomisation steps", unit="step"):
        for name, method in methods.items():
            frames.append(step_rows(name, step, batches, reference[name], method_maps(method, randomised, batches, grid)))
    values = pd.concat(frames, ignore_index=True)
    values["target"] = [trained.class_names[index] for index in values["target"]]
    return values


def checked_methods(selection: MethodSelection, adapter: ModelAdapter) -> dict[str, Method]:
    """The selected methods that can explain ``adapter`` (pre-flight; a named method that cannot is refused, one from a set left out)."""
    instances = {}
    for name in selection.names:
        method = METHODS.get(name)(**selection.params.get(name, {}))
        try:
            method.check_model(adapter)
        except UserError:
            if name not in selection.optional:
                raise
            continue
        instances[name] = method
    if not instances:
        raise UserError(f"none of the methods asked for can explain {adapter.name}")
    return instances


def run_cascade(
    adapter: ModelAdapter,
    dataset,
    methods: str | list,
    limit: int | None = DEFAULT_LIMIT,
    batch_size: int = 8,
    device: str | torch.device = "auto",
    seed: int = 0,
    steps: int = DEFAULT_STEPS,
) -> Cascade:
    """Cascading randomisation of ``adapter``'s layers (top down) on the first ``limit`` images of ``dataset``."""
    if steps < 1:
        raise UserError(f"--steps must be at least 1, got {steps}")
    selection = select_methods(methods)
    device = resolve_device(device)
    trained = map_adapter(copy.deepcopy(adapter), dataset.class_names, None, "label").to(device).eval()
    instances = checked_methods(selection, trained)
    batches, no_target = pair_batches(trained, dataset, limit, batch_size, seed, device)
    if not batches:
        raise UserError(f"none of the images used (--limit {limit}) has a positive label to explain; raise --limit or pick another --split")
    called, unused = forward_order(trained, batches[0])
    groups = layer_groups(called, steps)
    values = cascade_values(trained, instances, batches, groups, seed, dataset.grid)
    warnings = sorted({message for method in instances.values() for message in method.warnings})
    if no_target:
        warnings.append(f"{no_target} image(s) without a positive label to explain were left out")
    settings = {"limit": limit, "batch_size": batch_size, "device": str(device), "seed": seed, "steps": steps}
    return Cascade(values, groups, unused, instances, warnings, settings)


def cascade_config(cascade: Cascade, dataset, extra: dict | None = None) -> dict:
    """How the cascade was run, for config.yaml (``extra``: what the caller knows beyond it, e.g. the model and checkpoint)."""
    settings = cascade.settings
    return {
        "gazebench_version": gazebench.__version__,
        "test": "cascading model-parameter randomisation (Adebayo et al. 2018), output layer first",
        **(extra or {}),
        "data": {"name": getattr(dataset, "name", None), "root": str(getattr(dataset, "root", "")), "split": getattr(dataset, "split", None), "images": len(dataset), "limit": settings["limit"], "grid": dataset.grid},
        "methods": {name: method.params for name, method in cascade.methods.items()},
        "target": "label",
        "measures": {"spearman": "rank correlation, average ranks for ties", "ssim": METRICS.get("ssim")().settings},
        "steps": settings["steps"],
        "layer_groups": cascade.groups,
        "unused_layers": cascade.unused_layers,
        "reinitialisation": f"reset_parameters() of leaf modules (CPU RNG seeded per layer), else normal(0, {INIT_STD}) weights and zero biases",
        "seed": settings["seed"],
        "batch_size": settings["batch_size"],
        "device": settings["device"],
    }
