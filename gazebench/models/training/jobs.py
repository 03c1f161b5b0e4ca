"""Training jobs and finding the model a run uses.

``run`` without ``--checkpoint`` on the embedded dataset uses a model that gazebench trains
once (the model's recipe for it, seed 0) and caches in $GAZEBENCH_HOME/models, one entry per
model, recipe (name and content hash), ``--epochs`` override and seed (``cached_checkpoint``):
``train --epochs 1`` writes its own entry and never replaces the one ``run`` uses, and
``run --no-train`` refuses instead of training.  For any other model or dataset ``run`` says
which ``gazebench train`` command makes the checkpoint.  A family that opens its own weights
(``ModelSpec.open_for_run``: ``xrv:``) is opened by its spec; one that gazebench does not train
(``ModelSpec.default_recipe`` None) is refused by ``train_job``.  Before any work ``train_job``
checks that the checkpoint can be written, and before training it says on stderr what it will
train and how long that is expected to take.  Training and the test evaluation run on
``device`` (``auto``: CUDA when a GPU is visible).
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml
from tqdm import tqdm

from gazebench import paths
from gazebench.atomic import write_atomic
from gazebench.bootstrap import BOOTSTRAP
from gazebench.data.data_use import write_data_use_notice
from gazebench.data.datasets import open_dataset, synth_key
from gazebench.data.loading import Unreadable, load_items, unreadable_lines
from gazebench.data.sample import collate
from gazebench.data.splits import write_splits
from gazebench.device import resolve_device
from gazebench.errors import UserError
from gazebench.models.base import ModelAdapter
from gazebench.models.checkpoint import adapter_from_checkpoint, sha256_file
from gazebench.models.spec import ModelSpec
from gazebench.models.training.loop import evaluate_auroc, predict, train
from gazebench.outputs import check_output_file, writing
from gazebench.protocol import DEFAULT_GRID
from gazebench.registry import MODELS

CACHED_MODEL_SEED = 0


@dataclass
class TrainReport:
    model: str
    checkpoint: Path
    best_epoch: int
    dev_mean_auroc: float
    test_auroc: dict
    seconds: float

    seed: int = 0
    unreadable: dict[str, list[Unreadable]] = field(default_factory=dict)  # split -> items skipped: their image does not decode

    def summary(self) -> str:
        intervals = self.test_auroc.get("ci", {})
        per_class = ", ".join(
            f"{name} {value:.3f}" + (" [{:.3f}, {:.3f}]".format(*intervals[name]) if name in intervals else "")
            for name, value in self.test_auroc["per_class"].items()
        )
        return (
            f"{self.model} (seed {self.seed}): best epoch {self.best_epoch} on dev (mean AUROC {self.dev_mean_auroc:.3f}); "
            f"test one-vs-rest AUROC (95% CI, patient bootstrap) {per_class}; mean {self.test_auroc['mean']:.3f}\n"
            f"checkpoint: {self.checkpoint} ({self.seconds / 60:.1f} min)"
        ) + self.unreadable_summary()

    def unreadable_summary(self) -> str:
        """The images skipped because their file does not decode (empty when none was)."""
        skipped = [item for items in self.unreadable.values() for item in items]
        if not skipped:
            return ""
        splits = ", ".join(f"{name} {len(items)}" for name, items in self.unreadable.items())
        lines = [f"skipped: {len(skipped)} unreadable image file(s) ({splits}); replace them, or pass --strict to stop on them", *unreadable_lines(skipped, limit=5)]
        return "\n" + "\n".join(lines)


def seeds_summary(reports: list[TrainReport]) -> str:
    """Mean and standard deviation over seeds of each class's test AUROC (the spread the studies omit)."""
    if len(reports) < 2:
        return ""
    classes = list(reports[0].test_auroc["per_class"])
    values = np.array([[r.test_auroc["per_class"][name] for name in classes] for r in reports], dtype=float)
    with warnings.catch_warnings():  # a class without any defined AUROC gives NaN, said as such
        warnings.simplefilter("ignore", RuntimeWarning)
        means, sds = np.nanmean(values, axis=0), np.nanstd(values, axis=0, ddof=1)
    cells = ", ".join(f"{name} {m:.3f} ± {sd:.3f}" for name, m, sd in zip(classes, means, sds))
    return f"over {len(reports)} seeds ({', '.join(str(r.seed) for r in reports)}): test AUROC mean ± sd {cells}"


