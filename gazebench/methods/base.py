"""The method interface and the protocol's one post-processing.

A method computes raw attributions with respect to the model input (``attribute``);
``__call__`` then applies the scoring protocol: channels summed, absolute value for gradient
methods or ReLU for CAM methods (``postprocess``), bilinear resampling onto the grid.
Sampling methods draw noise from a generator seeded by ``image_seed(run_seed, image_id)``, so
a map never depends on batch size or batch neighbours.
"""

from __future__ import annotations

import hashlib
import inspect
from typing import ClassVar

import torch
import torch.nn.functional as F

from gazebench.errors import UserError
from gazebench.models.base import ModelAdapter


def image_seed(run_seed: int, image_id: str) -> int:
    """A 63-bit seed from (run seed, image id), stable across runs, processes and platforms."""
    digest = hashlib.sha256(f"{run_seed}:{image_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class Method:
    """Base class: subclasses set ``name``, ``postprocess``, ``default_params`` and ``attribute``."""

    name: ClassVar[str]
    postprocess: ClassVar[str] = "abs"  # "abs" (gradient methods) or "relu" (CAM methods)
    default_params: ClassVar[dict] = {}

    def __init__(self, **params):
        unknown = set(params) - set(self.default_params)
        if unknown:
            raise ValueError(f"{self.name}: unknown parameters {sorted(unknown)}")
        self.params = {**self.default_params, **params}
        self.warnings: list[str] = []  # recorded in the run log (e.g. layers without a DeepLift rule)

    def attribute(self, adapter: ModelAdapter, inputs: torch.Tensor, targets: torch.Tensor, seeds: list[int], extra: tuple = ()) -> torch.Tensor:
        """Raw attributions for preprocessed ``inputs`` [B, C, S, S]: [B, C', h, w] or [B, h, w].

        ``extra``: the model's extra per-row inputs (``ModelAdapter.extra_inputs``), held fixed.
        """
        raise NotImplementedError

    def __call__(
        self,
        adapter: ModelAdapter,
        images: torch.Tensor,
        targets: torch.Tensor,
        seeds: list[int],
        grid: int,
        extra: tuple = (),
    ) -> torch.Tensor:
        """Maps [B, grid, grid] for grid images [B, 1, G, G], following the scoring protocol."""
        inputs = adapter.preprocess(images)
        if not extra:  # image-only models: plugins written without the ``extra`` parameter work too
            return to_grid(self.attribute(adapter, inputs, targets, seeds).detach(), self.postprocess, grid)
        if "extra" not in inspect.signature(self.attribute).parameters:
            raise UserError(f"method {self.name} cannot explain model {adapter.name}, which takes extra inputs; its attribute() has no `extra` parameter")
        raw = self.attribute(adapter, inputs, targets, seeds, extra=tuple(extra)).detach()
        return to_grid(raw, self.postprocess, grid)


def forward_args(extra: tuple) -> tuple | None:
    """Captum's ``additional_forward_args`` for the model's extra inputs (None when there are none)."""
    return tuple(extra) if extra else None


def repeat_rows(extra: tuple, n_samples: int) -> tuple:
    """Extra inputs expanded image-major like the inputs of sampling methods ([B] -> [B * n])."""
    return tuple(tensor.repeat_interleave(n_samples, dim=0) for tensor in extra)


def to_grid(raw: torch.Tensor, postprocess: str, grid: int) -> torch.Tensor:
    """Channels summed, abs or ReLU, bilinear resampling to [B, grid, grid] (float32)."""
    maps = raw.float()
    if maps.dim() == 4:
        maps = maps.sum(dim=1)
    if postprocess == "abs":
        maps = maps.abs()
    elif postprocess == "relu":
        maps = maps.clamp_min(0)
    else:
        raise ValueError(f"unknown post-processing {postprocess!r}")
    if maps.shape[-1] != grid or maps.shape[-2] != grid:
        maps = F.interpolate(maps[:, None], size=(grid, grid), mode="bilinear", align_corners=False)[:, 0]
    return maps
