"""The training loop, shared by every model family, and the dev-set AUROC it selects on.

What is model-specific comes from the ``ModelSpec``: how to build the adapter
(``spec.build_adapter(class_names=..., **recipe["model"])``) and the loss of one batch
(``spec.loss(adapter, batch, **recipe["loss"])``).  The rest follows ``recipe["training"]``:
Adam, gradient clipping by value, an optional learning-rate schedule (cyclical ``triangular``
/ ``triangular2`` stepped every batch, or ``plateau``: multiplied by ``factor`` after
``patience`` epochs without dev gain), optional augmentation (``augment``: flip, rotation;
gazebench/models/training/augment.py), one pass over the dev set per epoch scored by mean one-vs-rest
AUROC, the best-on-dev weights kept (the test split is never seen here), early stopping after
``patience`` epochs without improvement, the state saved after every epoch so that an
interrupted run resumes, and the best weights saved as a checkpoint at the end.

Probabilities are per-class sigmoids, not a softmax: the heads are trained with BCE against
one-hot labels (as in the EGD paper), so each output is its own one-vs-rest score.  Test AUROC
intervals use gazebench's one patient bootstrap (gazebench/bootstrap.py).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import pickle
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from gazebench.atomic import write_atomic
from gazebench.auroc import auroc_ovr, bootstrap_auroc_ci  # noqa: F401 (re-exported: training reports them)
from gazebench.data.sample import Sample, collate
from gazebench.errors import UserError
from gazebench.models.base import ModelAdapter
from gazebench.models.checkpoint import save_checkpoint
from gazebench.models.spec import ModelSpec
from gazebench.models.training.augment import Augmentation
from gazebench.outputs import writing

SUPPORTED_OPTIMIZERS = ("adam",)
SUPPORTED_LR_MODES = ("triangular", "triangular2")
PLATEAU = "plateau"
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
    """Train ``spec``'s model from scratch with ``recipe``; save the best-on-dev checkpoint to ``out``.

    After every epoch the whole training state (weights, optimizer, schedules, random generators,
    best weights so far, history) is saved to ``<out>.resume.pt``; an interrupted run started again
    with the same model, recipe, seed and data continues from the last finished epoch, and the
    result is the same as an uninterrupted run's.  The file is removed when training ends.
    """
    settings = recipe["training"]
    _check_settings(settings, len(train_samples), len(dev_samples))
    seed_everything(seed)
    adapter = spec.build_adapter(class_names=list(class_names), **recipe["model"]).to(device)
    loader = _training_loader(train_samples, settings["batch_size"], seed)
    optimizer = torch.optim.Adam(adapter.module.parameters(), lr=settings["lr"])
    scheduler = _lr_scheduler(optimizer, settings, len(loader))
    plateau = _plateau_scheduler(optimizer, settings)
    augmentation = Augmentation.from_settings(settings.get("augment"))
    augment_generator = torch.Generator().manual_seed(seed + 1)
    state = RunState()
    resume = ResumeFile(Path(out).with_suffix(".resume.pt"), _fingerprint(spec, class_names, recipe, seed, train_samples, dev_samples))
    stateful = {"optimizer": optimizer, "scheduler": scheduler, "plateau": plateau}
    generators = {"loader": loader.generator, "augment": augment_generator}
    if resume.load(adapter, stateful, generators, state) and progress:
        print(f"resuming {spec.name} from {resume.path} after epoch {state.epoch}")

    for epoch in range(state.epoch + 1, settings["epochs"] + 1):
        if state.stopped:
            break
        started = time.perf_counter()
        bar = tqdm(total=len(loader), desc=f"{spec.name} epoch {epoch}/{settings['epochs']}", disable=not progress, unit="batch")
        augment = (lambda batch: augmentation(batch, augment_generator)) if augmentation else None  # noqa: E731
        train_loss = _train_one_epoch(spec, adapter, loader, bar, optimizer, scheduler, recipe["loss"], settings, device, augment)
        dev = evaluate_auroc(adapter, dev_samples, settings["batch_size"], device)
        bar.set_postfix(loss=f"{train_loss:.4f}", dev_auroc=f"{dev['mean']:.4f}")
        bar.close()
        state.record(epoch, train_loss, dev, optimizer.param_groups[0]["lr"], time.perf_counter() - started, adapter, settings.get("patience"))
        if plateau is not None and not math.isnan(dev["mean"]):
            plateau.step(dev["mean"])
        with resume.failing_writes(resume.path, epoch - 1):  # the file on disk is still the previous epoch's
            resume.save(adapter, stateful, generators, state)

    adapter.module.load_state_dict(state.best_state)
    config = {
        "model": dict(recipe["model"]),
        "training": {"recipe": recipe, "seed": seed, "best_epoch": state.best_epoch, "dev_mean_auroc": state.best_dev_auroc, "history": state.history},
    }
    with resume.failing_writes(Path(out), state.epoch):
        checkpoint = save_checkpoint(out, spec.name, state.best_state, config, class_names)
    resume.remove()
    return TrainResult(adapter.eval(), checkpoint, state.best_epoch, state.best_dev_auroc, state.history)


@dataclass
class RunState:
    """Where a training run stands: epochs done, the best epoch on dev and its weights."""

    epoch: int = 0
    best_score: float = -math.inf
    best_epoch: int = 0
    best_dev_auroc: float = math.nan
    best_state: dict | None = None
    history: list[dict] = field(default_factory=list)
    stopped: bool = False  # early stopping reached

    def record(self, epoch: int, train_loss: float, dev: dict, lr: float, seconds: float, adapter: ModelAdapter, patience: int | None) -> None:
        self.epoch = epoch
        self.history.append(
            {"epoch": epoch, "train_loss": train_loss, "dev_mean_auroc": dev["mean"], "dev_auroc": dev["per_class"], "lr": lr, "seconds": seconds}
        )
        score = dev["mean"] if not math.isnan(dev["mean"]) else -math.inf  # NaN: no class scorable on dev
        if self.best_state is None or score > self.best_score:
            self.best_score, self.best_epoch, self.best_dev_auroc = score, epoch, dev["mean"]
            self.best_state = {key: value.detach().cpu().clone() for key, value in adapter.module.state_dict().items()}
        elif patience and epoch - self.best_epoch >= patience:
            self.stopped = True

    def to_record(self) -> dict:
        return {name: getattr(self, name) for name in ("epoch", "best_score", "best_epoch", "best_dev_auroc", "best_state", "history", "stopped")}


class ResumeFile:
    """The per-epoch training state on disk (tensors and plain values: read with weights_only=True)."""

    FORMAT = "gazebench-resume-1"

    def __init__(self, path: Path, fingerprint: str):
        self.path, self.fingerprint = path, fingerprint

    def save(self, adapter: ModelAdapter, stateful: dict, generators: dict, state: RunState) -> None:
        payload = {
            "format": self.FORMAT,
            "fingerprint": self.fingerprint,
            "model": adapter.module.state_dict(),
            "stateful": {name: obj.state_dict() for name, obj in stateful.items() if obj is not None},
            "generators": {name: generator.get_state() for name, generator in generators.items()},
            "torch_rng": torch.get_rng_state(),
            "state": state.to_record(),
        }
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        write_atomic(self.path, buffer.getvalue())

    def load(self, adapter: ModelAdapter, stateful: dict, generators: dict, state: RunState) -> bool:
        """Restore a matching saved state; a file for another run is ignored (and later replaced)."""
        if not self.path.is_file():
            return False
        try:
            payload = torch.load(self.path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError):
            return False
        if not isinstance(payload, dict) or payload.get("format") != self.FORMAT or payload.get("fingerprint") != self.fingerprint:
            return False
        adapter.module.load_state_dict(payload["model"])
        for name, obj in stateful.items():
            if obj is not None:
                obj.load_state_dict(payload["stateful"][name])
        for name, generator in generators.items():
            generator.set_state(payload["generators"][name])
        torch.set_rng_state(payload["torch_rng"])
        for name, value in payload["state"].items():
            setattr(state, name, value)
        return True

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)

    @contextmanager
    def failing_writes(self, path: Path, saved_epoch: int):
        """An OSError while writing ``path`` (permission, no space) as one line: what is kept, and that rerunning resumes.

        ``saved_epoch``: the epoch whose state this file holds on disk when the write fails (0: none).
        """
        if saved_epoch > 0 and self.path.is_file():  # atomic writes: the file on disk is the same before and after a failed write
            kept = f"kept: the training state after epoch {saved_epoch} ({self.path}); free space or fix the folder, then rerun the same command: it resumes from there"
        else:
            kept = "nothing was kept (no epoch had been saved); free space or fix the folder, then rerun the same command"
        with writing(path, kept):
            yield


def _fingerprint(spec: ModelSpec, class_names, recipe: dict, seed: int, train_samples, dev_samples) -> str:
    """What must match for a saved state to be resumed: model, classes, recipe, seed and the images."""
    identity = {
        "model": spec.name,
        "classes": list(class_names),
        "recipe": recipe,
        "seed": seed,
        "train": [s.image_id for s in train_samples],
        "dev": [s.image_id for s in dev_samples],
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (weight initialisation and dropout use torch's global RNG)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _check_settings(settings: dict, n_train: int, n_dev: int) -> None:
    if settings.get("optimizer", "adam") not in SUPPORTED_OPTIMIZERS:
        raise UserError(f"unknown optimizer {settings['optimizer']!r}; choose one of: {', '.join(SUPPORTED_OPTIMIZERS)}")
    schedule = settings.get("lr_schedule")
    if schedule and schedule.get("mode") not in (*SUPPORTED_LR_MODES, PLATEAU):
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
    """CyclicLR between ``base_lr`` and ``lr``, half-cycle ``step_size_up_epochs`` epochs, stepped
    every batch (None: no cyclical schedule)."""
    schedule = settings.get("lr_schedule")
    if not schedule or schedule["mode"] == PLATEAU:
        return None
    return torch.optim.lr_scheduler.CyclicLR(
        optimizer,
        base_lr=schedule["base_lr"],
        max_lr=settings["lr"],
        step_size_up=max(1, round(schedule["step_size_up_epochs"] * batches_per_epoch)),
        mode=schedule["mode"],
        cycle_momentum=False,
    )


def _plateau_scheduler(optimizer: torch.optim.Optimizer, settings: dict):
    """ReduceLROnPlateau on the dev mean AUROC (CheXclusion: halve the lr after 3 epochs without gain)."""
    schedule = settings.get("lr_schedule")
    if not schedule or schedule["mode"] != PLATEAU:
        return None
    return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=schedule.get("factor", 0.5), patience=schedule.get("patience", 3))


def _train_one_epoch(spec, adapter, loader, bar, optimizer, scheduler, loss_params, settings, device, augment=None) -> float:
    """One pass over the training batches; returns the mean training loss (weighted by batch size)."""
    adapter.module.train()
    total, count = 0.0, 0
    for batch in loader:
        batch = batch.to(device)
        if augment is not None:
            batch = augment(batch)
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


def evaluate_auroc(
    adapter: ModelAdapter,
    samples: Sequence[Sample],
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    n_boot: int = 0,
    seed: int = 0,
) -> dict:
    """``{"per_class": {name: auroc}, "mean": float}``; the mean skips classes with NaN AUROC.

    With ``n_boot`` > 0 also ``"ci"``: ``{name: (low, high)}``, the patient-level percentile
    bootstrap 95% interval of each class's AUROC (``bootstrap_auroc_ci``).
    """
    probs = predict(adapter, samples, batch_size, device)
    labels = torch.stack([s.labels.float() for s in samples]) if samples else torch.zeros(0, len(adapter.class_names))
    per_class = auroc_ovr(probs, labels)
    defined = per_class[~per_class.isnan()]
    mean = float(defined.mean()) if len(defined) else math.nan
    result = {"per_class": dict(zip(adapter.class_names, per_class.tolist())), "mean": mean}
    if n_boot:
        intervals = bootstrap_auroc_ci(probs, labels, [s.patient_id for s in samples], n_boot, seed)
        result["ci"] = dict(zip(adapter.class_names, intervals))
    return result
