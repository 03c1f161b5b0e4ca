"""Training recipes: ``gazebench/resources/recipes/<model>.yaml``, one file per model, one entry per recipe.

Each recipe has ``model`` (keyword arguments of the model's ``build_adapter`` besides class
names and weights), ``loss`` (keyword arguments of its batch loss), ``training`` (optimizer,
schedule, epochs, selection on dev) and ``departures`` (where it differs from the study, and
why).  ``paper`` recipes carry the studies' hyper-parameters; ``embedded`` recipes cut them to
CPU size for the synthetic dataset.  The ``torchvision:`` and ``timm:`` families share
``generic.yaml`` (``embedded`` and ``default``).
"""

from __future__ import annotations

import yaml

from gazebench.errors import UserError
from gazebench.resources import resource

GENERIC = "generic"  # the recipe file of the torchvision: and timm: families


def read_recipes(model: str) -> dict:
    """Every recipe of ``model`` (read afresh on each call)."""
    entry = resource("recipes", f"{model}.yaml")
    if not entry.is_file():
        raise UserError(f"no recipe file gazebench/resources/recipes/{model}.yaml for model {model!r}")
    return yaml.safe_load(entry.read_text(encoding="utf-8"))


def load_recipe(model: str, name: str) -> dict:
    """One recipe of ``model`` with its ``name`` added; an unknown name lists the known ones."""
    recipes = read_recipes(model)
    if name not in recipes:
        raise UserError(f"unknown {model} recipe {name!r}; choose one of: {', '.join(sorted(recipes))}")
    return {"name": name, **recipes[name]}


def default_recipe_name(dataset: str) -> str:
    """``embedded`` (CPU-sized) for the synthetic dataset, ``paper`` for the real ones."""
    return "embedded" if dataset == "synth" else "paper"


def recipe_functions(model: str):
    """``(load_recipe, default_recipe)`` of a model whose recipes are ``paper`` and ``embedded``:
    ``load_recipe(name="embedded")`` and ``default_recipe(dataset)`` (its ``ModelSpec.default_recipe``)."""

    def load(name: str = "embedded") -> dict:
        return load_recipe(model, name)

    def default(dataset: str) -> dict:
        return load(default_recipe_name(dataset))

    return load, default


def generic_recipe(dataset: str) -> dict:
    """The ``torchvision:`` / ``timm:`` recipe: ``embedded`` (CPU-sized) for the synthetic dataset, ``default`` for real ones."""
    return load_recipe(GENERIC, "embedded" if dataset == "synth" else "default")
