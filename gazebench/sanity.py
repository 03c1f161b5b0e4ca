"""Sanity check: the cascading model-parameter randomisation test (Adebayo et al. 2018).

A saliency method that explains the *model* must change when the model's weights are
destroyed.  ``run_sanity_check`` computes each method's maps with the trained model, then
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
gives 1.  A method whose mean Spearman similarity with the fully randomised model is above
``threshold`` fails: its maps do not depend on what the model learned.
"""

from __future__ import annotations

import copy
import hashlib
import io
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from torch import nn
from tqdm import tqdm

import gazebench
from gazebench.atomic import write_atomic
from gazebench.data.sample import Batch, collate
from gazebench.engine import explanation_pairs, resolve_device
from gazebench.errors import UserError
from gazebench.leaderboard import bootstrap_ci
from gazebench.methods.base import Method, image_seed
from gazebench.metrics.base import GazeTargets
from gazebench.models.base import ModelAdapter
from gazebench.models.label_map import map_adapter
from gazebench.registry import METHODS, METRICS

DEFAULT_STEPS = 8
# Heuristic cut-off, not from the paper (Adebayo et al. judge the curves by eye): above 0.5,
# more than half of the maps' rank order survives a model whose every weight is random.
DEFAULT_THRESHOLD = 0.5
DEFAULT_LIMIT = 16
MEASURES = ("spearman", "ssim")
BOOTSTRAP_REPLICATES = 1000
BOOTSTRAP_LEVEL = 0.95
INIT_STD = 0.02  # normal(0, 0.02) for parameters of modules without reset_parameters (biases: zeros)


@dataclass
class PairBatch:
    """One batch of (image, target) pairs, fixed for every step."""

    batch: Batch  # rows repeated in pair order
    targets: torch.Tensor  # [P] class index each map explains
    seeds: list[int]  # per-pair noise seeds of sampling methods
    extra: tuple  # the model's extra inputs (none for image-only models)


@dataclass
class SanityResult:
    """What ``run_sanity_check`` measured (``summary`` is sanity.csv)."""

    summary: pd.DataFrame  # method, step, label, layers, measure, mean, ci_low, ci_high, n, n_nan
    values: pd.DataFrame  # one row per (method, step, image, target, measure)
    groups: list[list[str]]  # layer groups, top first; step k randomises groups[:k]
    unused_layers: list[str]  # parameterised modules the classifier's forward never calls (left as trained)
    threshold: float
    verdicts: dict[str, str] = field(default_factory=dict)  # method -> one line
    failing: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    out: Path | None = None


# --- similarity measures ---------------------------------------------------------------


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """[B, N] -> float64 ranks 1..N along dim 1; tied values share their mean rank (scipy's 'average')."""
    sorted_values, order = values.sort(dim=1)
    count = values.shape[1]
    positions = torch.arange(count, device=values.device).expand_as(order)
    starts = torch.ones_like(order, dtype=torch.bool)
    starts[:, 1:] = sorted_values[:, 1:] != sorted_values[:, :-1]
    ends = torch.ones_like(starts)
    ends[:, :-1] = starts[:, 1:]
    first = torch.where(starts, positions, 0).cummax(dim=1).values
    last = torch.where(ends, positions, count - 1).flip(1).cummin(dim=1).values.flip(1)
    tied_ranks = (first + last).double() / 2 + 1
    return torch.empty_like(tied_ranks).scatter_(1, order, tied_ranks)


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


def shared_prefix(names: list[str]) -> str:
    """The dotted module path that every name starts with ('unet.' for unet.encoder.x, unet.head): left out of labels."""
    parts = [name.split(".")[:-1] for name in names]
    common = []
    for level in zip(*parts):
        if len(set(level)) > 1:
            break
        common.append(level[0])
    return "".join(f"{part}." for part in common)


def group_label(group: list[str], prefix: str = "") -> str:
    """A short axis label for a layer group: its one name, or 'top … bottom (n)', without ``prefix``."""
    names = [name.removeprefix(prefix) for name in group]
    return names[0] if len(names) == 1 else f"{names[0]} … {names[-1]} ({len(names)})"


