"""The seed studies ``gazebench reproduce NAME`` knows: what each runs, and which tables and figures it writes.

Each study is a package file ``resources/studies/<name>.yaml``: an experiment file (models,
methods, metrics; see ``gazebench run --config``) plus ``title``, ``paper`` (the table set of
``gazebench tables --paper``) and ``figures`` (``regions``: each class's most salient regions,
models beside gaze; ``examples``: the qualitative grid and the overlays of each run).
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml

from gazebench.errors import UserError
from gazebench.resources import resource, resource_names

STUDY_KEYS = ("title", "paper", "figures")
FIGURE_KINDS = ("regions", "examples")


@dataclass(frozen=True)
class Study:
    name: str
    title: str
    paper: str  # the table set (``gazebench tables --paper``)
    figures: tuple[str, ...]
    experiment: dict  # the experiment file's keys: models, methods, metrics, optional_methods

    @property
    def models(self) -> list[str]:
        return [model if isinstance(model, str) else model["name"] for model in self.experiment["models"]]


def study_names() -> list[str]:
    return [name.removesuffix(".yaml") for name in resource_names("studies")]


def load_study(name: str) -> Study:
    """The study ``name``; an unknown name is refused in one line listing the known ones."""
    if name not in study_names():
        raise UserError(f"unknown study {name!r}; gazebench reproduces: {', '.join(study_names())}")
    content = yaml.safe_load(resource("studies", f"{name}.yaml").read_text())
    figures = tuple(content.get("figures") or ())
    unknown = [kind for kind in figures if kind not in FIGURE_KINDS]
    if unknown:
        raise ValueError(f"studies/{name}.yaml: unknown figures {unknown}; choose from {FIGURE_KINDS}")
    experiment = {key: value for key, value in content.items() if key not in STUDY_KEYS}
    return Study(name, content["title"], content["paper"], figures, experiment)
