"""Training jobs and finding the model a run uses.

``run`` without ``--checkpoint`` on the embedded dataset uses a model that gazebench trains
once (recipe ``embedded``, seed 0) and caches in $GAZEBENCH_HOME/models; for any other model
or dataset it says which ``gazebench train`` command makes the checkpoint.  A family that
opens its own weights (``ModelSpec.open_for_run``: ``xrv:``) is opened by its spec; one that
gazebench does not train (``ModelSpec.default_recipe`` None) is refused by ``train_job``.
Training and the test evaluation run on ``device`` (``auto``: CUDA when a GPU is visible).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
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
from gazebench.data.splits import write_splits
from gazebench.device import resolve_device
from gazebench.errors import UserError
from gazebench.models.base import ModelAdapter
from gazebench.models.checkpoint import adapter_from_checkpoint, sha256_file
from gazebench.models.training.loop import evaluate_auroc, train
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
        )


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


def load_samples(dataset, description: str) -> list:
    return [dataset[i] for i in tqdm(range(len(dataset)), desc=f"loading {description}", unit="image", leave=False)]


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
) -> TrainReport:
    """Train ``model`` on the train split, select on dev, report test AUROC; write the checkpoint.

    ``device``: ``auto`` (CUDA when a GPU is visible, else the CPU), ``cpu``, ``cuda`` or a
    ``torch.device``; training and the test evaluation run there.
    """
    spec = MODELS.get(model)
    recipe = spec.recipe_for(data)  # a model gazebench does not train is refused here, in one line
    device = resolve_device(device)
    if epochs is not None:
        recipe["training"]["epochs"] = epochs
    if out is None:
        if data != "synth" or root is not None:
            raise UserError("--out is required when training on your own data: the checkpoint file to write")
        out = paths.cached_model_path(model, synth_key(), recipe["name"], seed)
    started = time.perf_counter()
    splits = {
        name: open_dataset(data, root, name, DEFAULT_GRID, images_root, require_gaze=False, gaze_sigma=gaze_sigma, labels=labels)
        for name in ("train", "dev", "test")
    }
    samples = {name: load_samples(dataset, f"{name} split") for name, dataset in splits.items()}
    result = train(spec, splits["train"].class_names, samples["train"], samples["dev"], recipe, seed, out, device=device)
    test = evaluate_auroc(result.adapter, samples["test"], device=device, n_boot=BOOTSTRAP["replicates"], seed=seed)
    report = TrainReport(model, Path(out), result.best_epoch, result.best_dev_auroc, test, time.perf_counter() - started, seed)
    write_splits(splits["train"].table, Path(out).with_suffix(".splits.csv"))
    if splits["train"].manifest.credentialed:
        write_data_use_notice(Path(out).parent, splits["train"].manifest)
    write_atomic(Path(out).with_suffix(".report.yaml"), yaml.safe_dump(report_record(report, recipe, seed, data), sort_keys=False))
    return report


def report_record(report: TrainReport, recipe: dict, seed: int, data: str) -> dict:
    clean = lambda v: None if isinstance(v, float) and math.isnan(v) else v  # noqa: E731
    return {
        "model": report.model,
        "data": data,
        "recipe": recipe["name"],
        "seed": seed,
        "best_epoch": report.best_epoch,
        "dev_mean_auroc": clean(report.dev_mean_auroc),
        "test_auroc": {name: clean(v) for name, v in report.test_auroc["per_class"].items()},
        "test_mean_auroc": clean(report.test_auroc["mean"]),
        "test_auroc_ci95": {name: [clean(low), clean(high)] for name, (low, high) in report.test_auroc.get("ci", {}).items()},
        "test_bootstrap": {"replicates": BOOTSTRAP["replicates"], "unit": BOOTSTRAP["unit"], "interval": BOOTSTRAP["interval"], "seed": seed},
        "minutes": round(report.seconds / 60, 2),
    }


def seed_checkpoint(out: Path, seed: int, several: bool) -> Path:
    """The checkpoint path of one seed: ``out`` itself, or ``<stem>-seed<N><suffix>`` when training several."""
    out = Path(out)
    return out.with_name(f"{out.stem}-seed{seed}{out.suffix or '.pt'}") if several else out


def adapter_for_run(model: str, checkpoint: Path | None, data: str, root: Path | None, images_root: Path | None, device: str | torch.device = "auto") -> tuple[ModelAdapter, Path, str]:
    """(adapter, checkpoint path, its sha256) for ``run``: the given checkpoint or the cached one.

    The cached model of the embedded dataset is trained once, on ``device`` (the run's), when it
    is missing.  Models with their own weights format (``xrv:<weights>``) open them themselves.
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
        checkpoint = paths.cached_model_path(model, synth_key(), "embedded", CACHED_MODEL_SEED)
        if not checkpoint.is_file():
            print(f"no cached {model} for the embedded dataset yet: training it once (a few minutes on a CPU)")
            print(train_job(model, data, None, None, None, CACHED_MODEL_SEED, checkpoint, device=device).summary())
    adapter = adapter_from_checkpoint(checkpoint, expected_model=model, hint=f"gazebench train --model {model} --data {data}")
    return adapter, Path(checkpoint), sha256_file(checkpoint)
