"""Karargyris et al. 2021 (Sci Data 8, 92): the gaze U-Net's per-class and mean AUROC against its baseline.

One table: one row per class and the mean, with each model's one-vs-rest AUROC and patient-bootstrap
95% CI from its run's stored predictions, the paper's number (their logs, test split) beside each.
"""

from __future__ import annotations

from gazebench.bootstrap import BOOTSTRAP
from gazebench.report.papers.base import AurocColumn, PaperTable, RunInfo, auroc_side_by_side, reported, runs_of

NAME = "karargyris2021"
MODELS = {"effnet_baseline": "baseline (EfficientNet)", "unet_gaze": "U-Net + gaze"}


def tables(runs: list[RunInfo], n_boot: int = BOOTSTRAP["replicates"], seed: int = 0) -> list[PaperTable]:
    paper = reported(NAME)
    columns = [AurocColumn(label, runs_of(NAME, runs, model, f"gazebench run --model {model} --methods gradcam --out DIR"), paper["auroc"][model]) for model, label in MODELS.items()]
    notes = [f"Paper: {paper['title']}; one-vs-rest AUROC from their logs, test split ({paper['split']})."]
    return [auroc_side_by_side(NAME, "Karargyris et al. 2021: AUROC of the U-Net with gaze against its baseline", columns, n_boot, seed, notes)]