def summarise(values: pd.DataFrame, groups: list[list[str]], seed: int) -> pd.DataFrame:
    """sanity.csv: per (method, step, measure) the mean over pairs, its patient-bootstrap CI, n and NaN count."""
    prefix = shared_prefix([name for group in groups for name in group])
    labels = ["trained", *(group_label(group, prefix) for group in groups)]
    layers = ["", *(";".join(group) for group in groups)]
    cells = []
    for (method, step, measure), cell in values.groupby(["method", "step", "measure"], sort=False):
        finite = np.isfinite(cell["value"].to_numpy(dtype=float))
        mean = float(cell["value"][finite].mean()) if finite.any() else math.nan
        low, high = bootstrap_ci(cell["value"], cell["patient_id"], n_boot=BOOTSTRAP_REPLICATES, seed=seed, ci=BOOTSTRAP_LEVEL)
        cells.append({"method": method, "step": step, "label": labels[step], "layers": layers[step], "measure": measure, "mean": mean, "ci_low": low, "ci_high": high, "n": int(finite.sum()), "n_nan": int((~finite).sum())})
    return pd.DataFrame(cells)


def fully_randomised_spearman(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary rows of the mean Spearman similarity at the last step (everything randomised)."""
    return summary[(summary.measure == "spearman") & (summary.step == summary.step.max())]


def failing_methods(summary: pd.DataFrame, threshold: float) -> list[str]:
    """Methods whose mean Spearman similarity at full randomisation is above ``threshold``."""
    final = fully_randomised_spearman(summary)
    return final.loc[final["mean"] > threshold, "method"].tolist()


def verdicts(summary: pd.DataFrame, threshold: float) -> dict[str, str]:
    """method -> one line: FAILS when its mean Spearman at full randomisation is above ``threshold``."""
    final = fully_randomised_spearman(summary)
    lines = {}
    for row in final.itertuples():
        if math.isnan(row.mean):
            lines[row.method] = f"{row.method}: undetermined — no finite Spearman at full randomisation ({row.n_nan} constant or non-finite map(s))"
        elif row.mean > threshold:
            lines[row.method] = f"{row.method}: FAILS — maps survive randomisation (Spearman {row.mean:.2f} at full randomisation > {threshold:g})"
        else:
            lines[row.method] = f"{row.method}: passes — Spearman {row.mean:.2f} at full randomisation (<= {threshold:g})"
    return lines


def run_sanity_check(
    adapter: ModelAdapter,
    dataset,
    methods: list[str],
    limit: int | None = DEFAULT_LIMIT,
    batch_size: int = 8,
    device: str | torch.device = "auto",
    seed: int = 0,
    steps: int = DEFAULT_STEPS,
    threshold: float = DEFAULT_THRESHOLD,
    out: Path | None = None,
    config: dict | None = None,
) -> SanityResult:
    """Cascading randomisation of ``adapter``'s layers (top down) on the first ``limit`` images of ``dataset``.

    ``config``: what the caller knows beyond these arguments (model name, checkpoint),
    recorded in config.yaml.  With ``out``, writes sanity.csv, sanity.md, sanity.png and
    config.yaml there once everything is computed, each file atomically.
    """
    if steps < 1:
        raise UserError(f"--steps must be at least 1, got {steps}")
    instances = {name: METHODS.get(name)() for name in methods}
    device = resolve_device(device) if isinstance(device, str) else device
    trained = map_adapter(copy.deepcopy(adapter), dataset.class_names, None, "label").to(device).eval()
    batches, no_target = pair_batches(trained, dataset, limit, batch_size, seed, device)
    if not batches:
        raise UserError(f"none of the images used (--limit {limit}) has a positive label to explain; raise --limit or pick another --split")
    called, unused = forward_order(trained, batches[0])
    groups = layer_groups(called, steps)
    values = cascade_values(trained, instances, batches, groups, seed, dataset.grid)
    summary = summarise(values, groups, seed)
    result = SanityResult(summary, values, groups, unused, threshold, verdicts(summary, threshold), failing_methods(summary, threshold), out=out)
    result.warnings = sorted({message for method in instances.values() for message in method.warnings})
    if no_target:
        result.warnings.append(f"{no_target} image(s) without a positive label to explain were left out")
    if out is not None:
        record = sanity_config(result, dataset, instances, limit, batch_size, device, seed, steps, config)
        write_outputs(result, Path(out), record)
    return result


# --- outputs ---------------------------------------------------------------------------------


def sanity_config(result: SanityResult, dataset, methods: dict[str, Method], limit, batch_size, device, seed, steps, extra: dict | None) -> dict:
    return {
        "gazebench_version": gazebench.__version__,
        "test": "cascading model-parameter randomisation (Adebayo et al. 2018), output layer first",
        **(extra or {}),
        "data": {"name": getattr(dataset, "name", None), "root": str(getattr(dataset, "root", "")), "split": getattr(dataset, "split", None), "images": len(dataset), "limit": limit, "grid": dataset.grid},
        "methods": {name: method.params for name, method in methods.items()},
        "target": "label",
        "measures": {"spearman": "rank correlation, average ranks for ties", "ssim": METRICS.get("ssim")().settings},
        "steps": steps,
        "layer_groups": result.groups,
        "unused_layers": result.unused_layers,
        "reinitialisation": f"reset_parameters() of leaf modules (CPU RNG seeded per layer), else normal(0, {INIT_STD}) weights and zero biases",
        "threshold": result.threshold,
        "seed": seed,
        "batch_size": batch_size,
        "bootstrap": {"replicates": BOOTSTRAP_REPLICATES, "interval": "percentile", "level": BOOTSTRAP_LEVEL, "unit": "patient", "seed": seed},
        "device": str(device),
    }


def format_markdown(result: SanityResult) -> str:
    """sanity.md: method x step tables of mean Spearman and SSIM [95% CI], the steps' layers, the verdicts."""
    lines = ["# Sanity check: cascading model-parameter randomisation", ""]
    for measure in MEASURES:
        lines += [f"## Mean {measure} similarity to the trained model's maps [95% CI]", "", *_measure_table(result.summary, measure), ""]
    lines += ["## Steps (step k: groups 1..k re-initialised, output layer first; every name in sanity.csv)", "", "step | layers re-initialised at this step", "---|---", "0 | none (trained model)"]
    lines += [f"{step} | {group_label(group)}" for step, group in enumerate(result.groups, start=1)]  # full names here
    if result.unused_layers:
        lines += ["", f"Left as trained: {len(result.unused_layers)} parameterised module(s) that the classifier's forward never calls (e.g. a gaze decoder; names in config.yaml)."]
    lines += ["", f"## Verdicts (fails: mean Spearman at full randomisation > {result.threshold:g})", ""]
    lines += ["The threshold is a heuristic (the paper judges the curves by eye): read it with the table above.", ""]
    lines += [f"- {line}" for line in result.verdicts.values()]
    lines += ["", *nan_lines(result.summary), *(f"- warning: {message}" for message in result.warnings)]
    return "\n".join(lines).rstrip() + "\n"


def _measure_table(summary: pd.DataFrame, measure: str) -> list[str]:
    cells = summary[summary.measure == measure]
    steps = sorted(cells.step.unique())
    rows = [" | ".join(["method", *(str(step) for step in steps)]), " | ".join(["---"] * (len(steps) + 1))]
    for method, group in cells.groupby("method", sort=False):
        by_step = group.set_index("step")
        rows.append(" | ".join([method, *(_cell(by_step.loc[step]) for step in steps)]))
    return rows


def _cell(row) -> str:
    if math.isnan(row["mean"]):
        return "NaN"
    return f"{row['mean']:.2f} [{row['ci_low']:.2f}, {row['ci_high']:.2f}]"


def nan_lines(summary: pd.DataFrame) -> list[str]:
    """One line per (method, step, measure) with NaN similarities (constant or non-finite maps)."""
    return [f"- NaN: {row.method} step {row.step} {row.measure}: {row.n_nan} of {row.n + row.n_nan} pairs (constant or non-finite map)" for row in summary[summary.n_nan > 0].itertuples()]


def write_outputs(result: SanityResult, out: Path, config: dict) -> None:
    """sanity.csv, sanity.md, sanity.png and config.yaml, each written atomically."""
    from gazebench.report.sanity_figure import sanity_figure_png

    png = sanity_figure_png(result.summary)
    buffer = io.StringIO()
    result.summary.to_csv(buffer, index=False)
    write_atomic(out / "sanity.csv", buffer.getvalue())
    write_atomic(out / "sanity.md", format_markdown(result))
    write_atomic(out / "sanity.png", png)
    write_atomic(out / "config.yaml", yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
