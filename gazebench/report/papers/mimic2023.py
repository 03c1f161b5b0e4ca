"""Learning How to MIMIC (WACV 2023): the explanation-guided model's agreement with gaze against the plain model's.

One table: for every method both runs hold, KL divergence to gaze and NSS of the plain model and of
``mimic_guided`` (means with patient-bootstrap 95% CIs, on the images both runs scored, against the
merged gaze), and the relative change (guided - plain) / plain beside the paper's -90% (KL) and
+216% (NSS).  The paper's numbers come from its abstract (unverified in reported.yaml) and were
measured on MIMIC-CXR-EGD.
"""

from __future__ import annotations

import pandas as pd

from gazebench.aggregate.runs import combine_runs
from gazebench.aggregate.statistics import cell_statistics, with_gaze_scope
from gazebench.bootstrap import BOOTSTRAP
from gazebench.errors import UserError
from gazebench.protocol import REFERENCE_MAPS
from gazebench.report.papers.base import PaperTable, RunInfo, interval, missing, percent, reported

NAME = "mimic2023"
GUIDED = "mimic_guided"
METRICS = ("kl", "nss")


def tables(runs: list[RunInfo], n_boot: int = BOOTSTRAP["replicates"], seed: int = 0) -> list[PaperTable]:
    guided = [run for run in runs if run.model == GUIDED]
    plain = [run for run in runs if run.model != GUIDED]
    if not guided:
        raise missing(NAME, f"a run of model {GUIDED}", f"gazebench run --model {GUIDED} --methods gradcam --out DIR")
    if not plain:
        raise missing(NAME, f"a run of the plain model {GUIDED} is compared with", "gazebench run --model densenet121 --methods gradcam --out DIR")
    if len(guided) > 1 or len(plain) > 1:
        raise UserError(f"tables --paper {NAME} compares one {GUIDED} run with one plain-model run; got {len(guided)} and {len(plain)} ({', '.join(str(run.path) for run in runs)})")
    guided_run, plain_run = guided[0], plain[0]
    for metric in METRICS:
        for run in (guided_run, plain_run):
            if metric not in run.metrics:
                raise missing(NAME, f"metric {metric} in {run.path}", f"gazebench run --model {run.model} --metrics kl,nss --out {run.path} (a run grows: only the missing metric is computed)")
    methods = sorted(set(guided_run.methods) & set(plain_run.methods) - set(REFERENCE_MAPS))
    if not methods:
        held = f"{guided_run.path}: {', '.join(guided_run.methods)}; {plain_run.path}: {', '.join(plain_run.methods)}"
        raise missing(NAME, f"a method both runs hold ({held})", f"gazebench run --model {GUIDED} --methods gradcam --out DIR")
    combined = combine_runs([plain_run.path, guided_run.path]).rows
    rows = with_gaze_scope(combined[combined["method"].isin(methods) & combined["metric"].isin(METRICS) & (combined["reader"].astype(str) == "all")])
    stats = cell_statistics(rows, ["method", "metric", "model"], n_boot, seed, BOOTSTRAP["level"]).set_index(["method", "metric", "model"])
    paper = reported(NAME)["gaze_agreement_change_vs_plain_model"]
    records, cells = [], []
    for method in methods:
        row = [method]
        record: dict = {"method": method, "plain_model": plain_run.model, "guided_model": guided_run.model}
        for metric in METRICS:
            before, after = stats.loc[(method, metric, plain_run.model)], stats.loc[(method, metric, guided_run.model)]
            change = (after["mean"] - before["mean"]) / abs(before["mean"]) if before["mean"] else float("nan")
            row += [interval(before["mean"], before["ci_low"], before["ci_high"]), interval(after["mean"], after["ci_low"], after["ci_high"]), percent(change), percent(paper[metric])]
            record |= {
                f"{metric}_plain": before["mean"], f"{metric}_plain_ci_low": before["ci_low"], f"{metric}_plain_ci_high": before["ci_high"],
                f"{metric}_guided": after["mean"], f"{metric}_guided_ci_low": after["ci_low"], f"{metric}_guided_ci_high": after["ci_high"],
                f"{metric}_change": change, f"{metric}_change_paper": paper[metric],
            }  # fmt: skip
        n = int(min(stats.loc[(method, metric, model), "n"] for metric in METRICS for model in (plain_run.model, guided_run.model)))
        cells.append([*row, str(n)])
        records.append(record | {"n": n})
    columns = ["method"]
    for label in ("KL", "NSS"):
        columns += [f"{label} {plain_run.model} [95% CI]", f"{label} {GUIDED} [95% CI]", f"{label} change", f"{label} change (paper)"]
    columns.append("n")
    notes = [
        "Paper (Learning How to MIMIC, WACV 2023, MIMIC-CXR-EGD; from its abstract, unverified): KL to gaze -90%, NSS +216% against the plain model.",
        "Change: (guided - plain) / |plain| of the means; KL lower is better, NSS higher is better.",
        f"Means with patient-bootstrap {BOOTSTRAP['level']:.0%} CIs ({n_boot} replicates) on the images both runs scored, against the merged gaze.",
    ]
    title = "Learning How to MIMIC: agreement with gaze, explanation-guided model against the plain model"
    return [PaperTable(f"{NAME}_gaze_agreement", title, columns, cells, pd.DataFrame(records), notes)]
