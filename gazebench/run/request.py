"""What a user asks a run for, and the model it runs: the one way both front doors describe a run.

``RunRequest.create`` turns names (``"all"``, ``"a,b"`` or lists) into checked registry names and
fills the default output folder, so that the CLI and the Python API build the same request from
the same arguments; ``LoadedModel`` is the adapter with the identity of its weights.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gazebench.methods.specs import select_methods
from gazebench.models.base import ModelAdapter
from gazebench.paths import safe_name
from gazebench.protocol import DEFAULT_GRID
from gazebench.registry import DATASETS, METRICS

PATH_FIELDS = ("root", "images_root", "checkpoint")  # options given as str or os.PathLike, kept as Path


@dataclass
class RunRequest:
    """What the user asked for (the CLI's options)."""

    model: str
    methods: list[str]
    metrics: list[str]
    out: Path
    data: str = "synth"
    root: Path | None = None
    images_root: Path | None = None
    split: str = "test"
    checkpoint: Path | None = None
    target: str = "label"
    device: str = "auto"
    batch_size: int = 8
    limit: int | None = None
    seed: int = 0
    grid: int = DEFAULT_GRID
    gaze_sigma: float | None = None  # None: the dataset's published sigma
    labels: str | None = None  # the reader's label set (None: its default)
    label_map: object = None  # YAML path, mapping or LabelMap from the dataset's classes to the model's outputs (None: the default map)
    all_metrics: bool = False  # the user asked for "all": metrics the data cannot feed are left out, not refused
    strict: bool = False  # stop at the first unreadable image instead of skipping and counting it
    method_params: dict = dataclasses.field(default_factory=dict)  # method -> the parameters the user gave
    optional_methods: frozenset = frozenset()  # methods that came from a set: left out (logged) when they cannot explain the model
    max_batch_elements: int | None = None  # at most this many model inputs per forward/backward pass (None: each method's default)

    @classmethod
    def create(cls, model: str, methods: str | Sequence = "all", metrics: str | Sequence[str] = "all", out: str | os.PathLike | None = None, **options) -> RunRequest:
        """A request from names: ``methods`` is ``"all"``, a set, ``"a,b:key=value"`` or a list
        (``gazebench.methods.specs``), ``metrics`` ``"all"``, ``"a,b"`` or a list (each checked
        against its registry, a one-line UserError listing the choices otherwise); ``out``
        defaults to ``default_out(...)``; ``options`` are the other fields (paths may be str)."""
        options = {key: Path(value) if key in PATH_FIELDS and value is not None else value for key, value in options.items()}
        DATASETS.get(options.get("data", cls.data))
        selection = select_methods(methods)
        optional = selection.optional | (frozenset(options.pop("optional_methods", None) or ()) & set(selection.names))  # a resolved experiment keeps which came from a set
        request = cls(
            model=model, methods=selection.names, metrics=METRICS.resolve_list(names_spec(metrics)), out=Path("."), all_metrics=names_spec(metrics).strip() == "all",
            method_params=selection.params, optional_methods=optional, **options,
        )
        request.out = Path(out) if out is not None else default_out(model, request.data, request.split, request.seed)
        return request

    @classmethod
    def option_names(cls) -> list[str]:
        """The fields a caller may set besides the model, methods, metrics and out."""
        return sorted(field.name for field in dataclasses.fields(cls) if field.name not in ("model", "methods", "metrics", "out", "all_metrics", "method_params", "optional_methods"))


def names_spec(names: str | Sequence[str]) -> str:
    """``"a,b"``, ``"all"`` or a list of names -> the registry's comma form."""
    return names if isinstance(names, str) else ",".join(names)


def default_out(model: str, data: str, split: str, seed: int, kind: str = "") -> Path:
    """``runs/[<kind>-]<model>-<data>-<split>-seed<seed>``, the model name made file-safe (``torchvision:resnet50`` -> ``torchvision__resnet50``)."""
    prefix = f"{kind}-" if kind else ""
    return Path("runs") / f"{prefix}{safe_name(model)}-{data}-{split}-seed{seed}"


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to run: its adapter, the checkpoint file it came from (None: in memory) and the sha256 of its weights."""

    adapter: ModelAdapter
    checkpoint: Path | None
    sha256: str
