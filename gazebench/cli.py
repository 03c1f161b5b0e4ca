"""The command line: parse, call, print.  User mistakes exit with status 2 and one line."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from gazebench.data import DEFAULT_SYNTH_N
from gazebench.device import DEVICE_CHOICES
from gazebench.errors import UserError
from gazebench.registry import DATASETS, METHODS, METRICS, MODELS

REGISTRIES = {"methods": METHODS, "models": MODELS, "metrics": METRICS, "datasets": DATASETS}


def fail(ctx: click.Context, message: str) -> None:
    """The one way a user mistake ends: one line on stderr, exit status 2, no traceback."""
    click.echo(f"gazebench: error: {message}", err=True)
    ctx.exit(2)


class OneLineUsageErrors:
    """Click's usage errors (bad option value, unknown command) as one line, like ours."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as error:
            fail(ctx, error.format_message())

    def resolve_command(self, ctx: click.Context, args: list[str]):
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as error:
            fail(ctx, error.format_message())


class Command(OneLineUsageErrors, click.Command):
    """Turns a UserError into one line on stderr and exit status 2 (no traceback)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UserError as error:
            fail(ctx, str(error))


class Group(OneLineUsageErrors, click.Group):
    command_class = Command
    group_class = type


@click.group(cls=Group)
@click.version_option(package_name="gazebench")
def main() -> None:
    """gazebench: do the saliency maps of chest X-ray classifiers look where radiologists look?"""
    show_plugin_warnings_as_lines()


def show_plugin_warnings_as_lines() -> None:
    """A plugin that fails to load is one line on stderr (``gazebench: warning: ...``), not a Python warning with its source line."""
    import warnings

    from gazebench.registry import PluginWarning

    previous = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, PluginWarning):
            click.echo(f"gazebench: warning: {message}", err=True)
        else:
            previous(message, category, filename, lineno, file, line)

    warnings.showwarning = show


def data_options(function):
    function = click.option("--labels", help="Label set: egd/synth 'classes' (default) or 'chexpert' (the *__chx columns); mimic 'chexpert' (default) or 'negbio'.")(function)
    function = click.option("--gaze-sigma", type=click.FloatRange(min=0, min_open=True), help="Gaze Gaussian sigma in the dataset's unit (egd: original pixels; reflacx: degrees). Default: the dataset's published value.")(function)
    function = click.option("--images-root", type=click.Path(path_type=Path), help="MIMIC-CXR (DICOM) or MIMIC-CXR-JPG tree, when the images are not under --root.")(function)
    function = click.option("--root", type=click.Path(path_type=Path), help="Folder of your local copy of the dataset.")(function)
    function = click.option("--data", default="synth", show_default=True, help="Dataset: synth (embedded), egd, reflacx or mimic.")(function)
    return function


@main.command()
@click.option("--config", "config", type=click.Path(path_type=Path), help="Experiment file (YAML: models, data, methods with parameters, metrics, seeds; see README): one run per model, then the combined leaderboard. Flags given here override the file.")
@click.option("--model", help="Registered model name (see `gazebench list models`); required without --config.")
@click.option("--checkpoint", type=click.Path(path_type=Path), help="Checkpoint from `gazebench train` (default: the cached model for the embedded data).")
@data_options
@click.option("--methods", default="all", show_default=True, help="'all', a set (kim2022, shamsul2023, cam) or a comma list, with parameters after a colon: smoothgrad:n_samples=25,stdev=0.1,gradcam (see `gazebench list methods`).")
@click.option("--metrics", default="all", show_default=True, help="'all' or a comma list of metrics.")
@click.option("--max-batch-elements", type=click.IntRange(min=1), help="At most this many model inputs (images, noisy or perturbed copies) per forward/backward pass; lower it when memory runs out (default: 16, the chunk that ran fastest on a 2-core CPU).")
@click.option("--target", type=click.Choice(["label", "pred"]), default="label", show_default=True, help="Class the maps explain.")
@click.option("--label-map", type=click.Path(path_type=Path), help="YAML mapping the data's classes to the model's outputs (default: the package's gazebench/resources/label_maps/label_maps.yaml when it fits).")
@click.option("--split", type=click.Choice(["train", "dev", "test", "all"]), default="test", show_default=True, help="Which images to score.")
@click.option("--device", type=click.Choice(DEVICE_CHOICES), default="auto", show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--limit", type=click.IntRange(min=1), help="Score only the first N images of the split.")
@click.option("--out", type=click.Path(path_type=Path), help="Run directory (default: runs/<model>-<data>-<split>-seed<seed>); reusing one resumes it.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--strict", is_flag=True, help="Stop at the first unreadable image (default: skip it, count and list it in run.log).")
@click.option("--no-train", is_flag=True, help="Require existing weights: when the embedded data's cached model is missing, fail naming the `gazebench train` command that makes it instead of training it.")
@click.option("--no-report", is_flag=True, help="Do not write RUN_DIR/report.html, the self-contained HTML report (`gazebench report RUN_DIR` writes it later).")
@click.pass_context
def run(ctx, config, model, checkpoint, data, root, images_root, gaze_sigma, labels, methods, metrics, max_batch_elements, target, label_map, split, device, batch_size, limit, out, seed,
        strict, no_train, no_report) -> None:
    """Compute saliency maps, score them against gaze, print the leaderboard and write the HTML report."""
    if config is not None:
        return run_experiment_command(ctx, config, no_train, no_report)
    if model is None:
        raise UserError("--model is required (or --config EXPERIMENT.yaml); see `gazebench list models`")
    from gazebench.api import benchmark_and_report
    from gazebench.models.training.jobs import adapter_for_run
    from gazebench.report.leaderboard import format_markdown
    from gazebench.report.run_outputs import run_summary
    from gazebench.run.request import LoadedModel, RunRequest

    DATASETS.get(data)
    MODELS.get(model)
    request = RunRequest.create(
        model, methods, metrics, out, data=data, root=root, images_root=images_root, split=split, checkpoint=checkpoint, target=target,
        device=device, batch_size=batch_size, limit=limit, seed=seed, gaze_sigma=gaze_sigma, labels=labels, label_map=label_map, strict=strict,
        max_batch_elements=max_batch_elements,
    )
    board = benchmark_and_report(request, lambda: LoadedModel(*adapter_for_run(model, checkpoint, data, root, images_root, device, train_missing=not no_train)), report=not no_report)
    click.echo(format_markdown(board))
    click.echo(run_summary(request.out, report=not no_report))


def run_experiment_command(ctx: click.Context, config: Path, no_train: bool, no_report: bool) -> None:
    """``run --config``: the file's experiment, with the flags the user typed replacing its values."""
    from click.core import ParameterSource

    from gazebench.api import run_experiment
    from gazebench.report.leaderboard import format_markdown

    given = {name for name in ctx.params if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE}
    value = lambda name: ctx.params[name] if name in given else None
    if "checkpoint" in given and "model" not in given:
        raise UserError("--checkpoint with --config needs --model (which model the checkpoint is); or give it in the file's models")
    overrides = {
        "models": [{"name": ctx.params["model"], "checkpoint": str(ctx.params["checkpoint"]) if ctx.params["checkpoint"] else None}] if "model" in given else None,
        "data": {"name": value("data"), "root": value("root"), "images_root": value("images_root"), "split": value("split"), "labels": value("labels"), "gaze_sigma": value("gaze_sigma")},
        "seeds": [ctx.params["seed"]] if "seed" in given else None,
        **{name: value(name) for name in ("methods", "metrics", "out", "target", "device", "batch_size", "max_batch_elements", "limit", "strict")},
    }
    if "label_map" in given:
        raise UserError("--label-map with --config: give label_map per model in the file's models")
    board = run_experiment(config, train_missing=not no_train, report=not no_report, **overrides)
    click.echo(format_markdown(board))


