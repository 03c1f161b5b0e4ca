"""ModelSpec: what the registry holds for one model family.

A spec is everything the engine and the training loop need to know about a model without
knowing which model it is: how to build an adapter (fresh or from a state dict), which recipe
suits a dataset, and how to compute the training loss of one batch.  Adding a model is one
new module that registers a spec: ``MODELS.register("name")(ModelSpec(...))``.

Optional capabilities are declared here, never probed for:

- ``default_recipe=None`` says that gazebench does not train the model; ``not_trained`` says
  why (e.g. "a pretrained torchxrayvision model"), and ``recipe_for`` refuses in one line.
- ``open_for_run`` is set by a family whose weights come from outside gazebench (``xrv:``):
  ``open_for_run(checkpoint)`` finds them and gives ``(adapter, weights file, its sha256)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from gazebench.errors import UserError
from gazebench.models.base import ModelAdapter

BuildAdapter = Callable[..., ModelAdapter]  # (class_names=..., state_dict=..., **recipe["model"]) -> adapter
DefaultRecipe = Callable[[str], dict]  # dataset name -> recipe dict
BatchLoss = Callable[..., torch.Tensor]  # (adapter, batch, **recipe["loss"]) -> scalar loss
OpenForRun = Callable[..., tuple[ModelAdapter, Path | None, str]]  # checkpoint or None -> (adapter, weights file, sha256)


@dataclass(frozen=True)
class ModelSpec:
    """One registered model family (see the module docstring)."""

    name: str
    build_adapter: BuildAdapter
    default_recipe: DefaultRecipe | None  # None: gazebench does not train this model (``not_trained`` says why)
    loss: BatchLoss
    description: str = ""
    not_trained: str = ""  # with default_recipe None: what the model is, e.g. "a pretrained torchxrayvision model"
    open_for_run: OpenForRun | None = None  # a family that opens its own weights for ``gazebench run`` (xrv)

    def __post_init__(self) -> None:
        if self.default_recipe is None and not self.not_trained:
            raise ValueError(f"model {self.name!r} has no default_recipe: say why in not_trained")

    @property
    def trainable(self) -> bool:
        return self.default_recipe is not None

    def recipe_for(self, dataset: str) -> dict:
        """The recipe ``gazebench train`` uses on ``dataset``; a model gazebench does not train is a one-line UserError."""
        if self.default_recipe is None:
            raise UserError(
                f"{self.name} is {self.not_trained} and gazebench does not train it; "
                f"run it directly: gazebench run --model {self.name} --data {dataset}"
            )
        return self.default_recipe(dataset)
