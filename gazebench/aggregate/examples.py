"""The example images a figure shows: the kept maps of a run's first images, and which of them to show.

A run keeps, for its first images (``run.store.EXAMPLE_IMAGES``), the radiograph and the gaze
density on the scoring grid and every method's map (``maps/``).  ``read_examples`` reads them
back; ``pick_examples`` chooses the best, median and worst of those images by their mean score
over the methods, so a figure shows the range rather than a favourable case.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from gazebench.aggregate.statistics import higher_is_better
from gazebench.protocol import REFERENCE_MAPS
from gazebench.run.store import RunStore

PICK_METRICS = ("ssim", "cc", "nss", "kl")  # the first the run holds ranks the examples


@dataclass
class Examples:
    """Kept maps on the scoring grid: ``radiograph``/``gaze`` per image id, ``maps[(method, image_id, target)]``."""

    radiograph: dict[str, np.ndarray]
    gaze: dict[str, np.ndarray]
    maps: dict[tuple[str, str, str], np.ndarray]
    methods: list[str]

    @property
    def empty(self) -> bool:
        return not self.maps


@dataclass(frozen=True)
class Pick:
    label: str  # "best", "median", "worst" (by ``metric``)
    image_id: str
    target: str
    metric: str
    score: float  # the image's mean score over the methods


def read_examples(run_dir) -> Examples:
    """The run's kept maps (empty when it kept none: a run made before maps were kept)."""
    methods, inputs = RunStore(run_dir).read_maps()
    by_image = {name: {image_id: stored for part in parts for image_id, stored in zip(part["image_ids"], part["maps"])} for name, parts in inputs.items()}
    maps = {
        (method, image_id, target): stored
        for method, parts in methods.items()
        for part in parts
        for image_id, target, stored in zip(part["image_ids"], part["targets"], part["maps"])
    }
    return Examples(by_image.get("radiograph", {}), by_image.get("gaze", {}), maps, list(methods))


def pick_examples(rows: pd.DataFrame, examples: Examples, labels: tuple[str, ...] = ("best", "median", "worst")) -> list[Pick]:
    """The best, median and worst kept (image, target) by the mean over methods of the first metric of PICK_METRICS the run holds."""
    metric = next((name for name in PICK_METRICS if name in set(rows["metric"])), None)
    kept = {(image_id, target) for _, image_id, target in examples.maps}
    if metric is None or not kept:
        return []
    scored = rows[(rows["metric"] == metric) & ~rows["method"].isin(list(REFERENCE_MAPS)) & (rows["reader"].astype(str) == "all")]
    scored = scored[[key in kept for key in zip(scored["image_id"], scored["target"])]]
    means = scored.groupby(["image_id", "target"])["value"].mean().dropna().sort_values(ascending=not higher_is_better(metric), kind="stable")
    if means.empty:
        return []
    positions = {"best": 0, "median": (len(means) - 1) // 2, "worst": len(means) - 1}
    picks, seen = [], set()
    for label in labels:
        (image_id, target), score = means.index[positions[label]], means.iloc[positions[label]]
        if (image_id, target) not in seen:
            seen.add((image_id, target))
            picks.append(Pick(label, image_id, target, metric, float(score)))
    return picks