@main.command()
@click.option("--model", required=True, help="Registered model name.")
@data_options
@click.option("--epochs", type=click.IntRange(min=1), help="Override the recipe's number of epochs.")
@click.option("--seed", "seeds", type=int, multiple=True, default=(0,), show_default=True, help="Repeat to train several seeds (checkpoints <out stem>-seed<N>.pt) and see their spread.")
@click.option("--out", type=click.Path(path_type=Path), help="Checkpoint file to write (default for the embedded data: the model cache, one entry per recipe, --epochs and seed; `run` uses the recipe's own).")
@click.option("--device", type=click.Choice(DEVICE_CHOICES), default="auto", show_default=True)
@click.option("--strict", is_flag=True, help="Stop at the first image file that does not decode (default: skip and count it).")
def train(model, data, root, images_root, gaze_sigma, labels, epochs, seeds, out, device, strict) -> None:
    """Train a model (checkpoint picked on dev, never test) and report its test AUROC.

    The recipe is the model's default for the dataset: ``embedded`` (CPU-sized) for the
    synthetic data, the paper's for real data."""
    from gazebench.device import resolve_device
    from gazebench.models.training.jobs import (
        check_output,
        seed_checkpoint,
        seeds_summary,
        train_job,
    )

    DATASETS.get(data)
    MODELS.get(model)
    seeds = list(dict.fromkeys(seeds))
    device = resolve_device(device)
    targets = [seed_checkpoint(out, seed, len(seeds) > 1) if out else None for seed in seeds]
    for target in filter(None, targets):
        check_output(target)  # every seed's checkpoint, before the first one trains
    reports = []
    for seed, target in zip(seeds, targets):
        reports.append(train_job(model, data, root, images_root, epochs, seed, target, device=device, gaze_sigma=gaze_sigma, labels=labels, strict=strict))
        click.echo(reports[-1].summary())
    if len(reports) > 1:
        click.echo(seeds_summary(reports))


