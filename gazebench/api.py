"""The Python API: benchmark a model that exists only as code, without registering it.

``wrap_model`` turns any classifier ``nn.Module`` into a ``ModelAdapter`` (how its input is
prepared, which layer CAM methods use); ``run_benchmark`` scores its saliency maps against
gaze exactly as ``gazebench run`` does (the same ``benchmark`` call, run directory and
report); ``sanity_check`` is ``gazebench sanity``::

    import torch
    from torch import nn
    from gazebench.api import wrap_model, run_benchmark

    class TinyCNN(nn.Module):
        def __init__(self, n_classes=3):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
            )
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.head = nn.Linear(16, n_classes)

        def forward(self, x):
            return self.head(self.pool(self.features(x)).flatten(1))

    model = TinyCNN()
    model.load_state_dict(torch.load("my_weights.pt", weights_only=True))
    adapter = wrap_model(model, ["Normal", "CHF", "pneumonia"], cam_layer="features", input_size=128, name="tiny")
    leaderboard = run_benchmark(adapter, data="synth", methods="saliency,gradcam", metrics="nss,cc", out="runs/tiny")
    print(leaderboard[["method", "metric", "mean", "ci_low", "ci_high", "n"]])

``cam_layer`` is a module inside the model, its dotted name (``"features"``,
``"layer4.1"``), or ``None`` for gazebench's rule (the last module that outputs a 4-D feature
map, see gazebench/models/cam_layer.py).  ``mean``/``std`` are per input channel: the grey
radiograph in [0, 1] is repeated to ``len(mean)`` channels and normalised, so a 1-channel
model takes ``mean=(m,), std=(s,)``.  A model whose classes differ from the data's takes a
label map (``run_benchmark(..., label_map="my_map.yaml")``, see
gazebench/models/label_map.py); registered models (``torchvision:resnet50``, ``xrv:...``)
are built with ``gazebench.registry.MODELS.get(name).build_adapter(...)`` and run the same way.
The run's ``checkpoint_sha256`` is a SHA-256 of the model's state-dict tensors, so runs of the
same weights are recognisably the same model.
"""

from __future__ import annotations

import os
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from gazebench.aggregate.sanity import (
    DEFAULT_THRESHOLD,
    SanityResult,
    summarise_cascade,
)
from gazebench.bootstrap import BOOTSTRAP
from gazebench.errors import UserError
from gazebench.models.adapters import check_class_names
from gazebench.models.base import IMAGENET_MEAN, IMAGENET_STD, ModelAdapter
from gazebench.models.cam_layer import find_cam_layer, named_cam_layer
from gazebench.models.checkpoint import state_dict_sha256
from gazebench.outputs import exclusive, writing
from gazebench.report.run_outputs import write_run_outputs
from gazebench.report.sanity import write_outputs
from gazebench.run.engine import benchmark
from gazebench.run.request import LoadedModel, RunRequest
from gazebench.run.sanity import cascade_config, run_cascade

if typing.TYPE_CHECKING:
    from gazebench.report.study_outputs import StudyOutputs

ACTIVATIONS = ("sigmoid", "softmax")
FIXED_FIELDS = {"data", "root", "split", "checkpoint", "label_map"}  # run_benchmark's own parameters (checkpoint: the adapter is in memory)


def wrap_model(
    module: nn.Module,
    class_names: Sequence[str],
    cam_layer: nn.Module | str | None,
    input_size: int = 224,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    name: str = "custom",
    activation: str = "sigmoid",
) -> ModelAdapter:
    """A ``ModelAdapter`` for ``module`` (input [B, len(mean), S, S] -> logits [B, len(class_names)]).

    Checks, each a one-line UserError: distinct class names, ``mean``/``std`` of one length,
    ``cam_layer`` inside ``module``, and one forward pass giving ``len(class_names)`` logits.
    """
    class_names = check_class_names(class_names, name)
    if len(mean) != len(std) or not len(mean) or any(value <= 0 for value in std):
        raise UserError(f"{name}: mean and std need one value per input channel (std > 0), got mean={tuple(mean)} std={tuple(std)}")
    if activation not in ACTIVATIONS:
        raise UserError(f"{name}: unknown activation {activation!r}; choose one of: {', '.join(ACTIVATIONS)}")
    if input_size <= 0:
        raise UserError(f"{name}: input_size must be positive, got {input_size}")
    check_outputs(module, len(mean), input_size, len(class_names), name)
    return ModelAdapter(
        name=name,
        module=module,
        class_names=class_names,
        cam_layer=resolve_cam_layer(module, cam_layer, input_size, len(mean), name),
        input_size=input_size,
        mean=tuple(float(value) for value in mean),
        std=tuple(float(value) for value in std),
        activation=activation,
        config={"input_size": input_size},
    )


