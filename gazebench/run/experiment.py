"""Experiment files: one YAML file that describes a whole experiment, resolved into one run per model and seed.

``gazebench run --config experiment.yaml``::

    out: runs/experiment            # one run directory per model (and seed) inside, the combined leaderboard beside them
    data: {name: synth, split: test}   # also root, images_root, labels, gaze_sigma
    models:
      - unet_gaze                    # the cached embedded model (trained on first use)
      - {name: densenet121, checkpoint: ckpt/densenet121.pt, label_map: null}
    methods: [kim2022, "lime:n_samples=256", {smoothgrad: {n_samples: 25, stdev: 0.1}}]
    metrics: all
    seeds: [0]
    # optional: target, device, batch_size, max_batch_elements, limit, grid, strict

Flags given on the command line override the file's values (``--methods gradcam`` replaces the
file's methods, ``--model`` its models).  The resolved experiment (every default filled in, the
methods with their full parameters, which of them came from a set and may be left out for a model
that they cannot explain) is stored as ``OUT/experiment.yaml``, which ``--config`` accepts as it
is: the experiment repeats exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from gazebench.device import DEVICE_CHOICES
from gazebench.errors import UserError
from gazebench.methods.specs import select_methods
from gazebench.paths import safe_name
from gazebench.registry import DATASETS, METHODS, MODELS
from gazebench.run.request import RunRequest

TOP_KEYS = ("out", "data", "models", "methods", "optional_methods", "metrics", "seeds", "target", "device", "batch_size", "max_batch_elements", "limit", "grid", "strict")
DATA_KEYS = ("name", "root", "images_root", "split", "labels", "gaze_sigma")
MODEL_KEYS = ("name", "checkpoint", "label_map")
RUN_OPTIONS = ("target", "device", "batch_size", "max_batch_elements", "limit", "grid", "strict")
DEFAULTS = {"data": {"name": "synth", "split": "test"}, "methods": "all", "metrics": "all", "seeds": [0], "target": "label", "device": "auto", "batch_size": 8}


@dataclass(frozen=True)
class ModelEntry:
    name: str
    checkpoint: Path | None = None
    label_map: str | None = None


@dataclass
class Experiment:
    """A resolved experiment: where it writes, one request per (model, seed), and the resolved file's content."""

    out: Path
    requests: list[tuple[ModelEntry, RunRequest]]
    resolved: dict


