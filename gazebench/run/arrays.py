"""``gazebench score``: gazebench's metrics on maps made by any other tool (the CSV: ``report/arrays.py``).

Inputs are NumPy ``.npy`` files: saliency maps and gaze densities ``[N, H, W]``, optionally
fixations (a binary or count map per image, ``[N, H, W]``), localisation masks (``[N, H, W]``,
0/1) and a centre-bias map ``[H, W]`` (default: a centred Gaussian, sigma a quarter of the
smaller side).  Shuffled-AUC negatives are the fixations of the other maps of the file.  The
output is one CSV row per map, one column per metric; NaN marks an undefined value (degenerate
map, no fixations, empty mask), counted in the summary.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from gazebench.errors import UserError
from gazebench.metrics.base import GazeTargets, feedable_metrics
from gazebench.metrics.centre_bias import gaussian_centre_bias
from gazebench.metrics.scoring import score_maps
from gazebench.registry import METRICS

# which option feeds each GazeTargets field (for error messages)
OPTION_OF_NEED = {"density": "--gaze G.npy", "fixations": "--fixations F.npy", "negatives": "--fixations F.npy (with at least 2 maps)", "mask": "--masks M.npy", "centre_bias": "--centre-bias B.npy"}


@dataclass
class ScoreInputs:
    saliency: Path
    gaze: Path
    fixations: Path | None = None
    masks: Path | None = None
    centre_bias: Path | None = None


def load_array(path: Path, option: str) -> np.ndarray:
    """A .npy file as an array, or a one-line UserError naming the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{option} {path}: no such file")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as error:
        raise UserError(f"{option} {path} is not a readable NumPy .npy array ({error}); save it with numpy.save") from None


def check_stack(array: np.ndarray, option: str, path: Path, shape: tuple | None = None) -> None:
    if array.ndim != 3:
        raise UserError(f"{option} {path} has shape {array.shape}; expected [N, H, W] (one map per image)")
    if shape is not None and array.shape != shape:
        raise UserError(f"{option} {path} has shape {array.shape} but --saliency has {shape}; they must match")
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise UserError(f"{option} {path} holds {array.dtype} values; expected numbers")


def check_non_negative(array: np.ndarray, option: str, path: Path, what: str) -> None:
    values = array.astype(np.float64, copy=False)
    bad = ~np.isfinite(values) | (values < 0)
    if bad.any():
        index = np.unravel_index(int(np.argmax(bad)), array.shape)
        raise UserError(f"{option} {path} holds {int(bad.sum())} negative or non-finite value(s) (first at {tuple(int(i) for i in index)}); {what}")


def read_inputs(inputs: ScoreInputs) -> tuple[torch.Tensor, GazeTargets]:
    """Load and validate every file -> (maps, targets); user mistakes are one-line UserErrors."""
    saliency = load_array(inputs.saliency, "--saliency")
    check_stack(saliency, "--saliency", inputs.saliency)
    shape = saliency.shape
    gaze = load_array(inputs.gaze, "--gaze")
    check_stack(gaze, "--gaze", inputs.gaze, shape)
    check_non_negative(gaze, "--gaze", inputs.gaze, "a gaze density must be finite and >= 0")
    targets = GazeTargets(density=torch.from_numpy(gaze.astype(np.float32)))
    if inputs.fixations is not None:
        fixations = load_array(inputs.fixations, "--fixations")
        check_stack(fixations, "--fixations", inputs.fixations, shape)
        check_non_negative(fixations, "--fixations", inputs.fixations, "fixations are a binary (or count) map per image")
        targets.fixations = torch.from_numpy(fixations.astype(np.float32))
        if shape[0] > 1:
            targets.negatives = targets.fixations.sum(dim=0, keepdim=True) - targets.fixations
    if inputs.masks is not None:
        masks = load_array(inputs.masks, "--masks")
        check_stack(masks, "--masks", inputs.masks, shape)
        if not np.isin(masks, (0, 1)).all():
            raise UserError(f"--masks {inputs.masks} must hold only 0/1 (or bool) values")
        targets.mask = torch.from_numpy(masks.astype(bool))
    targets.centre_bias = read_centre_bias(inputs.centre_bias, shape[1:])
    return torch.from_numpy(saliency.astype(np.float32)), targets


def read_centre_bias(path: Path | None, size: tuple[int, int]) -> torch.Tensor:
    if path is None:
        return gaussian_centre_bias(*size)
    bias = load_array(path, "--centre-bias")
    if bias.shape != tuple(size):
        raise UserError(f"--centre-bias {path} has shape {bias.shape}; expected [H, W] = {tuple(size)}, the maps' size")
    check_non_negative(bias[None], "--centre-bias", path, "a centre-bias map must be finite and >= 0")
    if bias.sum() <= 0:
        raise UserError(f"--centre-bias {path} is all zero; it must have some mass")
    return torch.from_numpy((bias / bias.sum()).astype(np.float32))


def select_metrics(spec: str, available: set[str]) -> dict:
    """``all``: every metric the inputs can feed; named metrics the inputs cannot feed are an error."""
    chosen, unmet = feedable_metrics(METRICS.resolve_list(spec), available)
    for name, missing in unmet.items():
        if spec.strip() != "all":
            raise UserError(f"metric {name} needs {', '.join(missing)}; pass {' and '.join(OPTION_OF_NEED[m] for m in missing)}")
    if not chosen:
        raise UserError("none of the requested metrics can be computed from these inputs; see `gazebench list metrics`")
    return chosen


def score_arrays(inputs: ScoreInputs, metrics_spec: str, device: torch.device) -> pd.DataFrame:
    """Score every map of the input files -> one row per map: ``index`` then one column per metric."""
    maps, targets = read_inputs(inputs)
    metrics = select_metrics(metrics_spec, targets.available())
    moved = GazeTargets(**{name: None if value is None else value.to(device) for name, value in vars(targets).items()})
    values = score_maps(maps.to(device), moved, metrics)
    return pd.DataFrame({"index": np.arange(len(maps))} | {name: values[name].double().cpu().numpy() for name in metrics})