def resolve_cam_layer(module: nn.Module, cam_layer: nn.Module | str | None, input_size: int, channels: int, name: str) -> nn.Module:
    """The module object for ``cam_layer`` (a module, a dotted name, or None for the rule)."""
    if cam_layer is None:
        return find_cam_layer(module, input_size, channels, model_name=name)
    if isinstance(cam_layer, str):
        return named_cam_layer(module, cam_layer, name)
    if not any(candidate is cam_layer for candidate in module.modules()):
        raise UserError(f"{name}: cam_layer {type(cam_layer).__name__} is not a module inside the model; pass one of its own modules or its dotted name")
    return cam_layer


def check_outputs(module: nn.Module, channels: int, input_size: int, n_classes: int, name: str) -> None:
    """One forward pass on a blank input (eval mode, restored after): it must give [2, n_classes] logits."""
    modes = {part: part.training for part in module.modules()}
    parameter = next(iter(module.parameters()), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    try:
        module.eval()
        with torch.no_grad():
            output = module(torch.zeros(2, channels, input_size, input_size, device=device))
    except Exception as error:  # noqa: BLE001 - whatever the user's model raises, report it in one line
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"{name}: the model fails on a [2, {channels}, {input_size}, {input_size}] input ({first}); check input_size and mean/std (one value per channel)") from None
    finally:
        for part, mode in modes.items():
            part.training = mode
    shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
    if shape != (2, n_classes):
        raise UserError(f"{name}: the model returns {shape} for 2 images, but {n_classes} class logits per image were expected")


def run_benchmark(
    adapter: ModelAdapter,
    data: str = "synth",
    root: str | os.PathLike | None = None,
    split: str = "test",
    methods: str | Sequence[str] = "all",
    metrics: str | Sequence[str] = "all",
    out: str | os.PathLike | None = None,
    label_map: object = None,
    report: bool = True,
    **options,
) -> pd.DataFrame:
    """Score ``adapter``'s maps against gaze on ``data``; fill the run directory ``out``; return the leaderboard.

    ``options`` are the other fields of ``gazebench.run.request.RunRequest`` (``images_root``,
    ``target``, ``device``, ``batch_size``, ``limit``, ``seed``, ``grid``, ``gaze_sigma``,
    ``labels``).  ``out`` defaults to ``runs/<adapter name>-<data>-<split>-seed<seed>`` (the
    name made file-safe, as ``gazebench run`` does); running again with the same ``out``
    resumes.  ``label_map`` (a YAML path, a mapping or a LabelMap) maps the data's classes onto
    the model's outputs when they differ.  ``report=False`` (``--no-report``): no ``out/report.html``.
    """
    allowed = [name for name in RunRequest.option_names() if name not in FIXED_FIELDS]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise UserError(f"run_benchmark: unknown options {unknown}; choose from: {', '.join(allowed)}")
    request = RunRequest.create(adapter.name, methods, metrics, out, data=data, root=root, split=split, label_map=label_map, **options)
    return benchmark_and_report(request, LoadedModel(adapter, None, state_dict_sha256(adapter.module)), report=report)


def benchmark_and_report(request: RunRequest, model: LoadedModel | Callable[[], LoadedModel], report: bool = True) -> pd.DataFrame:
    """Fill ``request.out`` and write its reports; returns the leaderboard (``gazebench run`` and ``run_benchmark``).

    The tables, the figures (``figures/``) and, with ``report``, the HTML report ``report.html``.

    The output folder is checked before any work and locked while the run writes to it (a
    second run on it is refused); a failed write (permission, no space left) ends in one line
    saying that the finished shards are kept and that the same command resumes.
    """
    with exclusive(request.out), writing(request.out, f"the finished shards are kept in {request.out}; free space or fix the folder, then the same command resumes"):
        benchmark(request, model)
        return write_run_outputs(request.out, report=report)


