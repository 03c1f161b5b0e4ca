"""SHAMSUL (Alam et al., Nordic Machine Intelligence 2023): localisation of LIME, SHAP, Grad-CAM and LRP.

One table: Otsu IoU and hit rate (the CheXlocalize protocol, gazebench's ``iou`` and ``hit_rate``
metrics against the data's localisation masks) per model, method and class, and over all classes,
each a mean with its patient-bootstrap 95% CI and the number of images.  SHAMSUL reports no per-cell
numbers, only that Grad-CAM localised best; the table's notes set that finding beside which method
has the highest mean IoU here.  SHAP is Kernel SHAP on SLIC superpixels (``kernelshap``).
"""

from __future__ import annotations

import pandas as pd

from gazebench.aggregate.runs import combine_runs
from gazebench.aggregate.statistics import cell_statistics, with_gaze_scope
from gazebench.bootstrap import BOOTSTRAP
from gazebench.report.papers.base import PaperTable, RunInfo, interval, missing, reported

NAME = "shamsul2023"
METHODS = {"lime": "LIME", "kernelshap": "SHAP (Kernel SHAP)", "gradcam": "Grad-CAM", "lrp": "LRP"}
METRICS = {"iou": "IoU (Otsu) [95% CI]", "hit_rate": "hit rate [95% CI]"}
ALL_CLASSES = "all classes"
MAKE = "gazebench run --model densenet121 --methods shamsul2023 --data synth --out DIR (data with localisation masks)"


def tables(runs: list[RunInfo], n_boot: int = BOOTSTRAP["replicates"], seed: int = 0) -> list[PaperTable]:
    held_methods = {method for run in runs for method in run.methods}
    for method in METHODS:
        if method not in held_methods:
            raise missing(NAME, f"method {method} in one of the runs ({', '.join(str(run.path) for run in runs)} have {', '.join(sorted(held_methods))})", MAKE)
    held_metrics = {metric for run in runs for metric in run.metrics}
    for metric in METRICS:
        if metric not in held_metrics:
            raise missing(NAME, f"metric {metric}, which needs localisation masks (lesion masks or the embedded data's evidence); no run holds it", MAKE)
    rows = combine_runs([run.path for run in runs]).rows if len(runs) > 1 else runs[0].rows
    rows = with_gaze_scope(rows[rows["method"].isin(METHODS) & rows["metric"].isin(METRICS)])
    per_class = cell_statistics(rows, ["model", "method", "metric", "target"], n_boot, seed, BOOTSTRAP["level"])
    maskless = sorted(target for target, cell in per_class.groupby("target") if (cell["n"] == 0).all())
    per_class = per_class[~per_class["target"].isin(maskless)]
    overall = cell_statistics(rows, ["model", "method", "metric"], n_boot, seed, BOOTSTRAP["level"]).assign(target=ALL_CLASSES)
    data = pd.concat([per_class, overall], ignore_index=True)
    data["method_order"] = data["method"].map(list(METHODS).index)
    data["class_order"] = (data["target"] == ALL_CLASSES).astype(int)
    data = data.sort_values(["model", "method_order", "class_order", "target", "metric"], kind="stable").drop(columns=["method_order", "class_order"]).reset_index(drop=True)
    cells = []
    for (model, method, target), cell in data.groupby(["model", "method", "target"], sort=False):
        by_metric = cell.set_index("metric")
        values = [interval(*by_metric.loc[metric, ["mean", "ci_low", "ci_high"]]) if metric in by_metric.index else "-" for metric in METRICS]
        cells.append([model, METHODS[method], target, *values, str(int(by_metric["n"].max()))])
    best = overall[overall["metric"] == "iou"].sort_values("mean", ascending=False, kind="stable").iloc[0]
    paper = reported(NAME)
    notes = [
        f"Paper (Alam et al. 2023, {paper['dataset']}, {paper['protocol']}): {paper['finding']}; no per-cell values reported.",
        f"Here: the highest mean IoU over all classes is {METHODS[best['method']]}'s on model {best['model']} ({best['mean']:.3f}).",
        f"Means with patient-bootstrap {BOOTSTRAP['level']:.0%} CIs ({n_boot} replicates); n: images with a mask for the class.",
    ]
    if maskless:
        notes.append(f"Left out: {', '.join(maskless)} (no image of the class has a localisation mask).")
    columns = ["model", "method", "class", *METRICS.values(), "n"]
    return [PaperTable(f"{NAME}_localisation", "SHAMSUL: localisation of LIME, SHAP, Grad-CAM and LRP (Otsu IoU and hit rate)", columns, cells, data, notes)]
