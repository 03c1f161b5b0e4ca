"""Regenerate the README's numbers from a finished run of the main command, or check them.

    gazebench run --model unet_gaze --methods all        # writes runs/unet_gaze-synth-test-seed0
    python reports/readme_numbers.py [RUN_DIR] [--report REPORT.yaml] [--readme README.md] [--check]

Every number the README quotes from the main command lives between markers,
``<!-- generated: NAME -->`` ... ``<!-- /generated -->``, and is written here, never by hand:

- ``model-auroc``: the trained model's best epoch and test AUROC (from its training report,
  ``<checkpoint>.report.yaml`` beside the checkpoint that ``RUN_DIR/config.yaml`` names), and its
  Grad-CAM shuffled control (NSS against each image's own gaze vs. the other images' gaze, the
  check of tests/test_trained_unet_gaze.py), recomputed with that checkpoint on the run's images;
- ``leaderboard-excerpt``: the rows of ``RUN_DIR/leaderboard.md`` for a few metrics, as printed;
- ``what-it-says``: which methods beat the centre-bias floor on the shuffled AUC and the plain
  agreement metrics, the pointing-game and IoU ranges, and the region agreement with gaze, read
  from ``leaderboard.csv`` (its ``vs_centre_bias`` / ``vs_best`` marks) and ``regions_agreement.csv``.

Without ``--check`` the README is rewritten in place; with it, nothing is written, a unified
diff is printed and the exit status is 1 when the README differs (tests/test_readme_numbers.py
does the same check on a fresh run). A missing file or marker exits with status 2 and one line.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
import textwrap
from pathlib import Path

import pandas as pd
import yaml

from gazebench.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DEFAULT_RUN = ROOT / "runs" / "unet_gaze-synth-test-seed0"
MAIN_COMMAND = "gazebench run --model unet_gaze --methods all"
BLOCKS = ("model-auroc", "leaderboard-excerpt", "what-it-says")
EXCERPT_METRICS = ("auc_shuffled", "hit_rate", "iou", "nss")
PLAIN_METRICS = ("cc", "nss", "auc_judd", "iou")  # agreement metrics that do not remove centre bias
FLOOR = "centre_bias"
MARKER = re.compile(r"<!-- generated: (?P<name>[\w-]+) -->\n(?P<body>.*?)<!-- /generated -->", re.DOTALL)
BLOCK_START = re.compile(r"([-+*>#]|\d+[.)])( |$)")  # a line Markdown reads as a list item, quote or heading
NUMBER_WORDS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight"}


# ---------------------------------------------------------------------- reading the run


def read_run(run_dir: Path, report: Path | None = None) -> dict:
    """The run's configuration, leaderboard (csv and md), region agreement and the model's training report."""
    missing = [name for name in ("config.yaml", "leaderboard.csv", "leaderboard.md", "regions_agreement.csv") if not (run_dir / name).is_file()]
    if missing:
        raise UserError(f"{run_dir} has no {', '.join(missing)}: pass the directory of a finished `{MAIN_COMMAND}` (default {DEFAULT_RUN.relative_to(ROOT)})")
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    ran = f"{config['model']['name']} on the {config['data']['split']} split"
    if ran != "unet_gaze on the test split":
        raise UserError(f"{run_dir} is a run of {ran}: the README quotes `{MAIN_COMMAND}` (unet_gaze on the test split)")
    report = Path(report or Path(config["model"]["checkpoint"]).with_suffix(".report.yaml"))
    if not report.is_file():
        raise UserError(f"no training report at {report}: pass the model's report with --report (written beside its checkpoint by `gazebench train`)")
    return {
        "config": config,
        "board": pd.read_csv(run_dir / "leaderboard.csv"),
        "board_md": (run_dir / "leaderboard.md").read_text(),
        "regions": pd.read_csv(run_dir / "regions_agreement.csv"),
        "report": yaml.safe_load(report.read_text()),
    }


def model_control(config: dict) -> dict:
    """The Grad-CAM shuffled control of the run's checkpoint on the run's images (see gradcam_shuffled_control)."""
    from gazebench.data.datasets import open_dataset
    from gazebench.models.checkpoint import adapter_from_checkpoint

    data = config["data"]
    adapter = adapter_from_checkpoint(config["model"]["checkpoint"]).eval()
    images_root = Path(data["images_root"]) if data.get("images_root") else None
    dataset = open_dataset(data["name"], Path(data["root"]), data["split"], config["protocol"]["grid"], images_root)
    return gradcam_shuffled_control(adapter, [dataset[i] for i in range(len(dataset))])


def gradcam_shuffled_control(adapter, samples) -> dict:
    """Grad-CAM's NSS against each image's own fixations vs. the mean over every other image's (a shuffled control).

    Returns the two means over the images where both are defined, their number ``n``, the share
    of them where the own gaze scores higher, and the one-sided Wilcoxon signed-rank p-value
    (the check of tests/test_trained_unet_gaze.py).
    """
    import torch
    from scipy.stats import wilcoxon

    from gazebench.data.sample import collate
    from gazebench.methods.base import image_seed
    from gazebench.metrics.base import GazeTargets
    from gazebench.registry import METHODS, METRICS

    batch = collate(samples)
    grid = batch.gaze.shape[-1]
    maps = METHODS.get("gradcam")()(adapter, batch.images, batch.labels.argmax(dim=1), [image_seed(0, i) for i in batch.image_ids], grid)
    nss = METRICS.get("nss")()
    own = nss.compute(maps, GazeTargets(batch.gaze, batch.fixation_maps))
    others = torch.stack([nss.compute(maps, GazeTargets(batch.gaze.roll(k, 0), batch.fixation_maps.roll(k, 0))) for k in range(1, len(batch))]).nanmean(dim=0)
    defined = ~(own.isnan() | others.isnan())
    difference = (own - others)[defined]
    return {
        "own": float(own[defined].mean()),
        "others": float(others[defined].mean()),
        "n": int(defined.sum()),
        "higher": float((difference > 0).float().mean()),
        "p": float(wilcoxon(difference.numpy(), alternative="greater").pvalue),
    }


# ---------------------------------------------------------------------- the blocks


def generated_blocks(run_dir: Path, report: Path | None = None) -> dict[str, str]:
    """The text of every generated block, from the run directory (and the model's training report)."""
    run = read_run(run_dir, report)
    return {
        "model-auroc": model_text(run["report"], run["config"]["data"]["images"], model_control(run["config"])),
        "leaderboard-excerpt": leaderboard_excerpt(run["board"], run["board_md"]),
        "what-it-says": what_it_says(run["board"], run["regions"]),
    }


def model_text(report: dict, n_images: int, control: dict) -> str:
    """The trained model's paragraph: best epoch, per-class test AUROC with CIs, the Grad-CAM shuffled control."""
    intervals = report["test_auroc_ci95"]
    aurocs = [f"{value:.3f} [{intervals[name][0]:.3f}, {intervals[name][1]:.3f}] for {name}" for name, value in report["test_auroc"].items()]
    more = "more than" if control["own"] > control["others"] else "no more than"
    return _paragraph(
        f"The trained model (seed {report['seed']}; `gazebench train --model unet_gaze` writes this same cached checkpoint)",
        f"selects epoch {report['best_epoch']} on dev and reaches a one-vs-rest AUROC of {_join(aurocs, quote=False)}",
        f"on the {n_images} test images (mean {report['test_mean_auroc']:.3f}): the synthetic classes are easy by design",
        "(CHF: enlarged heart and perihilar haze; pneumonia: a focal opacity). Its Grad-CAM maps agree with the gaze",
        f"of their own image {more} with the gaze of the other images (a shuffled control): mean NSS",
        f"{control['own']:.2f} vs. {control['others']:.2f} over the {control['n']} images with a defined value, higher for",
        f"{control['higher']:.0%} of them, Wilcoxon signed-rank p = {control['p']:.2g} (`tests/test_trained_unet_gaze.py`",
        "checks this on every CI run).",
    )


def leaderboard_excerpt(board: pd.DataFrame, board_md: str) -> str:
    """What the leaderboard holds, and its rows for EXCERPT_METRICS exactly as leaderboard.md prints them."""
    _require(board, EXCERPT_METRICS)
    lines = [line for line in board_md.splitlines() if line.startswith("|")]
    metric_column = [cell.strip() for cell in lines[0].strip("|").split("|")].index("metric")
    rows = [line for line in lines[2:] if line.strip("|").split("|")[metric_column].split()[0] in EXCERPT_METRICS]
    roles = board.drop_duplicates("method")["role"].value_counts()
    maps = [f"{roles[role]} {role}{'s' if roles[role] > 1 else ''}" for role in ("method", "floor", "ceiling") if role in roles]
    lead = _paragraph(
        f"The leaderboard it prints (`{DEFAULT_RUN.relative_to(ROOT)}/leaderboard.md`; {board['metric'].nunique()} metrics for",
        f"{_join(maps, quote=False)}), this excerpt shows {_count(len(EXCERPT_METRICS))} of them:",
    )
    return lead + "\n```\n" + "\n".join(lines[:2] + rows) + "\n```\n"


def what_it_says(board: pd.DataFrame, regions: pd.DataFrame) -> str:
    """The findings, each sentence derived from the leaderboard's marks and the region agreement."""
    _require(board, ("auc_shuffled", "hit_rate", *PLAIN_METRICS))
    methods = board[board["role"] == "method"]
    shuffled = methods[methods["metric"] == "auc_shuffled"].sort_values("mean", ascending=False)
    plain_wins = methods[methods["metric"].isin(PLAIN_METRICS) & (methods["vs_centre_bias"] == "better")]
    if plain_wins.empty:
        plain = f"no method beats the centre-bias map significantly on {_join(PLAIN_METRICS, last='or')}"
    else:
        plain = "; ".join(f"on `{metric}`, {_join(rows['method'])} beat{'s' if len(rows) == 1 else ''} the centre-bias map significantly" for metric, rows in plain_wins.groupby("metric", sort=False))
    iou = methods[methods["metric"] == "iou"].sort_values("mean", ascending=False)
    iou_top = iou[iou["vs_best"].isin(["best", "ns"])]
    iou_rest = iou.drop(iou_top.index)
    iou_best = _join([f"`{method}` ({mean:.2f})" for method, mean in zip(iou_top["method"], iou_top["mean"])], quote=False)
    if len(iou_top) > 1:
        iou_best += " (not significantly different from each other)"
    agreement = regions[(regions["target"] == "all") & regions["agreement"].notna()].sort_values("agreement", ascending=False)
    region = agreement.iloc[0]
    return _paragraph(
        "What it says: on the shuffled AUC (the map at *this* image's fixations against the other images'",
        f"fixations, which removes centre bias), {_versus_floor(shuffled, 'the centre-bias floor')} (the highest,",
        f"`{shuffled.iloc[0]['method']}`, {shuffled.iloc[0]['mean']:.3f}; centre bias {_floor_mean(board, 'auc_shuffled'):.3f}).",
        f"On the plain agreement metrics (CC, NSS, AUC-Judd; IoU against the lesion mask), {plain}.",
        "The simulated readings start from a centre bias by construction, which is why the floors and the",
        "`_cb` / shuffled variants are reported.",
        f"Pointing game (`hit_rate`: the map's maximum inside the lesion mask; centre bias {_floor_mean(board, 'hit_rate'):.2f}):",
        f"{_by_mark(methods[methods['metric'] == 'hit_rate'])}.",
        f"Overlap with the mask (`iou`; centre bias {_floor_mean(board, 'iou'):.2f}) is highest for {iou_best}"
        + (f", against {_range(iou_rest['mean'])} for the others." if len(iou_rest) else "."),
        "Region analysis (`regions.md`, Kim et al.): a method's most salient region agrees with the gaze's for",
        f"{_range(agreement['agreement'], percent=True)} of its maps (the highest, `{region['method']}`, {region['agreement']:.1%},",
        f"against {region['chance']:.1%} expected by chance).",
    )


def _paragraph(*parts: str) -> str:
    """The parts joined by spaces and wrapped at 100 characters or a little less: never inside a
    number range, never with a line that Markdown would read as a list item or a heading."""
    for width in range(100, 80, -1):
        lines = textwrap.wrap(" ".join(parts), width=width, break_on_hyphens=False, break_long_words=False)
        if not any(BLOCK_START.match(line) for line in lines[1:]):
            break
    return "\n".join(lines) + "\n"


def _versus_floor(rows: pd.DataFrame, floor: str) -> str:
    """'no method beats FLOOR significantly; a and b are ns against it; c is significantly worse' from the marks."""
    groups = {mark: list(rows.loc[rows["vs_centre_bias"] == mark, "method"]) for mark in ("better", "ns", "worse")}
    parts = [f"{_join(groups['better'])} beat{'s' if len(groups['better']) == 1 else ''} {floor} significantly" if groups["better"] else f"no method beats {floor} significantly"]
    if groups["ns"]:
        subject = f"all {_count(len(rows))} are" if len(groups["ns"]) == len(rows) else f"{_join(groups['ns'])} {'is' if len(groups['ns']) == 1 else 'are'}"
        parts.append(f"{subject} `ns` against it")
    if groups["worse"]:
        parts.append(f"{_join(groups['worse'])} {'is' if len(groups['worse']) == 1 else 'are'} significantly worse")
    return "; ".join(parts)


def _by_mark(rows: pd.DataFrame) -> str:
    """Methods grouped by their mark against centre bias, each group with its range of means."""
    words = {"better": "significantly better than centre bias", "ns": "`ns` against it", "worse": "significantly worse"}
    groups = [(mark, rows[rows["vs_centre_bias"] == mark].sort_values("mean", ascending=False)) for mark in words]
    return "; ".join(f"{_join(group['method'])} {_range(group['mean'])}, {words[mark]}" for mark, group in groups if len(group))


def _floor_mean(board: pd.DataFrame, metric: str) -> float:
    return float(board.loc[(board["method"] == FLOOR) & (board["metric"] == metric), "mean"].iloc[0])


def _range(values: pd.Series, percent: bool = False) -> str:
    text = (lambda v: f"{v:.1%}") if percent else (lambda v: f"{v:.2f}")
    low, high = text(values.min()), text(values.max())
    return low if low == high else f"{low}-{high}"


def _join(items, quote: bool = True, last: str = "and") -> str:
    items = [f"`{item}`" if quote else str(item) for item in items]
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} {last} {items[-1]}"


