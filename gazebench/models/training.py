"""The training loop, shared by every model family, and the dev-set AUROC it selects on.

What is model-specific comes from the ``ModelSpec``: how to build the adapter
(``spec.build_adapter(class_names=..., **recipe["model"])``) and the loss of one batch
(``spec.loss(adapter, batch, **recipe["loss"])``).  The rest follows ``recipe["training"]``:
Adam, gradient clipping by value, a cyclical triangular2 learning rate stepped every batch,
one pass over the dev set per epoch scored by mean one-vs-rest AUROC, the best-on-dev
weights kept (the test split is never seen here), early stopping after ``patience`` epochs
without improvement, and the best weights saved as a checkpoint at the end.

Probabilities are per-class sigmoids, not a softmax: the heads are trained with BCE against
one-hot labels (as in the EGD paper), so each output is its own one-vs-rest score.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from gazebench.data.sample import Sample, collate
from gazebench.errors import UserError
from gazebench.models.base import ModelAdapter
from gazebench.models.checkpoint import save_checkpoint
from gazebench.models.spec import ModelSpec

SUPPORTED_OPTIMIZERS = ("adam",)
SUPPORTED_LR_MODES = ("triangular", "triangular2")
SUPPORTED_SELECTIONS = ("dev_mean_auroc",)


@dataclass
class TrainResult:
    adapter: ModelAdapter  # best-on-dev weights, in eval mode
    checkpoint: Path
    best_epoch: int  # 1-based
    best_dev_auroc: float  # mean one-vs-rest AUROC on dev at best_epoch
    history: list[dict] = field(default_factory=list)  # one record per epoch run


def train(
    spec: ModelSpec,
    class_names: Sequence[str],
    train_samples: Sequence[Sample],
    dev_samples: Sequence[Sample],
    recipe: dict,
    seed: int,
    out: str | Path,
    progress: bool = True,
    device: str | torch.device = "cpu",
) -> TrainResult:
    """Train ``spec``'s model from scratch with ``recipe``; save the best-on-dev checkpoint to ``out``."""
    settings = recipe["training"]
    _check_settings(settings, len(train_samples), len(dev_samples))
    seed_everything(seed)
    adapter = spec.build_adapter(class_names=list(class_names), **recipe["model"]).to(device)
    loader = _training_loader(train_samples, settings["batch_size"], seed)
    optimizer = torch.optim.Adam(adapter.module.parameters(), lr=settings["lr"])
    scheduler = _lr_scheduler(optimizer, settings, len(loader))

    history: list[dict] = []
    best_score, best_epoch, best_dev_auroc, best_state = -math.inf, 0, math.nan, None
    for epoch in range(1, settings["epochs"] + 1):
        started = time.perf_counter()
        bar = tqdm(total=len(loader), desc=f"{spec.name} epoch {epoch}/{settings['epochs']}", disable=not progress, unit="batch")
        train_loss = _train_one_epoch(spec, adapter, loader, bar, optimizer, scheduler, recipe["loss"], settings, device)
        dev = evaluate_auroc(adapter, dev_samples, settings["batch_size"], device)
        bar.set_postfix(loss=f"{train_loss:.4f}", dev_auroc=f"{dev['mean']:.4f}")
        bar.close()
        history.append(
            {
                "epoch": epoch,
                "train_loss": train_loss,
                "dev_mean_auroc": dev["mean"],
                "dev_auroc": dev["per_class"],
                "lr": optimizer.param_groups[0]["lr"],
                "seconds": time.perf_counter() - started,
            }
        )
        score = dev["mean"] if not math.isnan(dev["mean"]) else -math.inf  # NaN: no class scorable on dev
        if best_state is None or score > best_score:
            best_score, best_epoch, best_dev_auroc = score, epoch, dev["mean"]
            best_state = {key: value.detach().cpu().clone() for key, value in adapter.module.state_dict().items()}
        elif settings.get("patience") and epoch - best_epoch >= settings["patience"]:
            break

    adapter.module.load_state_dict(best_state)
    config = {
        "model": dict(recipe["model"]),
        "training": {"recipe": recipe, "seed": seed, "best_epoch": best_epoch, "dev_mean_auroc": best_dev_auroc, "history": history},
    }
    checkpoint = save_checkpoint(out, spec.name, best_state, config, class_names)
    return TrainResult(adapter.eval(), checkpoint, best_epoch, best_dev_auroc, history)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (weight initialisation and dropout use torch's global RNG)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _check_settings(settings: dict, n_train: int, n_dev: int) -> None:
    if settings.get("optimizer", "adam") not in SUPPORTED_OPTIMIZERS:
        raise UserError(f"unknown optimizer {settings['optimizer']!r}; choose one of: {', '.join(SUPPORTED_OPTIMIZERS)}")
    schedule = settings.get("lr_schedule")
    if schedule and schedule.get("mode") not in SUPPORTED_LR_MODES:
        raise UserError(f"unknown lr_schedule mode {schedule.get('mode')!r}; choose one of: {', '.join(SUPPORTED_LR_MODES)}")
    if settings.get("selection", "dev_mean_auroc") not in SUPPORTED_SELECTIONS:
        raise UserError(f"unknown selection {settings['selection']!r}; choose one of: {', '.join(SUPPORTED_SELECTIONS)}")
    if n_train < 2:
        raise UserError(f"training needs at least 2 training images, got {n_train}")
    if n_dev < 1:
        raise UserError("training needs dev images to select the epoch on; the dev split is empty")


def _training_loader(samples: Sequence[Sample], batch_size: int, seed: int) -> DataLoader:
    """Shuffled batches in an order fixed by ``seed``.

    A last batch of a single image is dropped: BatchNorm cannot normalise one value per channel.
    """
    return DataLoader(
        list(samples),
        batch_size=batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
        collate_fn=collate,
        num_workers=0,
        drop_last=len(samples) % batch_size == 1,
    )


def _lr_scheduler(optimizer: torch.optim.Optimizer, settings: dict, batches_per_epoch: int):
    """CyclicLR between ``base_lr`` and ``lr``, half-cycle ``step_size_up_epochs`` epochs (None: constant lr)."""
    schedule = settings.get("lr_schedule")
    if not schedule:
        return None
    return torch.optim.lr_scheduler.CyclicLR(
        optimizer,
        base_lr=schedule["base_lr"],
        max_lr=settings["lr"],
        step_size_up=max(1, round(schedule["step_size_up_epochs"] * batches_per_epoch)),
        mode=schedule["mode"],
        cycle_momentum=False,
    )


def _train_one_epoch(spec, adapter, loader, bar, optimizer, scheduler, loss_params, settings, device) -> float:
    """One pass over the training batches; returns the mean training loss (weighted by batch size)."""
    adapter.module.train()
    total, count = 0.0, 0
    for batch in loader:
        batch = batch.to(device)
        loss = spec.loss(adapter, batch, **loss_params)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if settings.get("grad_clip_value"):
            torch.nn.utils.clip_grad_value_(adapter.module.parameters(), settings["grad_clip_value"])
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total += loss.item() * len(batch)
        count += len(batch)
        bar.set_postfix(loss=f"{total / count:.4f}", refresh=False)
        bar.update(1)
    return total / count


@torch.inference_mode()
def predict(adapter: ModelAdapter, samples: Sequence[Sample], batch_size: int = 64, device: str | torch.device = "cpu") -> torch.Tensor:
    """Per-class sigmoid probabilities [N, C] (eval mode; see the module docstring for why sigmoid)."""
    adapter.eval()
    probs = []
    for start in range(0, len(samples), batch_size):
        batch = collate(list(samples[start : start + batch_size])).to(device)
        probs.append(torch.sigmoid(adapter.logits(batch.images, *adapter.inputs_from(batch))).float().cpu())
    return torch.cat(probs) if probs else torch.zeros(0, len(adapter.class_names))


def evaluate_auroc(adapter: ModelAdapter, samples: Sequence[Sample], batch_size: int = 64, device: str | torch.device = "cpu") -> dict:
    """``{"per_class": {name: auroc}, "mean": float}``; the mean skips classes with NaN AUROC."""
    probs = predict(adapter, samples, batch_size, device)
    labels = torch.stack([s.labels.float() for s in samples]) if samples else torch.zeros(0, len(adapter.class_names))
    per_class = auroc_ovr(probs, labels)
    defined = per_class[~per_class.isnan()]
    mean = float(defined.mean()) if len(defined) else math.nan
    return {"per_class": dict(zip(adapter.class_names, per_class.tolist())), "mean": mean}


def auroc_ovr(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """One-vs-rest AUROC per class [C] from scores [N, C] and labels [N, C] (1 / 0 / NaN).

    Mann-Whitney form: ``(sum of positive ranks - P(P+1)/2) / (P * N)`` with average ranks for
    ties (a tied positive/negative pair counts one half), over the images whose label for the
    class is known (NaN = uncertain, left out).  NaN for a class without positives or negatives.
    """
    scores = probs.detach().to(torch.float64).cpu()
    labels = labels.detach().to(torch.float64).cpu()
    aurocs = torch.full((scores.shape[1],), math.nan, dtype=torch.float64)
    for cls in range(scores.shape[1]):
        known = ~labels[:, cls].isnan()
        positive = labels[known, cls] == 1
        n_pos, n_neg = int(positive.sum()), int((~positive).sum())
        if n_pos == 0 or n_neg == 0:
            continue
        ranks = average_ranks(scores[known, cls])
        aurocs[cls] = (ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return aurocs


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """1-based ranks of a 1-D tensor, tied values sharing the mean of their ranks."""
    _, inverse, counts = torch.unique(values, sorted=True, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).to(torch.float64)  # rank of the last member of each tie group
    mean_rank = ends - (counts.to(torch.float64) - 1) / 2
    return mean_rank[inverse]
