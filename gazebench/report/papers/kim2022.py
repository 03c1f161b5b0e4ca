"""Kim, Zhou & Lipton (poster): DenseNet-121 and DenseNet-Aug, six Captum methods against gaze.

Three tables, laid out as in the poster:

- ``kim2022_auroc``: per-label AUROC with patient-bootstrap 95% CIs, DenseNet and DenseNet-Aug side
  by side, the poster's DenseNet numbers beside ours (its CheXpert labels; a label the data lack
  says so).
- ``kim2022_ssim``: mean SSIM between each map and the gaze, method (rows SL GC DL LC GS NT) x
  class, split into correct and incorrect predictions, for both models, with the per-class n.
- ``kim2022_regions``: each class's distribution over most salient regions, gaze first, then each
  method (``aggregate.regions``: a region's share of the map z-scored against the other maps).
"""

from __future__ import annotations

import pandas as pd

from gazebench.aggregate.regions import CLASS, GAZE_METHOD, analyse_regions
from gazebench.aggregate.regions import KEY_COLUMNS as REGION_KEYS
from gazebench.aggregate.runs import run_region_shares
from gazebench.aggregate.statistics import cell_statistics
from gazebench.bootstrap import BOOTSTRAP
from gazebench.report.papers.base import AurocColumn, PaperTable, RunInfo, auroc_side_by_side, interval, missing, reported, runs_of

NAME = "kim2022"
REPORTED = "kim_zhou_lipton"  # its key in reported.yaml
MODELS = {"densenet121": "DenseNet", "densenet_aug": "DenseNet-Aug"}
METHODS = {"saliency": "SL", "gradcam": "GC", "deeplift": "DL", "conductance": "LC", "gradshap": "GS", "smoothgrad": "NT"}  # the poster's rows, in order
OUTCOMES = {True: "correct", False: "incorrect"}


def make(model: str) -> str:
    return f"gazebench run --model {model} --methods kim2022 --out DIR"


def tables(runs: list[RunInfo], n_boot: int = BOOTSTRAP["replicates"], seed: int = 0) -> list[PaperTable]:
    chosen = {model: runs_of(NAME, runs, model, make(model)) for model in MODELS}
    for model, run in chosen.items():
        lacking = [method for method in METHODS if method not in run.methods]
        if lacking:
            raise missing(NAME, f"methods {', '.join(lacking)} in {run.path}", f"{make(model).replace('DIR', str(run.path))} (a run grows: only the missing methods are computed)")
        if "ssim" not in run.metrics:
            raise missing(NAME, f"metric ssim in {run.path}", f"gazebench run --model {model} --methods kim2022 --metrics ssim --out {run.path}")
    return [auroc(chosen, n_boot, seed), ssim(chosen, n_boot, seed), regions(chosen)]


def auroc(chosen: dict[str, RunInfo], n_boot: int, seed: int) -> PaperTable:
    paper = reported(REPORTED)
    columns = [AurocColumn(label, chosen[model], paper["auroc"].get(model, {})) for model, label in MODELS.items()]
    notes = [f"Paper: {paper['title']}, {paper['dataset']}; it reports DenseNet's AUROC for these labels only (unverified: from the poster)."]
    return auroc_side_by_side(NAME, "Kim, Zhou & Lipton: per-label AUROC of DenseNet and DenseNet-Aug", columns, n_boot, seed, notes)


def ssim(chosen: dict[str, RunInfo], n_boot: int, seed: int) -> PaperTable:
    rows = pd.concat([run.rows for run in chosen.values()], ignore_index=True)
    rows = rows[rows["method"].isin(METHODS) & (rows["metric"] == "ssim") & (rows["reader"].astype(str) == "all")]
    stats = cell_statistics(rows, ["model", "method", "target", "correct"], n_boot, seed, BOOTSTRAP["level"])
    classes = list(dict.fromkeys(rows.sort_values("target")["target"]))
    images = rows.drop_duplicates(["model", "image_id", "target"])
    counts = images.groupby(["model", "target", "correct"]).size()
    class_n = images[images["model"] == next(iter(chosen))].groupby("target").size()
    header = ["model", "method"] + [f"{cls} (n={int(class_n.get(cls, 0))}) {outcome}" for cls in classes for outcome in OUTCOMES.values()]
    keyed = stats.set_index(["model", "method", "target", "correct"])
    cells = []
    for model, label in MODELS.items():
        for method, short in METHODS.items():
            row = [label, short]
            for cls in classes:
                for outcome in OUTCOMES:
                    key = (model, method, cls, outcome)
                    row.append(interval(*keyed.loc[key, ["mean", "ci_low", "ci_high"]]) if key in keyed.index else "-")
            cells.append(row)
        cells.append([label, "n"] + [str(int(counts.get((model, cls, outcome), 0))) for cls in classes for outcome in OUTCOMES])
    paper = reported(REPORTED)["ssim_table"]
    notes = [
        f"Poster: mean SSIM per class and correct/incorrect prediction, values between {paper['value_range'][0]} and {paper['value_range'][1]}; no per-cell values; its classes and n: "
        + ", ".join(f"{cls} {n}" for cls, n in paper["class_n"].items()) + ".",
        "Rows: SL saliency, GC Grad-CAM, DL DeepLift, LC layer conductance, GS GradientSHAP, NT SmoothGrad; the n rows count the images of each cell.",
        f"Ours: mean SSIM of each map with the merged gaze, on the class each map explains, with patient-bootstrap {BOOTSTRAP['level']:.0%} CIs ({n_boot} replicates); '-': no image.",
    ]
    data = stats.assign(method=stats["method"].map(METHODS), model=stats["model"].map(MODELS))
    return PaperTable(f"{NAME}_ssim", "Kim, Zhou & Lipton: mean SSIM with gaze by class and correct/incorrect prediction", header, cells, data, notes)


def regions(chosen: dict[str, RunInfo]) -> PaperTable:
    shares = pd.concat([run_region_shares(run.path) for run in chosen.values()], ignore_index=True)
    if shares.empty:
        raise missing(NAME, "region shares (data with anatomical region masks: EGD, or the embedded data)", make("densenet121") + " --data synth")
    shares = shares[shares["method"].isin([GAZE_METHOD, *METHODS])]
    names = [column for column in shares.columns if column not in REGION_KEYS]
    distribution = analyse_regions(shares, names).class_distribution
    order = {GAZE_METHOD: -1} | {method: index for index, method in enumerate(METHODS)}
    fractions = distribution.set_index([*CLASS, "region"])["fraction"].unstack("region").reindex(columns=names)
    counts = distribution.groupby(CLASS, sort=False)["n_defined"].first()
    table = fractions.join(counts).reset_index()
    table = table.sort_values(["model", "method", "target"], key=lambda column: column.map(order) if column.name == "method" else column, kind="stable")
    cells = [
        [MODELS.get(row["model"], row["model"]), "gaze" if row["method"] == GAZE_METHOD else METHODS[row["method"]], str(row["target"])]
        + [f"{100 * row[name]:.0f}%" if pd.notna(row[name]) else "-" for name in names] + [str(int(row["n_defined"]))]
        for _, row in table.iterrows()
    ]  # fmt: skip
    notes = ["Each map's most salient region: the region whose share of the map's mass has the highest z-score among the maps of the same model and method (gaze: the gaze densities)."]
    title = "Kim, Zhou & Lipton: distribution over most salient regions per class"
    return PaperTable(f"{NAME}_regions", title, ["model", "map", "class", *names, "n"], cells, distribution, notes)