def read_experiment(path: Path) -> dict:
    """The experiment file's mapping (one line naming the file and the problem otherwise)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"experiment file {path} does not exist")
    try:
        content = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise UserError(f"experiment file {path} is not valid YAML: {' '.join(str(error).split())}") from None
    if not isinstance(content, Mapping):
        raise UserError(f"experiment file {path} must be a mapping of keys ({', '.join(TOP_KEYS)})")
    unknown = sorted(set(content) - set(TOP_KEYS))
    if unknown:
        raise UserError(f"experiment file {path}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(TOP_KEYS)}")
    return dict(content)


def model_entry(entry) -> ModelEntry:
    if isinstance(entry, str):
        return ModelEntry(entry)
    if not isinstance(entry, Mapping) or "name" not in entry:
        raise UserError(f"models: each entry is a model name or {{name: ..., checkpoint: ..., label_map: ...}}; got {entry!r}")
    unknown = sorted(set(entry) - set(MODEL_KEYS))
    if unknown:
        raise UserError(f"models: unknown key(s) {', '.join(unknown)} in {entry['name']}; valid keys: {', '.join(MODEL_KEYS)}")
    for key in ("checkpoint", "label_map"):
        if entry.get(key) is not None and not isinstance(entry[key], (str, Path)):
            raise UserError(f"models: {key} of {entry['name']} must be a path, got {entry[key]!r}")
    checkpoint = entry.get("checkpoint")
    return ModelEntry(str(entry["name"]), Path(checkpoint) if checkpoint else None, entry.get("label_map"))


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# what each option may hold, checked before any work as the command line's flags are
OPTION_CHECKS = {
    "limit": (lambda v: is_int(v) and v >= 1, "a whole number >= 1"),
    "batch_size": (lambda v: is_int(v) and v >= 1, "a whole number >= 1"),
    "max_batch_elements": (lambda v: is_int(v) and v >= 1, "a whole number >= 1"),
    "grid": (lambda v: is_int(v) and v >= 8, "a whole number >= 8"),
    "target": (lambda v: v in ("label", "pred"), "label or pred"),
    "device": (lambda v: v in DEVICE_CHOICES, " or ".join(DEVICE_CHOICES)),
    "strict": (lambda v: isinstance(v, bool), "true or false"),
    "out": (lambda v: isinstance(v, (str, Path)), "a folder path"),
    "methods": (lambda v: isinstance(v, (str, list)), "a set or method name, a comma list, or a list"),
    "metrics": (lambda v: isinstance(v, (str, list)), "'all', a comma list or a list"),
    "seeds": (lambda v: is_int(v) or (isinstance(v, list) and v and all(is_int(seed) for seed in v)), "a whole number or a list of them"),
    "data": (lambda v: isinstance(v, Mapping), "a mapping (name, root, images_root, split, labels, gaze_sigma)"),
    "optional_methods": (lambda v: isinstance(v, list), "a list of method names"),
}


def check_values(values: dict, origin: str) -> None:
    """One line for the first value an option cannot hold (None means "not given")."""
    for key, (test, requirement) in OPTION_CHECKS.items():
        if values.get(key) is not None and not test(values[key]):
            raise UserError(f"{origin}: {key} must be {requirement}, got {values[key]!r}")


def with_paths_resolved(content: dict, base: Path) -> dict:
    """The file's content with its relative paths made absolute against the file's folder ``base``."""
    content = dict(content)
    if content.get("out") is not None:
        content["out"] = relative_to(Path(content["out"]), base)
    if isinstance(content.get("data"), Mapping):
        content["data"] = {key: relative_to(Path(value), base) if key in ("root", "images_root") and value else value for key, value in content["data"].items()}
    if isinstance(content.get("models"), list):
        content["models"] = [resolved_model(entry, base) for entry in content["models"]]
    return content


def resolved_model(entry, base: Path):
    if not isinstance(entry, Mapping):
        return entry
    return {key: relative_to(Path(value), base) if key in ("checkpoint", "label_map") and isinstance(value, (str, Path)) else value for key, value in entry.items()}


def resolve_experiment(content: dict, overrides: dict, base: Path = Path(".")) -> Experiment:
    """The experiment of ``content`` with command-line ``overrides`` applied (keys as in the file; None = not given).

    Relative paths in the file are relative to the file's folder ``base``; those on the command line
    to the working directory.
    """
    check_values(content, "experiment file")
    content = with_paths_resolved(content, base)
    overrides = with_paths_resolved({key: value for key, value in overrides.items() if value is not None}, Path.cwd())
    merged = {**DEFAULTS, **content, **{key: value for key, value in overrides.items() if key != "data"}}
    data = {**DEFAULTS["data"], **(content.get("data") or {}), **{key: value for key, value in (overrides.get("data") or {}).items() if value is not None}}
    unknown = sorted(set(data) - set(DATA_KEYS))
    if unknown:
        raise UserError(f"data: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(DATA_KEYS)}")
    if merged.get("out") is None:
        raise UserError("the experiment has no out: give `out: FOLDER` in the file or --out")
    if not merged.get("models"):
        raise UserError("the experiment has no models: give `models: [name, ...]` in the file or --model")
    models = [model_entry(entry) for entry in (merged["models"] if isinstance(merged["models"], list) else [merged["models"]])]
    for entry in models:
        MODELS.get(entry.name)
    twice = sorted({entry.name for entry in models if sum(other.name == entry.name for other in models) > 1})
    if twice:
        raise UserError(f"models: {', '.join(twice)} listed more than once; an experiment's runs are told apart by model name, so compare checkpoints of one model as separate experiments")
    DATASETS.get(data["name"])
    seeds = merged["seeds"] if isinstance(merged["seeds"], list) else [merged["seeds"]]
    selection = select_methods(merged["methods"])
    out = Path(merged["out"])
    options = {key: merged[key] for key in RUN_OPTIONS if merged.get(key) is not None}
    root, images_root = (data.get(key) for key in ("root", "images_root"))
    requests = []
    for entry in models:
        for seed in seeds:
            run_out = out / (safe_name(entry.name) + (f"-seed{seed}" if len(seeds) > 1 else ""))
            request = RunRequest.create(
                entry.name, merged["methods"], merged["metrics"], run_out, data=data["name"], root=root, images_root=images_root, split=data["split"],
                labels=data.get("labels"), gaze_sigma=data.get("gaze_sigma"), checkpoint=entry.checkpoint, label_map=entry.label_map, seed=int(seed),
                optional_methods=merged.get("optional_methods"), **options,
            )
            requests.append((entry, request))
    resolved = {
        "out": str(out),
        "data": {key: (str(value) if isinstance(value, Path) else value) for key, value in {**data, "root": root, "images_root": images_root}.items()},
        "models": [{"name": m.name, "checkpoint": str(m.checkpoint) if m.checkpoint else None, "label_map": str(m.label_map) if m.label_map else None} for m in models],
        "methods": [{name: {**METHODS.get(name)(**selection.params.get(name, {})).params}} for name in selection.names],
        "optional_methods": sorted(selection.optional | set(merged.get("optional_methods") or ()) & set(selection.names)),  # from a set: left out where they cannot explain a model
        "metrics": merged["metrics"],
        "seeds": [int(seed) for seed in seeds],
        **options,
    }
    return Experiment(out, requests, resolved)


def relative_to(path: Path | None, base: Path) -> Path | None:
    """``path`` as written in a file in folder ``base``, made absolute (so the resolved file works from anywhere)."""
    if path is None:
        return None
    path = Path(path).expanduser()
    return (path if path.is_absolute() else base / path).absolute()
