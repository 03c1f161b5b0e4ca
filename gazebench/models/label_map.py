"""Label maps: make a model whose outputs are not the dataset's classes answer in those classes.

A ``LabelMap`` says, for each dataset class, which model outputs stand for it; ``map_adapter``
wraps the adapter's network so that its outputs become the dataset classes::

    logit(class) = mean of the logits of the class's model outputs

for example CHF = (Edema + Cardiomegaly) / 2 for a CheXpert-style model on EGD data.  The
default maps live in ``gazebench/resources/label_maps/label_maps.yaml`` (package data); a
user's YAML file in the same format replaces them (``classes``: class -> list of output names;
optional ``fallbacks``; optional ``description``)::

    classes:
      Normal: [No Finding]
      CHF: [Edema, Cardiomegaly]
      pneumonia: [Pneumonia, Consolidation]
    fallbacks:
      Normal: minus_mean_of_all_outputs

Why the mean of logits.  The mapped network is the original one followed by a fixed linear
layer (a [dataset classes x model outputs] matrix with no parameters to train), so everything
the methods compute stays exact for the mapped model: input gradients are the mean of the
outputs' gradients, Grad-CAM's channel weights and maps are linear in the target logit (before
its ReLU), DeepLift's linear rule is exact and its attributions still sum to the change of the
mapped logit, and ``cam_layer`` is the same module.  A mean of probabilities, a max or a
noisy-or would put a nonlinearity after the network that the methods would have to explain
too; a sum would grow with the number of outputs; the mean keeps a mapped logit on the scale of
one logit, so ``sigmoid`` still gives a probability-like score and classes mapped to one or two
outputs compare fairly in the single-label argmax.

Models without a class's outputs.  torchxrayvision's models have no "No Finding" output.  A
class may name a fallback rule for models that have none of its outputs; the one rule,
``minus_mean_of_all_outputs``, scores the class by minus the mean of all the model's logits
(nothing found = no finding the model knows about), again a fixed linear row.  A class whose
outputs are all missing and that has no fallback, or whose outputs are only partly present,
is an error (a partial match is more often a typo than an intent): the message lists the
missing names and the model's outputs.

Mapped adapters are run-time views: ``label_map_record(adapter)`` gives what was applied (for
the run's config.yaml); they are not meant to be saved as checkpoints.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence, Union

import torch
import torch.nn.functional as F
import yaml
from torch import nn

from gazebench.errors import UserError
from gazebench.models.base import ModelAdapter
from gazebench.resources import resource

DEFAULTS_FILE = "label_maps.yaml"  # gazebench/resources/label_maps/
MINUS_MEAN_OF_ALL = "minus_mean_of_all_outputs"
FALLBACK_RULES = (MINUS_MEAN_OF_ALL,)
FORMAT_HINT = "YAML `classes: {dataset class: [model output names]}`"


@dataclass(frozen=True)
class LabelMap:
    """Dataset class -> model output names (their logits are averaged), plus fallback rules."""

    classes: dict[str, tuple[str, ...]]
    fallbacks: dict[str, str] = field(default_factory=dict)
    source: str = "label map"
    description: str = ""

    @classmethod
    def from_dict(cls, data: object, source: str = "label map") -> "LabelMap":
        """Check a parsed YAML mapping; every problem is a one-line UserError naming ``source``."""
        if not isinstance(data, Mapping) or not isinstance(data.get("classes"), Mapping) or not data["classes"]:
            raise UserError(f"{source}: not a label map; expected {FORMAT_HINT}")
        unknown = set(data) - {"classes", "fallbacks", "description"}
        if unknown:
            raise UserError(f"{source}: unknown keys {sorted(unknown)}; a label map has classes, fallbacks and description")
        classes = {str(name): _output_names(outputs, name, source) for name, outputs in data["classes"].items()}
        fallbacks = {str(name): str(rule) for name, rule in (data.get("fallbacks") or {}).items()}
        for name, rule in fallbacks.items():
            if name not in classes:
                raise UserError(f"{source}: fallback for {name!r}, which is not one of its classes {list(classes)}")
            if rule not in FALLBACK_RULES:
                raise UserError(f"{source}: unknown fallback {rule!r} for {name!r}; choose one of: {', '.join(FALLBACK_RULES)}")
        return cls(classes, fallbacks, source, " ".join(str(data.get("description", "")).split()))

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "LabelMap":
        """Read a user's label map file."""
        path = Path(path).expanduser()
        if not path.is_file():
            raise UserError(f"label map file not found: {path}; write one as {FORMAT_HINT}")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as error:
            raise UserError(f"cannot parse label map {path}: {' '.join(str(error).split())[:200]}") from None
        return cls.from_dict(data, source=str(path))

    def covers(self, dataset_classes: Sequence[str]) -> bool:
        """True when the map's classes are exactly the dataset's (in any order)."""
        return set(self.classes) == set(dataset_classes)

    def resolve(self, dataset_classes: Sequence[str], model_outputs: Sequence[str]) -> dict[str, list[str] | str]:
        """Per dataset class: the model outputs averaged, or the fallback rule used (strict checks)."""
        missing_classes = [name for name in dataset_classes if name not in self.classes]
        if missing_classes:
            raise UserError(f"{self.source} maps {list(self.classes)} but the data have classes {list(dataset_classes)}; add {missing_classes}")
        extra = [name for name in self.classes if name not in dataset_classes]
        if extra:
            raise UserError(f"{self.source} maps {extra}, which are not classes of the data {list(dataset_classes)}")
        available = set(model_outputs)
        resolved: dict[str, list[str] | str] = {}
        for name in dataset_classes:
            outputs = list(self.classes[name])
            absent = [output for output in outputs if output not in available]
            if not absent:
                resolved[name] = outputs
            elif len(absent) == len(outputs) and name in self.fallbacks:
                resolved[name] = self.fallbacks[name]
            else:
                raise UserError(
                    f"{self.source}: class {name!r} needs model outputs {absent}, which the model lacks; "
                    f"the model's outputs are {list(model_outputs)}"
                )
        return resolved

    def matrix(self, dataset_classes: Sequence[str], model_outputs: Sequence[str]) -> torch.Tensor:
        """The fixed [len(dataset_classes), len(model_outputs)] matrix: mapped logits = matrix @ logits."""
        resolved = self.resolve(dataset_classes, model_outputs)
        index = {output: column for column, output in enumerate(model_outputs)}
        weights = torch.zeros(len(dataset_classes), len(model_outputs), dtype=torch.float64)
        for row, name in enumerate(dataset_classes):
            rule = resolved[name]
            if rule == MINUS_MEAN_OF_ALL:
                weights[row] = -1.0 / len(model_outputs)
            else:
                for output in rule:
                    weights[row, index[output]] += 1.0 / len(rule)
        return weights.float()


