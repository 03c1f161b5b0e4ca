"""``gazebench score``: gazebench's metrics on maps made by any other tool (the CSV: ``report/arrays.py``).

Inputs are NumPy ``.npy`` files: saliency maps and gaze densities ``[N, H, W]``, optionally
fixations (a binary or count map per image, ``[N, H, W]``), localisation masks (``[N, H, W]``,
0/1) and a centre-bias map ``[H, W]`` (default: a centred Gaussian, sigma a quarter of the
smaller side).  Shuffled-AUC negatives are the fixations of the other maps of the file.  The
output is one CSV row per map, one column per metric; NaN marks an undefined value (degenerate
map, no fixations, empty mask), counted in the summary.

Arrays are scored at their own precision: float64 stays float64, float32 (and float16, exactly)
float32, bool and integer arrays become float64 (everything float32 on ``mps``, which has no
float64).  Only arrays of real numbers are read (bool, integer, float of at most 64 bits),
through the ``.npy`` header first: anything else -- not a ``.npy`` file, truncated, complex,
strings, Python objects (never unpickled) -- is refused with one line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from gazebench.errors import UserError
from gazebench.metrics.base import GazeTargets, Metric, feedable_metrics
from gazebench.metrics.centre_bias import gaussian_centre_bias
from gazebench.metrics.ops import working_dtype
from gazebench.metrics.scoring import score_maps
from gazebench.metrics.ssim import SSIM, UNIFORM_WINDOW, gaussian_window
from gazebench.registry import METRICS

# which option feeds each GazeTargets field (for error messages)
OPTION_OF_NEED = {"density": "--gaze G.npy", "fixations": "--fixations F.npy", "negatives": "--fixations F.npy (with at least 2 maps)", "mask": "--masks M.npy", "centre_bias": "--centre-bias B.npy"}
NPY_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}  # what numpy.save writes for real arrays


@dataclass
class ScoreInputs:
    saliency: Path
    gaze: Path
    fixations: Path | None = None
    masks: Path | None = None
    centre_bias: Path | None = None


def load_array(path: Path, option: str) -> np.ndarray:
    """A .npy file of real numbers as an in-memory array, or a one-line UserError naming the file and the problem.

    The header is read first: a wrong dtype or a truncated file is refused before any data is read.
    """
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{option} {path} is a folder; pass a .npy file")
    if not path.is_file():
        raise UserError(f"{option} {path}: no such file")
    invalid = f"{option} {path} is not a valid .npy file"
    try:
        with path.open("rb") as stream:
            if stream.read(len(np.lib.format.MAGIC_PREFIX)) != np.lib.format.MAGIC_PREFIX:
                raise UserError(f"{invalid} (it does not start with NumPy's .npy header); save one array with numpy.save")
            stream.seek(0)
            read_header = NPY_HEADERS.get(np.lib.format.read_magic(stream))
            if read_header is None:
                raise ValueError("a .npy format version that numpy.save writes only for records")
            shape, _, dtype = read_header(stream)
            data_bytes = path.stat().st_size - stream.tell()
    except (ValueError, TypeError, EOFError) as error:  # numpy's messages for a broken header
        raise UserError(f"{invalid} ({one_line(error)}); save the array with numpy.save") from None
    except OSError as error:
        raise UserError(f"{option} {path} cannot be read ({one_line(error.strerror or error)})") from None
    check_dtype(dtype, option, path)
    expected = math.prod(shape) * dtype.itemsize
    if data_bytes < expected:
        raise UserError(f"{invalid} (truncated: its header announces {expected} bytes of data, the file holds {data_bytes}); save it again with numpy.save")
    try:
        return np.array(np.load(path, mmap_mode="r", allow_pickle=False))
    except (ValueError, OSError) as error:
        raise UserError(f"{invalid} ({one_line(error)}); save the array with numpy.save") from None


def one_line(error: object) -> str:
    """An error's message on one line (the CLI prints one)."""
    return " ".join(str(error).split())


def check_dtype(dtype: np.dtype, option: str, path: Path) -> None:
    """Real numbers only: bool, integer, or float of at most 64 bits (complex, strings, objects, records: refused)."""
    if dtype.kind in "biu" or (dtype.kind == "f" and dtype.itemsize <= 8):
        return
    kinds = {"c": "complex numbers", "O": "Python objects", "U": "strings", "S": "bytes", "V": "records", "M": "dates", "m": "time spans", "f": "floats wider than float64"}
    raise UserError(f"{option} {path} holds {kinds.get(dtype.kind, 'values')} ({dtype}), not real numbers gazebench can score; save bool, integer or float (at most float64) values with numpy.save")


def as_tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """The array at its own precision (float32 stays float32, bool and integers become float64), as far as the device's working dtype allows."""
    dtype = np.float32 if array.dtype.kind == "f" and array.dtype.itemsize <= 4 else np.float64
    if working_dtype(device) == torch.float32:
        dtype = np.float32
    return torch.from_numpy(np.ascontiguousarray(array, dtype=dtype))


def check_stack(array: np.ndarray, option: str, path: Path, shape: tuple | None = None) -> None:
    if array.ndim != 3:
        raise UserError(f"{option} {path} has shape {array.shape}; expected [N, H, W] (one map per image)")
    if shape is not None and array.shape != shape:
        raise UserError(f"{option} {path} has shape {array.shape} but --saliency has {shape}; they must match")
    if 0 in array.shape:
        raise UserError(f"{option} {path} has shape {array.shape}: no {'maps' if array.shape[0] == 0 else 'pixels'}; expected [N, H, W] with N, H, W >= 1")