@main.group(cls=Group)
def data() -> None:
    """Generate, check and prepare datasets."""


@data.command()
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder to create.")
@click.option("--n", type=click.IntRange(min=3), default=DEFAULT_SYNTH_N, show_default=True, help="Number of images.")
@click.option("--seed", type=int, default=0, show_default=True)
def synth(out, n, seed) -> None:
    """Write the synthetic dataset in EGD's on-disk layout."""
    from gazebench.data import synth as generator

    generator.generate(out, n=n, seed=seed)
    click.echo(f"wrote {n} synthetic images in the EGD layout to {out}")


def dataset_options(function):
    function = click.option("--images-root", type=click.Path(path_type=Path), help="MIMIC-CXR (DICOM) or MIMIC-CXR-JPG tree, when the images are not under --root.")(function)
    function = click.option("--root", type=click.Path(path_type=Path), help="Folder of your local copy (synth: default the embedded dataset).")(function)
    function = click.option("--dataset", "name", required=True, help="synth, egd, reflacx or mimic.")(function)
    return function


@data.command()
@dataset_options
@click.option("--workers", type=click.IntRange(min=0), default=2, show_default=True, help="Worker processes decoding the images (0: in this process).")
@click.option("--quick", is_flag=True, help="Decode an evenly spaced sample of 16 images instead of every image.")
def check(name, root, images_root, workers, quick) -> None:
    """Validate a local copy against its manifest, decode every image, print a report (exit 2 when unusable).

    Unreadable images are warnings: run and train skip and count them (--strict stops)."""
    from gazebench.data.check import DECODE_SAMPLE, check_dataset
    from gazebench.data.datasets import ensure_synth

    info = DATASETS.get(name)
    if root is None:
        if info.needs_root:
            raise UserError(f"--root is required: the folder of your local copy of {info.manifest.obtain_hint()}")
        root = ensure_synth()
    report = check_dataset(name, root, images_root, decode=DECODE_SAMPLE if quick else None, workers=workers, progress=True)
    click.echo(report.format())
    if not report.usable:
        raise UserError(f"{name} at {root} cannot be used as it is; fix the errors listed above")


@data.command()
@dataset_options
@click.option("--gaze-sigma", type=click.FloatRange(min=0, min_open=True), help="Gaze sigma in the dataset's unit (default: its published value).")
@click.option("--labels", help="Label set (see `gazebench run --help`).")
@click.option("--grid", type=click.IntRange(min=8), default=224, show_default=True, help="Scoring-grid size.")
@click.option("--workers", type=click.IntRange(min=0), default=2, show_default=True, help="Worker processes (0: in this process).")
def prepare(name, root, images_root, gaze_sigma, labels, grid, workers) -> None:
    """Build the preprocessed cache (images, gaze densities, fixations, masks on the grid); resumable."""
    from gazebench.data.cache import prepare as build_cache
    from gazebench.data.datasets import open_dataset

    info = DATASETS.get(name)
    if root is None and info.needs_root:
        raise UserError(f"--root is required: the folder of your local copy of {info.manifest.obtain_hint()}")
    dataset = open_dataset(name, root, "all", grid, images_root, require_gaze=False, gaze_sigma=gaze_sigma, labels=labels, use_cache=False)
    click.echo(build_cache(dataset, workers=workers).summary())


@main.command(name="list")
@click.argument("kind", required=False, type=click.Choice(sorted(REGISTRIES)))
def list_registered(kind) -> None:
    """Show the registered methods, models, metrics and datasets (methods: a table of family, cost, library, parameters)."""
    if kind == "methods":
        from gazebench.methods.catalogue import methods_table

        click.echo(methods_table())
        return
    for name in [kind] if kind else sorted(REGISTRIES):
        click.echo(f"{name}: {', '.join(REGISTRIES[name].names())}")


