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
from gazebench.errors import UserError
from gazebench.protocol import REFERENCE_MAPS
from gazebench.run.store import EXAMPLE_IMAGES, RunStore

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


def pick_examples(rows: pd.DataFrame, examples: Examples, labels: tuple[str, ...] = ("best", "median", "worst"), image_ids: list[str] | None = None) -> list[Pick]:
    """The best, median and worst kept (image, target) by the mean over methods of the first metric of PICK_METRICS the run holds.

    ``image_ids``: these images instead (each of its kept targets, labelled ``chosen``); an image
    whose maps the run did not keep is refused in one line that names the kept ones.
    """
    metric = next((name for name in PICK_METRICS if name in set(rows["metric"])), None)
    kept = {(image_id, target) for _, image_id, target in examples.maps}
    if metric is None or not kept:
        if image_ids:
            raise UserError(f"the run kept no maps to show images {', '.join(image_ids)} (it was made before runs kept maps: run it again into a new --out)")
        return []
    scored = rows[(rows["metric"] == metric) & ~rows["method"].isin(list(REFERENCE_MAPS)) & (rows["reader"].astype(str) == "all")]
    scored = scored[[key in kept for key in zip(scored["image_id"], scored["target"])]]
    means = scored.groupby(["image_id", "target"])["value"].mean()
    if image_ids:
        return chosen_examples(image_ids, sorted(kept), means, metric)
    means = means.dropna().sort_values(ascending=not higher_is_better(metric), kind="stable")
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


def chosen_examples(image_ids: list[str], kept: list[tuple[str, str]], means: pd.Series, metric: str) -> list[Pick]:
    """A ``chosen`` pick per kept target of each named image, in the order given."""
    kept_images = list(dict.fromkeys(image_id for image_id, _ in kept))
    picks = []
    for image_id in image_ids:
        targets = [target for kept_id, target in kept if kept_id == image_id]
        if not targets:
            shown = ", ".join(kept_images[:5]) + (", ..." if len(kept_images) > 5 else "")
            raise UserError(f"image {image_id} has no kept maps: a run keeps the maps of its first {EXAMPLE_IMAGES} images ({len(kept_images)} here: {shown}); choose one of them")
        picks += [Pick("chosen", image_id, target, metric, float(means.get((image_id, target), float("nan")))) for target in targets]
    return picks