def sanity_check(
    adapter: ModelAdapter,
    dataset,
    methods: list[str],
    threshold: float = DEFAULT_THRESHOLD,
    out: str | os.PathLike | None = None,
    config: dict | None = None,
    **options,
) -> SanityResult:
    """The cascading randomisation test (``gazebench sanity``) of ``adapter`` on ``dataset``.

    ``options`` are ``gazebench.run.sanity.run_cascade``'s: ``limit`` (first images, default
    16), ``batch_size``, ``device``, ``seed``, ``steps`` (default 8).  Computes the cascade,
    summarises it with patient-bootstrap CIs and verdicts (``gazebench.aggregate.sanity``: a
    method fails when its mean Spearman similarity at full randomisation is above
    ``threshold``) and, with ``out``, writes sanity.csv, sanity.md, sanity.png and config.yaml
    there (``gazebench.report.sanity``), each file atomically.  ``config``: what the caller
    knows beyond these arguments (model name, checkpoint), recorded in config.yaml.
    """
    cascade = run_cascade(adapter, dataset, methods, **options)
    seed = cascade.settings["seed"]
    result = summarise_cascade(cascade.values, cascade.groups, cascade.unused_layers, cascade.warnings, threshold, seed)
    if out is not None:
        result.out = Path(out)
        record = {**cascade_config(cascade, dataset, config), "threshold": threshold, "bootstrap": {**BOOTSTRAP, "seed": seed}}
        write_outputs(result, result.out, record)
    return result


def run_experiment(config: str | os.PathLike, train_missing: bool = True, report: bool = True, **overrides) -> pd.DataFrame:
    """``gazebench run --config FILE``: every (model, seed) of the experiment file into its own run directory
    under the experiment's ``out``, then the combined leaderboard there (one per seed when there are several)
    and, with ``report``, each run's report.html and the experiment's (``report.html``, or ``report-seed<N>.html``).

    ``overrides`` are the file's keys (``models``, ``methods``, ``metrics``, ``out``, ``seeds``,
    ``data`` as a mapping, ``limit``, ...), None meaning "not given"; they replace the file's values.
    ``train_missing=False`` (``--no-train``): a missing embedded model is an error, not trained.
    The resolved experiment is written to ``out/experiment.yaml`` before the first run, so a killed
    experiment resumes, and a finished one repeats exactly, with ``--config out/experiment.yaml``.
    """
    import yaml

    from gazebench.atomic import write_atomic
    from gazebench.models.training.jobs import adapter_for_run
    from gazebench.outputs import check_output_dir
    from gazebench.report.html import write_report
    from gazebench.report.run_outputs import write_combined_leaderboard
    from gazebench.run.experiment import read_experiment, resolve_experiment

    path = Path(config)
    experiment = resolve_experiment(read_experiment(path), overrides, base=path.parent)
    check_output_dir(experiment.out)
    experiment.out.mkdir(parents=True, exist_ok=True)
    write_atomic(experiment.out / "experiment.yaml", yaml.safe_dump(experiment.resolved, sort_keys=False))
    for entry, request in experiment.requests:
        check_output_dir(request.out)
    for entry, request in experiment.requests:
        def loader(entry=entry, request=request):
            return LoadedModel(*adapter_for_run(entry.name, entry.checkpoint, request.data, request.root, request.images_root, request.device, train_missing=train_missing))

        benchmark_and_report(request, loader, report=report)
    seeds = experiment.resolved["seeds"]
    boards = []
    for seed in seeds:
        runs = [request.out for _, request in experiment.requests if request.seed == seed]
        boards.append(write_combined_leaderboard(runs, experiment.out, seed, "leaderboard" if len(seeds) == 1 else f"leaderboard-seed{seed}"))
        if report:
            write_report(runs, experiment.out / ("report.html" if len(seeds) == 1 else f"report-seed{seed}.html"))
    return boards[0] if len(boards) == 1 else pd.concat([board.assign(seed=seed) for board, seed in zip(boards, seeds)], ignore_index=True)


def report(run_dirs: str | os.PathLike | Sequence[str | os.PathLike], out: str | os.PathLike | None = None, image_ids: Sequence[str] | None = None) -> Path:
    """``gazebench report RUN_DIR... [--out FILE]``: one self-contained HTML file (no network needed to open it) with
    each run's leaderboard (sortable), figures, breakdown by class, region analysis, data summary, configuration and,
    for credentialed data, data-use notice, and with several runs their combined leaderboard.

    ``out`` defaults to ``RUN_DIR/report.html`` for one run and is required for several; returns the file written.
    ``image_ids``: the images the maps figures show (among each run's first 32, whose maps it keeps) instead of
    the best, median and worst.
    A folder that is not a run, a run given twice or a missing ``out`` is a one-line ``UserError``.
    """
    from gazebench.report.html import write_report

    return write_report([run_dirs] if isinstance(run_dirs, (str, os.PathLike)) else list(run_dirs), out, list(image_ids) if image_ids else None)


