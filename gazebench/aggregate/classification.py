"""How well a run's model classifies the images it explained: one-vs-rest AUROC per class with intervals.

Read from the run's stored predictions (``predictions/*.parquet``: every scored image's probability
of every output and its label), so a table of a study's AUROC needs no second pass over the data.
Intervals are the patient bootstrap of ``gazebench.auroc`` (the draws of every other interval);
the mean over classes gets its interval from the same replicates (the mean of each replicate's
classes defined at the point estimate; a replicate where one of them is undefined is left out).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gazebench.auroc import auroc_ovr, auroc_replicates, interval_of
from gazebench.bootstrap import BOOTSTRAP

MEAN = "mean"  # the ``class`` of the row holding the mean over classes
AUROC_COLUMNS = ["class", "n", "n_positive", "auroc", "ci_low", "ci_high"]


def auroc_table(predictions: pd.DataFrame, n_boot: int = BOOTSTRAP["replicates"], seed: int = 0, level: float = BOOTSTRAP["level"]) -> pd.DataFrame:
    """One row per class of the model (in its output order) and a last ``mean`` row: AUROC_COLUMNS.

    ``predictions`` holds one model's PREDICTION_SCHEMA rows.  ``n`` counts the images with a known
    label for the class (NaN labels are left out), ``n_positive`` the positives among them.  A class
    without positives or negatives has a NaN AUROC and is left out of the mean.
    """
    classes = list(dict.fromkeys(predictions["class"]))
    wide = predictions.pivot(index="image_id", columns="class", values=["prob", "label"])  # one row per image
    probs, labels = wide["prob"][classes].to_numpy(float), wide["label"][classes].to_numpy(float)
    patients = predictions.groupby("image_id")["patient_id"].first().reindex(wide.index).astype(str).tolist()
    point = auroc_ovr(probs, labels).numpy()
    replicates = auroc_replicates(probs, labels, patients, n_boot, seed) if n_boot else np.full((0, len(classes)), np.nan)
    records = []
    for column, name in enumerate(classes):
        known = ~np.isnan(labels[:, column])
        low, high = interval_of(replicates[:, column], level) if n_boot else (np.nan, np.nan)
        records.append({"class": name, "n": int(known.sum()), "n_positive": int((labels[known, column] == 1).sum()), "auroc": float(point[column]), "ci_low": low, "ci_high": high})
    defined = ~np.isnan(point)
    low, high = interval_of(replicates[:, defined].mean(axis=1), level) if n_boot and defined.any() else (np.nan, np.nan)
    mean = float(point[defined].mean()) if defined.any() else np.nan
    records.append({"class": MEAN, "n": len(probs), "n_positive": np.nan, "auroc": mean, "ci_low": low, "ci_high": high})
    return pd.DataFrame.from_records(records, columns=AUROC_COLUMNS)