def check_non_negative(array: np.ndarray, option: str, path: Path, what: str) -> None:
    bad = ~np.isfinite(array) | (array < 0) if array.dtype.kind == "f" else array < 0
    if bad.any():
        index = np.unravel_index(int(np.argmax(bad)), array.shape)
        raise UserError(f"{option} {path} holds {int(bad.sum())} negative or non-finite value(s) (first at {tuple(int(i) for i in index)}); {what}")


def read_inputs(inputs: ScoreInputs, device: torch.device) -> tuple[torch.Tensor, GazeTargets]:
    """Load and validate every file -> (maps, targets) on the CPU, at the arrays' precision as far as ``device`` allows (``as_tensor``); user mistakes are one-line UserErrors."""
    saliency = load_array(inputs.saliency, "--saliency")
    check_stack(saliency, "--saliency", inputs.saliency)
    shape = saliency.shape
    gaze = load_array(inputs.gaze, "--gaze")
    check_stack(gaze, "--gaze", inputs.gaze, shape)
    check_non_negative(gaze, "--gaze", inputs.gaze, "a gaze density must be finite and >= 0")
    targets = GazeTargets(density=as_tensor(gaze, device))
    if inputs.fixations is not None:
        fixations = load_array(inputs.fixations, "--fixations")
        check_stack(fixations, "--fixations", inputs.fixations, shape)
        check_non_negative(fixations, "--fixations", inputs.fixations, "fixations are a binary (or count) map per image")
        targets.fixations = as_tensor(fixations, device)
        if shape[0] > 1:
            targets.negatives = targets.fixations.sum(dim=0, keepdim=True) - targets.fixations
    if inputs.masks is not None:
        masks = load_array(inputs.masks, "--masks")
        check_stack(masks, "--masks", inputs.masks, shape)
        if not np.isin(masks, (0, 1)).all():
            raise UserError(f"--masks {inputs.masks} must hold only 0/1 (or bool) values")
        targets.mask = torch.from_numpy(masks.astype(bool))
    targets.centre_bias = read_centre_bias(inputs.centre_bias, shape[1:], device)
    return as_tensor(saliency, device), targets


def read_centre_bias(path: Path | None, size: tuple[int, int], device: torch.device) -> torch.Tensor:
    """The centre-bias map divided by its sum (in float64, after an exact power-of-two rescaling, so any finite scale sums), or the default Gaussian."""
    if path is None:
        return gaussian_centre_bias(*size, dtype=working_dtype(device))
    bias = load_array(path, "--centre-bias")
    if bias.shape != tuple(size):
        raise UserError(f"--centre-bias {path} has shape {bias.shape}; expected [H, W] = {tuple(size)}, the maps' size")
    check_non_negative(bias[None], "--centre-bias", path, "a centre-bias map must be finite and >= 0")
    bias = bias.astype(np.float64)
    if not bias.any():
        raise UserError(f"--centre-bias {path} is all zero; it must have some mass")
    bias = np.ldexp(bias, -int(np.frexp(bias.max())[1]))  # largest value in [0.5, 1): the sum cannot overflow
    return as_tensor(bias / bias.sum(), device)


def window_size(metric: Metric) -> int:
    """The side of the window a metric slides over the maps: SSIM's, else 1 (pixel-wise metrics)."""
    if not isinstance(metric, SSIM):
        return 1
    return gaussian_window(metric.settings["sigma"]).numel() if metric.settings["window"] == "gaussian" else UNIFORM_WINDOW


def select_metrics(spec: str, available: set[str], size: tuple[int, int]) -> tuple[dict, dict[str, str]]:
    """-> (metrics to compute, {metric left out: why}).

    ``all``: every metric the inputs can feed, leaving out those whose window is larger than the
    maps (said in the output); a named metric that the inputs cannot feed is an error.
    """
    chosen, unmet = feedable_metrics(METRICS.resolve_list(spec), available)
    for name, missing in unmet.items():
        if spec.strip() != "all":
            raise UserError(f"metric {name} needs {', '.join(missing)}; pass {' and '.join(OPTION_OF_NEED[m] for m in missing)}")
    left_out = {}
    for name, metric in list(chosen.items()):
        window = window_size(metric)
        if window > min(size):
            reason = f"maps of {size[0]}x{size[1]} are smaller than its {window}x{window} window"
            if spec.strip() != "all":
                raise UserError(f"metric {name}: {reason}; pass larger maps or leave {name} out of --metrics")
            left_out[name] = reason
            del chosen[name]
    if not chosen:
        raise UserError("none of the requested metrics can be computed from these inputs; see `gazebench list metrics`")
    return chosen, left_out


def score_arrays(inputs: ScoreInputs, metrics_spec: str, device: torch.device) -> tuple[pd.DataFrame, dict[str, str]]:
    """Score every map of the input files -> (one row per map: ``index`` then one column per metric, {metric left out: why})."""
    maps, targets = read_inputs(inputs, device)
    metrics, left_out = select_metrics(metrics_spec, targets.available(), tuple(maps.shape[1:]))
    moved = GazeTargets(**{name: None if value is None else value.to(device) for name, value in vars(targets).items()})
    values = score_maps(maps.to(device), moved, metrics)
    table = pd.DataFrame({"index": np.arange(len(maps))} | {name: values[name].double().cpu().numpy() for name in metrics})
    return table, left_out