def paper_tables(paper: str, run_dirs: Sequence[str | os.PathLike], out: str | os.PathLike | None = None, seed: int = 0) -> dict[str, pd.DataFrame]:
    """``gazebench tables --paper NAME RUN_DIR...``: the study's tables from run directories, {table name: numbers}.

    With ``out``, each table is also written there as Markdown, CSV and LaTeX (booktabs), with the
    runs, checkpoints and data that produced it.  A missing ingredient (a run without the needed
    model, method or metric) is a one-line ``UserError`` naming the command that makes it.
    """
    from gazebench.outputs import check_output_dir
    from gazebench.report.papers import paper_tables as build_tables
    from gazebench.report.papers.base import write_tables

    tables, runs = build_tables(paper, [Path(run_dir) for run_dir in run_dirs], seed=seed)
    if out is not None:
        check_output_dir(Path(out))
        write_tables(tables, runs, Path(out))
    return {table.name: table.data for table in tables}


def reproduce(
    study: str,
    out: str | os.PathLike,
    data: str = "synth",
    root: str | os.PathLike | None = None,
    images_root: str | os.PathLike | None = None,
    checkpoints: Mapping[str, str | os.PathLike] | None = None,
    device: str = "auto",
    limit: int | None = None,
    seed: int = 0,
    train_missing: bool = True,
) -> "StudyOutputs":
    """``gazebench reproduce NAME --out DIR``: everything a seed study needs, in one resumable command.

    Trains each of the study's models with its recipe (the cached embedded models on the embedded
    data; on other data ``DIR/models/<model>.pt``, unless ``checkpoints`` gives one), runs the
    study's methods and metrics into ``DIR/runs/<model>`` (an experiment: ``DIR/study.yaml``), then
    writes the study's tables (``DIR/tables``), figures (``DIR/figures``) and ``DIR/report.html``.
    Running it again reuses finished training and finished runs.  Returns the tables' Markdown and the files written.
    """
    import yaml

    from gazebench.atomic import write_atomic
    from gazebench.models.training.jobs import train_job
    from gazebench.outputs import check_output_dir
    from gazebench.report.study_outputs import write_study_outputs
    from gazebench.run.experiment import read_experiment, resolve_experiment
    from gazebench.studies import load_study

    chosen = load_study(study)
    out = Path(out)
    checkpoints = {name: Path(path) for name, path in (checkpoints or {}).items()}
    unknown = sorted(set(checkpoints) - set(chosen.models))
    if unknown:
        raise UserError(f"--checkpoint names {', '.join(unknown)}, which study {study} does not use; its models: {', '.join(chosen.models)}")
    for name, path in checkpoints.items():
        if not path.is_file():
            raise UserError(f"--checkpoint {name}={path}: no such file")
    check_output_dir(out)
    embedded = data == "synth" and root is None
    for model in chosen.models:
        if model not in checkpoints and not embedded:
            path = out / "models" / f"{model}.pt"
            if not path.is_file():
                if not train_missing:
                    raise UserError(f"no checkpoint for {model}: pass --checkpoint {model}=PATH, or drop --no-train to train it into {path}")
                print(train_job(model, data, Path(root) if root else None, Path(images_root) if images_root else None, None, seed, path, device=device).summary())
            checkpoints[model] = path
    models = [{"name": model, "checkpoint": str(checkpoints[model].resolve())} if model in checkpoints else model for model in chosen.models]
    data_section = {"name": data, "split": "test", **({"root": str(Path(root).resolve())} if root else {}), **({"images_root": str(Path(images_root).resolve())} if images_root else {})}
    experiment = {**chosen.experiment, "models": models, "out": "runs", "data": data_section, "seeds": [seed], "device": device, **({"limit": limit} if limit else {})}
    out.mkdir(parents=True, exist_ok=True)
    study_file = out / "study.yaml"
    write_atomic(study_file, f"# gazebench reproduce {study}: {chosen.title}\n" + yaml.safe_dump(experiment, sort_keys=False))
    run_experiment(study_file, train_missing=train_missing)
    run_dirs = [request.out for _, request in resolve_experiment(read_experiment(study_file), {}, base=out).requests]
    return write_study_outputs(chosen, run_dirs, out, out / "runs" / "report.html", seed)  # run_experiment wrote the runs' report