def _output_names(outputs: object, name: object, source: str) -> tuple[str, ...]:
    """A class's model outputs: one name or a non-empty list of names."""
    if isinstance(outputs, str):
        outputs = [outputs]
    if not isinstance(outputs, list) or not outputs or not all(isinstance(item, str) and item for item in outputs):
        raise UserError(f"{source}: class {name!r} must map to a list of model output names, got {outputs!r}")
    return tuple(outputs)


def default_label_maps() -> dict[str, LabelMap]:
    """The named maps of gazebench/resources/label_maps/label_maps.yaml."""
    entry = resource("label_maps", DEFAULTS_FILE)
    data = yaml.safe_load(entry.read_text(encoding="utf-8")) or {}
    return {name: LabelMap.from_dict(value, source=f"default label map {name!r}") for name, value in data.items()}


def default_label_map(dataset_classes: Sequence[str]) -> LabelMap | None:
    """The default map whose classes are exactly ``dataset_classes``, if any."""
    return next((label_map for label_map in default_label_maps().values() if label_map.covers(dataset_classes)), None)


def as_label_map(mapping: Union["LabelMap", Mapping, str, os.PathLike]) -> LabelMap:
    """A LabelMap from a LabelMap, a parsed mapping or a YAML file path."""
    if isinstance(mapping, LabelMap):
        return mapping
    if isinstance(mapping, Mapping):
        return LabelMap.from_dict(mapping)
    return LabelMap.from_file(mapping)


class MappedClassifier(nn.Module):
    """``network`` followed by a fixed linear map of its logits: [B, model outputs] -> [B, dataset classes]."""

    def __init__(self, network: nn.Module, weights: torch.Tensor, record: dict):
        super().__init__()
        self.network = network
        self.register_buffer("mapping", weights, persistent=False)
        self.record = record

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.network(x)
        return F.linear(logits, self.mapping.to(logits.dtype))


def map_adapter(
    adapter: ModelAdapter,
    dataset_classes: Sequence[str],
    mapping: Union[LabelMap, Mapping, str, os.PathLike, None] = None,
    target: str = "label",
) -> ModelAdapter:
    """An adapter whose outputs are ``dataset_classes``.

    * ``mapping`` given (a LabelMap, a parsed mapping or a YAML file): always applied.
    * no ``mapping``, same classes: the adapter itself.
    * no ``mapping``, other classes: the default map for these classes (gazebench/resources/label_maps/label_maps.yaml)
      when there is one and it fits the model; otherwise, with ``target="pred"`` (the maps explain
      the model's own predicted outputs), the adapter itself; else a one-line UserError that
      lists both class lists.
    """
    dataset_classes = list(dataset_classes)
    if mapping is None:
        if list(adapter.class_names) == dataset_classes:
            return adapter
        label_map = default_label_map(dataset_classes)
        reason = "" if label_map is None else _misfit(label_map, dataset_classes, adapter.class_names)
        if label_map is None or reason:
            if target == "pred":
                return adapter
            raise UserError(
                f"model {adapter.name} predicts {list(adapter.class_names)} but the data have classes {dataset_classes}{reason}; "
                f"give a label map (--label-map FILE, {FORMAT_HINT}) or explain the model's own predictions with --target pred"
            )
    else:
        label_map = as_label_map(mapping)
    return apply_label_map(adapter, dataset_classes, label_map)


def _misfit(label_map: LabelMap, dataset_classes: list[str], model_outputs: Sequence[str]) -> str:
    """'' when the default map fits the model, else why not (for the error message)."""
    try:
        label_map.resolve(dataset_classes, model_outputs)
    except UserError as error:
        return f", and {error}"
    return ""


def apply_label_map(adapter: ModelAdapter, dataset_classes: Sequence[str], label_map: LabelMap) -> ModelAdapter:
    """The adapter with its network wrapped in ``MappedClassifier`` (same preprocessing, cam_layer, gaze head)."""
    dataset_classes = list(dataset_classes)
    resolved = label_map.resolve(dataset_classes, adapter.class_names)
    weights = label_map.matrix(dataset_classes, adapter.class_names)
    parameter = next(iter(adapter.module.parameters()), None)
    if parameter is not None:
        weights = weights.to(parameter.device)
    record = {"source": label_map.source, "classes": resolved, "model_outputs": list(adapter.class_names)}
    return dataclasses.replace(
        adapter,
        module=MappedClassifier(adapter.module, weights, record),
        class_names=dataset_classes,
    )


def label_map_record(adapter: ModelAdapter) -> dict | None:
    """What ``map_adapter`` applied to this adapter (source, class -> outputs or rule, model outputs), or None."""
    return adapter.module.record if isinstance(adapter.module, MappedClassifier) else None
