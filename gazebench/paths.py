"""Where gazebench keeps what it generates: $GAZEBENCH_HOME (default ~/.cache/gazebench)."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    return Path(os.environ.get("GAZEBENCH_HOME") or Path.home() / ".cache" / "gazebench")


def synth_dataset_dir(version: str, n: int, seed: int) -> Path:
    """Cache folder of the embedded dataset; the generator version is part of the key."""
    return home() / "datasets" / f"synth-{version}-n{n}-s{seed}"


def safe_name(name: str) -> str:
    """A model name usable as a file name everywhere (``torchvision:resnet50`` -> ``torchvision__resnet50``)."""
    return name.replace(":", "__").replace("/", "__")


def cached_model_path(model: str, dataset_key: str, recipe_key: str, seed: int) -> Path:
    """Cache path of a model trained once by gazebench on a generated dataset.

    ``recipe_key`` names the recipe, its overrides and its content hash (``embedded-3f9c2a1b``,
    ``embedded-epochs1-3f9c2a1b``: gazebench.models.training.jobs.recipe_key), so a model trained
    with other settings never replaces the one ``run`` uses.
    """
    return home() / "models" / safe_name(model) / dataset_key / f"{recipe_key}-seed{seed}.pt"