def load_samples(dataset, description: str, strict: bool = False) -> tuple[list, list[Unreadable]]:
    """Every item of ``dataset`` that can be read, and those skipped because their image does not decode.

    ``strict``: stop at the first unreadable image instead (its one-line ``UnreadableImage``).
    """
    return load_items(dataset, tqdm(range(len(dataset)), desc=f"loading {description}", unit="image", leave=False), strict)


def train_job(
    model: str,
    data: str,
    root: Path | None,
    images_root: Path | None,
    epochs: int | None,
    seed: int,
    out: Path | None,
    device: str | torch.device = "auto",
    gaze_sigma: float | None = None,
    labels: str | None = None,
    strict: bool = False,
) -> TrainReport:
    """Train ``model`` on the train split, select on dev, report test AUROC; write the checkpoint.

    An image whose file does not decode is skipped and counted (summary, report yaml), or stops
    the job with ``strict``.

    ``device``: ``auto`` (CUDA when a GPU is visible, else the CPU), ``cpu``, ``cuda`` or a
    ``torch.device``; training and the test evaluation run there.
    """
    spec = MODELS.get(model)
    recipe = spec.recipe_for(data)  # a model gazebench does not train is refused here, in one line
    device = resolve_device(device)
    overrides, content = recipe_overrides(recipe, epochs), recipe_hash(recipe)
    if out is None:
        if data != "synth" or root is not None:
            raise UserError("--out is required when training on your own data: the checkpoint file to write")
        out = cached_checkpoint(model, recipe, overrides, seed)
    out = Path(out)
    check_output(out)  # before any data is read or any epoch is run
    started = time.perf_counter()
    splits = {
        name: open_dataset(data, root, name, DEFAULT_GRID, images_root, require_gaze=False, gaze_sigma=gaze_sigma, labels=labels)
        for name in ("train", "dev", "test")
    }
    loaded = {name: load_samples(dataset, f"{name} split", strict) for name, dataset in splits.items()}
    samples = {name: items for name, (items, _) in loaded.items()}
    announce_training(spec, recipe, overrides, data, seed, device, out, splits["train"].class_names, samples)
    recipe["training"].update(overrides)
    result = train(spec, splits["train"].class_names, samples["train"], samples["dev"], recipe, seed, out, device=device)
    test = evaluate_auroc(result.adapter, samples["test"], device=device, n_boot=BOOTSTRAP["replicates"], seed=seed)
    unreadable = {name: skipped for name, (_, skipped) in loaded.items()}
    report = TrainReport(model, Path(out), result.best_epoch, result.best_dev_auroc, test, time.perf_counter() - started, seed, unreadable)
    record = report_record(report, recipe, seed, data, content, overrides)
    with writing(out.parent, f"kept: the checkpoint {out} (test mean AUROC {test['mean']:.3f}), not its report and splits; rerunning trains again"):
        write_splits(splits["train"].table, out.with_suffix(".splits.csv"))
        if splits["train"].manifest.credentialed:
            write_data_use_notice(out.parent, splits["train"].manifest)
        write_atomic(out.with_suffix(".report.yaml"), yaml.safe_dump(record, sort_keys=False))
    return report