@main.command()
@click.option("--saliency", type=click.Path(path_type=Path), required=True, help="Saliency maps, a .npy array [N, H, W].")
@click.option("--gaze", type=click.Path(path_type=Path), required=True, help="Gaze densities, a .npy array [N, H, W] (non-negative).")
@click.option("--fixations", type=click.Path(path_type=Path), help="Fixations, a binary (or count) .npy array [N, H, W]: enables nss, the AUCs, info_gain.")
@click.option("--masks", type=click.Path(path_type=Path), help="Localisation masks, a 0/1 .npy array [N, H, W]: enables iou and hit_rate.")
@click.option("--centre-bias", type=click.Path(path_type=Path), help="Centre-bias map, a .npy array [H, W] (default: a centred Gaussian, sigma = a quarter of the side).")
@click.option("--metrics", default="all", show_default=True, help="'all' (every metric the inputs allow) or a comma list.")
@click.option("--device", type=click.Choice(DEVICE_CHOICES), default="auto", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="CSV to write: one row per map, one column per metric.")
def score(saliency, gaze, fixations, masks, centre_bias, metrics, device, out) -> None:
    """Score saliency maps made by any tool against gaze, with gazebench's metrics."""
    from gazebench.device import resolve_device
    from gazebench.outputs import check_output_file
    from gazebench.report.arrays import summary_markdown, write_scores
    from gazebench.run.arrays import ScoreInputs, score_arrays

    check_output_file(out)  # before any work
    table, left_out = score_arrays(ScoreInputs(saliency, gaze, fixations, masks, centre_bias), metrics, resolve_device(device))
    write_scores(table, out)
    click.echo(summary_markdown(table, left_out))
    click.echo(f"wrote {len(table)} rows to {out}")


@main.command(name="tables")
@click.option("--paper", required=True, help="The study whose tables to make: karargyris2021, kim2022, mimic2023, shamsul2023, watanabe2022.")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), help="Folder for the tables' .md, .csv and .tex files (default: tables/<paper>).")
@click.option("--seed", type=int, default=0, show_default=True, help="Bootstrap seed.")
def tables_command(paper, run_dirs, out, seed) -> None:
    """A seed study's tables from run directories, laid out as in the paper, with the paper's numbers beside ours.

    Prints the tables as Markdown and writes each as Markdown, CSV and LaTeX (booktabs), saying which runs, checkpoints and data made it.
    """
    from gazebench.outputs import check_output_dir, writing
    from gazebench.report.papers import write_paper_tables

    out = out or Path("tables") / paper
    check_output_dir(out)
    with writing(out, "the tables written before the failure"):
        text, written = write_paper_tables(paper, list(run_dirs), out, seed=seed)
    click.echo(text)
    click.echo(f"wrote {len(written)} files to {out}")


@main.command()
@click.argument("study")
@data_options
@click.option("--checkpoint", "checkpoints", multiple=True, metavar="MODEL=PATH", help="Use this checkpoint for one of the study's models instead of training it (repeat for several).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder for everything: study.yaml, models/ (trained on your data), runs/, tables/, figures/, report.html.")
@click.option("--limit", type=click.IntRange(min=1), help="Score only the first N test images (a quick look; the tables then say so through n).")
@click.option("--device", type=click.Choice(DEVICE_CHOICES), default="auto", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--no-train", is_flag=True, help="Refuse, naming the missing checkpoint, instead of training a model the study needs.")
def reproduce(study, data, root, images_root, gaze_sigma, labels, checkpoints, out, limit, device, seed, no_train) -> None:
    """Reproduce a seed study (karargyris2021, kim2022, mimic2023, shamsul2023, watanabe2022) in one resumable command:
    train its models (or take --checkpoint MODEL=PATH), run its methods and metrics, write its tables, figures and report."""
    from gazebench.api import reproduce as reproduce_study

    if gaze_sigma is not None or labels is not None:
        fail(click.get_current_context(), "reproduce uses each dataset's published gaze sigma and labels; drop --gaze-sigma and --labels (or run the study's experiment file yourself)")
    given = {}
    for item in checkpoints:
        name, separator, path = item.partition("=")
        if not separator or not name or not path:
            fail(click.get_current_context(), f"--checkpoint {item!r}: write MODEL=PATH, e.g. --checkpoint densenet121=ckpt/densenet121.pt")
        given[name] = Path(path)
    outputs = reproduce_study(study, out, data=data, root=root, images_root=images_root, checkpoints=given, device=device, limit=limit, seed=seed, train_missing=not no_train)
    click.echo(outputs.tables_markdown)
    click.echo(f"wrote {len(outputs.files)} files: tables in {out / 'tables'}, figures in {out / 'figures'}, the report {out / 'report.html'}; the runs are in {out / 'runs'}")


@main.command(name="report")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), help="The HTML file to write (default: RUN_DIR/report.html for one run; required for several).")
@click.option("--image", "images", multiple=True, metavar="IMAGE_ID", help="Show this image in the maps figures instead of the best, median and worst (repeat for several; one of the run's first 32 images, whose maps it keeps).")
def report_command(run_dirs, out, images) -> None:
    """One self-contained HTML report of one or several runs (opens with no network): sortable leaderboard, figures,
    breakdown by class, region analysis, data summary, configuration; with several runs also their combined leaderboard."""
    from gazebench.api import report

    click.echo(f"wrote {report(list(run_dirs), out, image_ids=list(images) or None)}")


