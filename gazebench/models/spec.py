"""ModelSpec: what the registry holds for one model family.

A spec is everything the engine and the training loop need to know about a model without
knowing which model it is: how to build an adapter (fresh or from a state dict), which recipe
suits a dataset, and how to compute the training loss of one batch.  Adding a model is one
new module that registers a spec: ``MODELS.register("name")(ModelSpec(...))``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from gazebench.models.base import ModelAdapter

BuildAdapter = Callable[..., ModelAdapter]  # (class_names=..., state_dict=..., **recipe["model"]) -> adapter
DefaultRecipe = Callable[[str], dict]  # dataset name -> recipe dict
BatchLoss = Callable[..., torch.Tensor]  # (adapter, batch, **recipe["loss"]) -> scalar loss


@dataclass(frozen=True)
class ModelSpec:
    """One registered model family (see the module docstring)."""

    name: str
    build_adapter: BuildAdapter
    default_recipe: DefaultRecipe
    loss: BatchLoss
    description: str = ""