def report_record(report: TrainReport, recipe: dict, seed: int, data: str, content: str = "", overrides: dict | None = None) -> dict:
    """The ``.report.yaml`` beside a checkpoint: what was trained (recipe, its content hash, the overrides) and how it scored."""
    clean = lambda v: None if isinstance(v, float) and math.isnan(v) else v  # noqa: E731
    return {
        "model": report.model,
        "data": data,
        "recipe": recipe["name"],
        "recipe_sha256": content,
        "overrides": dict(overrides or {}),
        "epochs": recipe["training"]["epochs"],
        "seed": seed,
        "best_epoch": report.best_epoch,
        "dev_mean_auroc": clean(report.dev_mean_auroc),
        "test_auroc": {name: clean(v) for name, v in report.test_auroc["per_class"].items()},
        "test_mean_auroc": clean(report.test_auroc["mean"]),
        "test_auroc_ci95": {name: [clean(low), clean(high)] for name, (low, high) in report.test_auroc.get("ci", {}).items()},
        "test_bootstrap": {"replicates": BOOTSTRAP["replicates"], "unit": BOOTSTRAP["unit"], "interval": BOOTSTRAP["interval"], "seed": seed},
        "minutes": round(report.seconds / 60, 2),
        "unreadable_images": {name: len(items) for name, items in report.unreadable.items()},
        "unreadable_files": [item.reason for items in report.unreadable.values() for item in items],
    }


def seed_checkpoint(out: Path, seed: int, several: bool) -> Path:
    """The checkpoint path of one seed: ``out`` itself, or ``<stem>-seed<N><suffix>`` when training several."""
    out = Path(out)
    return out.with_name(f"{out.stem}-seed{seed}{out.suffix or '.pt'}") if several else out


# --- the model cache: one entry per model, recipe, override and seed ----------------------------

TRAINED_PARTS = ("model", "loss", "training")  # what training reads of a recipe (not its description)


def recipe_hash(recipe: dict) -> str:
    """SHA-256 of the parts of ``recipe`` that training reads, as written (before any override)."""
    content = {part: recipe.get(part) for part in TRAINED_PARTS}
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()


def recipe_overrides(recipe: dict, epochs: int | None) -> dict:
    """What the command line changes in ``recipe``: ``{"epochs": N}`` when ``--epochs`` differs from it."""
    return {"epochs": epochs} if epochs is not None and epochs != recipe["training"]["epochs"] else {}


def recipe_key(recipe: dict, overrides: dict) -> str:
    """``embedded-<hash8>`` for a recipe as written, ``embedded-epochs1-<hash8>`` with ``--epochs 1``."""
    changed = "".join(f"-{name}{value}" for name, value in sorted(overrides.items()))
    return f"{recipe['name']}{changed}-{recipe_hash(recipe)[:8]}"


def cached_checkpoint(model: str, recipe: dict, overrides: dict, seed: int) -> Path:
    """The model-cache entry of ``model`` trained on the embedded data with ``recipe`` and ``overrides``.

    ``run`` uses the entry without overrides, so ``train --epochs 1`` never replaces it; editing
    the recipe's settings gives a new entry (the model is trained again once).
    """
    return paths.cached_model_path(model, synth_key(), recipe_key(recipe, overrides), seed)


def check_output(out: Path) -> None:
    """Refuse, before any work, a checkpoint path that is a folder or whose folder cannot be created or written."""
    check_output_file(out, "--out")


# --- saying what will be trained, and for how long ------------------------------------------------


def announce_training(spec: ModelSpec, recipe: dict, overrides: dict, data: str, seed: int, device: torch.device, out: Path, class_names, samples: dict) -> None:
    """One line on stderr before training: the model, recipe (as written, and ``overrides``), epochs,
    data, device, checkpoint and the expected time."""
    epochs = overrides.get("epochs", recipe["training"]["epochs"])
    said = f"{epochs} epochs" + (f" (--epochs; the recipe says {recipe['training']['epochs']})" if "epochs" in overrides else "")
    counts = f"{len(samples['train'])} train / {len(samples['dev'])} dev / {len(samples['test'])} test images"
    seconds = estimate_seconds(spec, class_names, recipe, epochs, samples, device)
    sooner = "; early stopping may end it sooner" if recipe["training"].get("patience") else ""
    expected = "no estimate (too few images to time a step)" if seconds is None else f"expected about {_duration(seconds)} (an estimate from one timed training step{sooner})"
    replacing = ", replacing the file there" if out.is_file() else ""
    if out.with_suffix(".resume.pt").is_file():
        replacing += ", resuming from the saved training state there if it matches"
    print(f"training {spec.name} on {data}: recipe {recipe['name']}, {said}, seed {seed}, {counts}, on {device}, into {out}{replacing}; {expected}", file=sys.stderr, flush=True)


