"""Watanabe et al. 2022 (Front. Radiol. 2:991683): U-Nets trained with heatmap generators against the U-Net baseline.

Two tables:

- ``watanabe2022_auroc``: per-class and mean AUROC with patient-bootstrap 95% CIs of each
  heatmap-generator run (one per experiment set; each is named by its run directory) and of the
  ``unet_gaze`` baseline, the paper's best set beside the first generator run.
- ``watanabe2022_heatmap_agreement``: how well each model's own heatmap (``model_heatmap``) agrees
  with the radiologists' gaze, per metric, with CIs: the paper's claim that the generated masks
  resemble gaze, measured.
"""

from __future__ import annotations

import pandas as pd

from gazebench.aggregate.statistics import cell_statistics, higher_is_better
from gazebench.bootstrap import BOOTSTRAP
from gazebench.report.papers.base import AurocColumn, PaperTable, RunInfo, auroc_side_by_side, interval, missing, reported, runs_of

NAME = "watanabe2022"
GENERATOR = "heatmap_generator"
BASELINE = "unet_gaze"
OWN_HEATMAP = "model_heatmap"
AGREEMENT_METRICS = ("cc", "nss", "kl", "ssim", "auc_judd", "sim")  # those of them the runs hold, in this order


def tables(runs: list[RunInfo], n_boot: int = BOOTSTRAP["replicates"], seed: int = 0) -> list[PaperTable]:
    baseline = runs_of(NAME, runs, BASELINE, f"gazebench run --model {BASELINE} --methods model_heatmap,gradcam --out DIR")
    generators = [run for run in runs if run.model == GENERATOR]
    if not generators:
        raise missing(NAME, f"a run of model {GENERATOR} (one per experiment set)", f"gazebench run --model {GENERATOR} --methods model_heatmap,gradcam --out DIR")
    return [auroc(baseline, generators, n_boot, seed), agreement([*generators, baseline], n_boot, seed)]


def label(run: RunInfo) -> str:
    """A generator run is named by its run directory (one per experiment set), the baseline as such."""
    if run.model != GENERATOR:
        return f"{run.model} baseline"
    return run.model if run.path.name == run.model else f"{run.model} ({run.path.name})"


def auroc(baseline: RunInfo, generators: list[RunInfo], n_boot: int, seed: int) -> PaperTable:
    paper = reported(NAME)
    columns = [AurocColumn(label(run), run, paper["auroc"]["heatmap_generator_best"] if index == 0 else {}) for index, run in enumerate(generators)]
    notes = [f"Paper: {paper['title']}; its best experiment set, beside the first generator run ({paper['note']})."]
    title = "Watanabe et al. 2022: AUROC of the heatmap-generator U-Nets against the U-Net baseline"
    return auroc_side_by_side(NAME, title, [*columns, AurocColumn(label(baseline), baseline)], n_boot, seed, notes, paper_classes=False)


def agreement(runs: list[RunInfo], n_boot: int, seed: int) -> PaperTable:
    with_heatmap = [run for run in runs if OWN_HEATMAP in run.methods]
    if not with_heatmap:
        raise missing(NAME, f"method {OWN_HEATMAP} in the {GENERATOR} runs", f"gazebench run --model {GENERATOR} --methods model_heatmap --out {runs[0].path}")
    metrics = [metric for metric in AGREEMENT_METRICS if any(metric in run.metrics for run in with_heatmap)]
    rows = pd.concat([run.rows.assign(model=label(run)) for run in with_heatmap], ignore_index=True)
    rows = rows[(rows["method"] == OWN_HEATMAP) & rows["metric"].isin(metrics) & (rows["reader"].astype(str) == "all")]
    stats = cell_statistics(rows, ["model", "metric"], n_boot, seed, BOOTSTRAP["level"]).set_index(["model", "metric"])
    header = ["model", *(f"{metric} ({'higher' if higher_is_better(metric) else 'lower'} is better) [95% CI]" for metric in metrics), "n"]
    cells = []
    for run in with_heatmap:
        name = label(run)
        values = [interval(*stats.loc[(name, metric), ["mean", "ci_low", "ci_high"]]) if (name, metric) in stats.index else "-" for metric in metrics]
        cells.append([name, *values, str(int(stats.loc[name, "n"].max()))])
    notes = [
        "Each model's own predicted heatmap (sigmoid of its heatmap head), scored against the merged gaze like a saliency map; the paper claims these masks resemble gaze but gives no number.",
        f"Means with patient-bootstrap {BOOTSTRAP['level']:.0%} CIs ({n_boot} replicates).",
    ]
    without = [label(run) for run in runs if OWN_HEATMAP not in run.methods]
    if without:
        notes.append(f"Not scored (no {OWN_HEATMAP} in the run): {', '.join(without)}.")
    title = "Watanabe et al. 2022: agreement of each model's own heatmap with gaze"
    return PaperTable(f"{NAME}_heatmap_agreement", title, header, cells, stats.reset_index(), notes)