def _count(n: int) -> str:
    return NUMBER_WORDS.get(n, str(n))


def _require(board: pd.DataFrame, metrics) -> None:
    missing = [metric for metric in metrics if metric not in set(board["metric"])]
    if missing or FLOOR not in set(board["method"]):
        raise UserError(f"the leaderboard has no {', '.join(missing) or FLOOR} rows: regenerate from a run of `{MAIN_COMMAND}` (every metric, the floors)")


# ---------------------------------------------------------------------- the README


def rewrite(readme: str, blocks: dict[str, str]) -> str:
    """The README with every generated block's body replaced; each block must appear exactly once."""
    names = [match["name"] for match in MARKER.finditer(readme)]
    for name in blocks:
        if names.count(name) != 1:
            raise UserError(f"README.md has {names.count(name)} `<!-- generated: {name} -->` blocks, not 1: restore the marker pair around it")
    unknown = sorted(set(names) - set(blocks))
    if unknown:
        raise UserError(f"README.md has generated blocks this script does not know: {', '.join(unknown)} (known: {', '.join(blocks)})")
    return MARKER.sub(lambda match: f"<!-- generated: {match['name']} -->\n{blocks[match['name']]}<!-- /generated -->", readme)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="?", type=Path, default=DEFAULT_RUN, help=f"a finished run of `{MAIN_COMMAND}`")
    parser.add_argument("--report", type=Path, help="the model's training report (default: <checkpoint>.report.yaml)")
    parser.add_argument("--readme", type=Path, default=README)
    parser.add_argument("--check", action="store_true", help="write nothing; print a diff and exit 1 when the README differs")
    args = parser.parse_args(argv)
    try:
        if not args.readme.is_file():
            raise UserError(f"no README at {args.readme}: pass --readme PATH")
        current = args.readme.read_text()
        updated = rewrite(current, generated_blocks(args.run_dir, args.report))
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if updated == current:
        print(f"{args.readme}: the generated blocks match {args.run_dir}")
        return 0
    if args.check:
        sys.stdout.writelines(difflib.unified_diff(current.splitlines(True), updated.splitlines(True), f"{args.readme} (now)", f"{args.readme} (from {args.run_dir})"))
        print(f"\n{args.readme} differs from {args.run_dir}: run `python reports/readme_numbers.py {args.run_dir}` to rewrite it")
        return 1
    args.readme.write_text(updated)
    print(f"{args.readme}: generated blocks rewritten from {args.run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