def estimate_seconds(spec: ModelSpec, class_names, recipe: dict, epochs: int, samples: dict, device: torch.device) -> float | None:
    """Expected seconds of training and test evaluation, from timing one batch of the train split.

    A throwaway copy of the model takes a warm-up step (one-time costs: allocation, kernel
    choice), then a timed training step and a timed prediction; the estimate is epochs x (train
    images at the step's per-image cost + dev images at the prediction's) + the test images.
    ``train`` seeds every generator itself, so this does not change the trained model.  None
    when the split is too small to take a step (``train`` then says why).
    """
    settings = recipe["training"]
    images = list(samples["train"][: settings["batch_size"]])
    if len(images) < 2:
        return None
    adapter = spec.build_adapter(class_names=list(class_names), **recipe["model"]).to(device)
    optimizer = torch.optim.Adam(adapter.module.parameters(), lr=settings["lr"])
    timings = []
    for _ in range(2):  # a warm-up step, then the timed one
        adapter.module.train()
        started = time.perf_counter()
        loss = spec.loss(adapter, collate(images).to(device), **recipe["loss"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        _synchronise(device)
        train_seconds = time.perf_counter() - started
        started = time.perf_counter()
        predict(adapter, images, len(images), device)
        _synchronise(device)
        timings.append((train_seconds / len(images), (time.perf_counter() - started) / len(images)))
    per_train_image, per_eval_image = timings[-1]
    return epochs * (len(samples["train"]) * per_train_image + len(samples["dev"]) * per_eval_image) + len(samples["test"]) * per_eval_image


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def adapter_for_run(
    model: str,
    checkpoint: Path | None,
    data: str,
    root: Path | None,
    images_root: Path | None,
    device: str | torch.device = "auto",
    train_missing: bool = True,
) -> tuple[ModelAdapter, Path, str]:
    """(adapter, checkpoint path, its sha256) for ``run``: the given checkpoint or the cached one.

    The cached model of the embedded dataset (its recipe as written, seed 0) is trained once, on
    ``device`` (the run's), when it is missing; with ``train_missing`` False (``run --no-train``)
    a missing one is a one-line error naming the command that makes it.  Models with their own
    weights format (``xrv:<weights>``) open them themselves.
    """
    spec = MODELS.get(model)
    if spec.open_for_run is not None:
        return spec.open_for_run(checkpoint)
    if checkpoint is None:
        if data != "synth" or root is not None:
            raise UserError(
                f"--checkpoint is required for {model} on {data}: train one with "
                f"`gazebench train --model {model} --data {data} --root {root or 'PATH'} --out {model}.pt` and pass --checkpoint {model}.pt"
            )
        checkpoint = cached_checkpoint(model, spec.recipe_for(data), {}, CACHED_MODEL_SEED)
        if not checkpoint.is_file():
            command = f"gazebench train --model {model}"
            if not train_missing:
                raise UserError(f"no trained {model} for the embedded data in the model cache ({checkpoint}) and --no-train was given: make it with `{command}`, or pass --checkpoint")
            print(f"no trained {model} for the embedded data in the model cache yet: training it once, as `{command}` does (`run --no-train` refuses instead)", file=sys.stderr, flush=True)
            print(train_job(model, data, None, None, None, CACHED_MODEL_SEED, checkpoint, device=device).summary())
    adapter = adapter_from_checkpoint(checkpoint, expected_model=model, hint=f"gazebench train --model {model} --data {data}")
    return adapter, Path(checkpoint), sha256_file(checkpoint)