@main.command(name="leaderboard")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--format", "output_format", type=click.Choice(["md", "csv", "tex"]), default="md", show_default=True)
@click.option("--seed", type=int, help="Bootstrap seed (default: the first run's).")
def leaderboard_command(run_dirs, output_format, seed) -> None:
    """One leaderboard over several runs (e.g. several models on the same images), with paired comparisons.

    Runs that scored different images are compared on the images they all scored (one line on stderr says how many each kept).
    """
    from gazebench.aggregate.leaderboard import rank
    from gazebench.aggregate.runs import combine_runs, run_seed
    from gazebench.report.leaderboard import format_latex, format_markdown

    combined = combine_runs(list(run_dirs))
    notes = [combined.note] if combined.note else []
    for note in notes:
        click.echo(f"gazebench: {note}", err=True)
    board, _ = rank(combined.rows, run_seed(Path(run_dirs[0])) if seed is None else seed)
    formats = {"md": lambda b: format_markdown(b, notes), "csv": lambda b: b.to_csv(index=False), "tex": lambda b: format_latex(b, notes)}
    click.echo(formats[output_format](board))


@main.command()
@click.option("--model", required=True, help="Registered model name (see `gazebench list models`).")
@click.option("--checkpoint", type=click.Path(path_type=Path), help="Checkpoint from `gazebench train` (default: the cached model for the embedded data).")
@data_options
@click.option("--methods", default="kim2022", show_default=True, help="A set (all, kim2022, shamsul2023, cam) or a comma list, with parameters: smoothgrad:n_samples=8,gradcam.")
@click.option("--split", type=click.Choice(["train", "dev", "test", "all"]), default="test", show_default=True, help="Which images to explain.")
@click.option("--limit", type=click.IntRange(min=1), default=16, show_default=True, help="Use the first N images of the split.")
@click.option("--steps", type=click.IntRange(min=1), default=8, show_default=True, help="At most this many randomisation steps (layers grouped contiguously).")
@click.option("--threshold", type=float, default=0.5, show_default=True, help="A method fails when its mean Spearman similarity at full randomisation is above this.")
@click.option("--device", type=click.Choice(DEVICE_CHOICES), default="auto", show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), help="Output folder (default: runs/sanity-<model>-<data>-<split>-seed<seed>).")
@click.option("--seed", type=int, default=0, show_default=True)
def sanity(model, checkpoint, data, root, images_root, gaze_sigma, labels, methods, split, limit, steps, threshold, device, batch_size, out, seed) -> None:
    """Randomise the model's layers from the output down; do the maps change? (Adebayo et al. 2018)"""
    from gazebench.api import sanity_check
    from gazebench.methods.specs import select_methods
    from gazebench.models.training.jobs import adapter_for_run
    from gazebench.report.sanity import format_markdown
    from gazebench.run.engine import open_run_dataset
    from gazebench.run.request import RunRequest, default_out

    DATASETS.get(data)
    MODELS.get(model)
    out = out or default_out(model, data, split, seed, kind="sanity")
    select_methods(methods)  # checked before the data and the model are opened
    request = RunRequest(model=model, methods=[], metrics=[], out=out, data=data, root=root, images_root=images_root, split=split, gaze_sigma=gaze_sigma, labels=labels)
    dataset = open_run_dataset(request)
    adapter, checkpoint, sha256 = adapter_for_run(model, checkpoint, data, root, images_root, device)
    record = {"model": {"name": model, "checkpoint": str(checkpoint), "checkpoint_sha256": sha256}}
    result = sanity_check(adapter, dataset, methods, threshold, out, config=record, limit=limit, batch_size=batch_size, device=device, seed=seed, steps=steps)
    click.echo(format_markdown(result))
    click.echo(f"sanity check written to {out} (sanity.csv, sanity.md, sanity.png, config.yaml)")


if __name__ == "__main__":
    sys.exit(main())
