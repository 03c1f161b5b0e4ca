"""Score many maps with many metrics, a chunk of maps at a time so memory stays flat."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from gazebench.metrics.base import NEEDS, GazeTargets, Metric, missing_needs
from gazebench.metrics.ops import memoised, working_dtype

SHARED_FIELDS = ("centre_bias",)  # one value for every map; the other fields have a row per map
CONVERTED_FIELDS = ("density", "centre_bias")  # read in full by several metrics: converted to the working dtype once per chunk
CPU_CHUNK = 32  # maps per chunk on CPU (measured fastest of 4..64 with the CPU kernels)
DEVICE_CHUNK = 256  # maps per chunk on an accelerator: big batches


@dataclass
class ChunkTargets(GazeTargets):
    """The targets of one chunk, with a memo that lets metrics share work (see ``memoised``)."""

    memo: dict = field(default_factory=dict)


def score_maps(maps: torch.Tensor, targets: GazeTargets, metrics: dict[str, Metric], chunk: int | None = None) -> dict[str, torch.Tensor]:
    """Every metric on every map [N, H, W] -> {name: [N] float64 on the CPU} (NaN where undefined).

    ``chunk`` maps (default CPU_CHUNK on CPU, DEVICE_CHUNK elsewhere) and their rows of
    ``targets`` (the centre bias is shared) are scored at a time, on the maps' device, so memory
    stays flat however many maps there are.  Each chunk's maps and the target fields in
    CONVERTED_FIELDS are converted to the working dtype (float64; float32 on ``mps``) once, for
    all metrics; fields no metric needs are left alone.  Within a chunk the metrics share what
    they derive from the same tensors (``memoised``), and a metric's values are computed once: a
    ``*_cb`` metric reuses its base metric's values on the maps.
    """
    chunk = chunk if chunk is not None else CPU_CHUNK if maps.device.type == "cpu" else DEVICE_CHUNK
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1, got {chunk}")
    for name, metric in metrics.items():
        missing = missing_needs(metric, targets.available())
        if missing:
            raise ValueError(f"metric {name} needs {', '.join(missing)}, which these targets lack")
    needed = {need for metric in metrics.values() for need in metric.needs}
    dtype = working_dtype(maps.device)
    scores = {name: torch.empty(len(maps), dtype=torch.float64) for name in metrics}
    working = _WorkingCopies(maps.device, dtype)
    for start in range(0, len(maps), chunk):
        rows = slice(start, min(start + chunk, len(maps)))
        chunk_maps = working.of("maps", maps[rows])
        chunk_targets = _chunk_targets(targets, rows, needed, working)
        for name, metric in metrics.items():
            values = metric_values(metric, chunk_maps, chunk_targets)
            scores[name][rows] = values.to("cpu", torch.float64)
    return scores


class _WorkingCopies:
    """Tensors on the scoring device in the working dtype, copied into buffers kept from chunk to chunk.

    (A fresh tensor per chunk costs more than the copy: the allocator maps new pages each time.)
    A tensor already on the device in the dtype is used as it is.
    """

    def __init__(self, device: torch.device, dtype: torch.dtype):
        self.device, self.dtype, self.buffers = device, dtype, {}

    def of(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        if tensor.device == self.device and tensor.dtype == self.dtype:
            return tensor
        buffer = self.buffers.get(name)
        if buffer is None or buffer.shape[1:] != tensor.shape[1:] or len(buffer) < len(tensor):
            buffer = self.buffers[name] = torch.empty(tensor.shape, dtype=self.dtype, device=self.device)
        return buffer[: len(tensor)].copy_(tensor)


def _chunk_targets(targets: GazeTargets, rows: slice, needed: set[str], working: _WorkingCopies) -> GazeTargets:
    """The ``needed`` fields of the rows' targets on the working device (views where possible; CONVERTED_FIELDS in the working dtype)."""
    chunk = {}
    for need in NEEDS:
        value = getattr(targets, need)
        if need not in needed or value is None:
            continue
        value = value if need in SHARED_FIELDS else value[rows]
        chunk[need] = working.of(need, value) if need in CONVERTED_FIELDS else value.to(working.device)
    return ChunkTargets(**chunk)


def metric_values(metric: Metric, maps: torch.Tensor, targets: GazeTargets) -> torch.Tensor:
    """``metric.compute(maps, targets)``, memoised for the chunk under the metric's type and settings."""
    key = f"metric {type(metric).__module__}.{type(metric).__qualname__} {sorted(metric.settings.items())}"
    return memoised(targets, key, maps, lambda: metric.compute(maps, targets))
