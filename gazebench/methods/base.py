"""The method interface and the protocol's one post-processing.

A method computes raw attributions with respect to the model input (``attribute``);
``__call__`` then applies the scoring protocol: channels summed, absolute value for gradient
methods or ReLU for CAM methods (``postprocess``), bilinear resampling onto the grid.
Sampling methods draw noise from a generator seeded by ``image_seed(run_seed, image_id)``, so
a map never depends on batch size or batch neighbours.

What ``gazebench list methods`` shows and the run checks comes from class attributes: ``family``,
``library``, ``passes()`` (forward and backward passes per image), ``param_checks`` (parameter
ranges), ``param_aliases`` (the source library's names for a parameter), ``check_model``
(pre-flight: refuse a model the method cannot explain correctly, in one line, before any work).
Methods that run many model inputs per image take at most ``rows_per_pass()`` rows per
forward/backward pass: the user's ``--max-batch-elements`` when set, else the method's default.
"""

from __future__ import annotations

import hashlib
import inspect
from typing import Callable, ClassVar

import torch
import torch.nn.functional as F

from gazebench.errors import UserError
from gazebench.models.base import ModelAdapter


def image_seed(run_seed: int, image_id: str) -> int:
    """A 63-bit seed from (run seed, image id), stable across runs, processes and platforms."""
    digest = hashlib.sha256(f"{run_seed}:{image_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


# a parameter's check: (test, what the value must be), e.g. (lambda v: v > 0, "> 0")
ParamCheck = tuple[Callable[[object], bool], str]
DEFAULT_ROWS_PER_PASS = 16  # rows per pass when the user sets none: on a 2-core CPU, 16-row chunks ran faster than 32 or 64 (conductance on unet_gaze: 1.9 s vs 2.6 s per batch of 8)


class Method:
    """Base class: subclasses set ``name``, ``postprocess``, ``default_params`` and ``attribute``."""

    name: ClassVar[str]
    postprocess: ClassVar[str] = "abs"  # "abs" (gradient methods) or "relu" (CAM methods)
    default_params: ClassVar[dict] = {}
    family: ClassVar[str] = "gradient"  # gradient, path, cam, perturbation, relevance, model, reference
    library: ClassVar[str] = "captum"  # the library that computes the raw map (captum, grad-cam, zennit, scikit-image, gazebench)
    param_checks: ClassVar[dict[str, ParamCheck]] = {}  # parameter -> (test, requirement); types follow default_params
    param_aliases: ClassVar[dict[str, str]] = {}  # the source library's name -> ours (Captum's nt_samples -> n_samples)

    def __init__(self, **params):
        params = {self.param_aliases.get(key, key): value for key, value in params.items()}
        unknown = set(params) - set(self.default_params)
        if unknown:
            valid = ", ".join(sorted(self.default_params)) or "none"
            raise UserError(f"method {self.name} has no parameter {', '.join(sorted(unknown))}; its parameters: {valid}")
        self.params = {**self.default_params, **{key: checked_value(self.name, key, value, self.default_params[key]) for key, value in params.items()}}
        for key, (test, requirement) in self.param_checks.items():
            if not test(self.params[key]):
                raise UserError(f"method {self.name}: {key} must be {requirement}, got {self.params[key]!r}")
        self.warnings: list[str] = []  # recorded in the run log (e.g. layers without a DeepLift rule)
        self.max_rows: int | None = None  # the user's --max-batch-elements (None: the method's default chunk)

    def passes(self) -> tuple[int | str, int | str]:
        """(forward, backward) passes through the model per image, with the current parameters."""
        return 1, 1

    def rows_per_pass(self, default: int = DEFAULT_ROWS_PER_PASS) -> int:
        """How many model inputs one forward/backward pass may hold: ``--max-batch-elements``, else ``default``."""
        return self.max_rows if self.max_rows is not None else default

    def check_model(self, adapter: ModelAdapter) -> None:
        """Pre-flight, before any work: raise a one-line UserError when this method cannot explain ``adapter`` correctly."""

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


def checked_value(method: str, key: str, value, default):
    """``value`` as the type of the parameter's default (int for int, float for float; a bool is never a number)."""
    kind = type(default)
    if isinstance(default, bool) or default is None or kind is str:
        ok = default is None or isinstance(value, kind)
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, kind) and not isinstance(value, bool)
    if not ok:
        raise UserError(f"method {method}: {key} must be a{'n' if kind is int else ''} {kind.__name__}, got {value!r}")
    return value


def forward_args(extra: tuple) -> tuple | None:
    """Captum's ``additional_forward_args`` for the model's extra inputs (None when there are none)."""
    return tuple(extra) if extra else None


def row_groups(size: int, inputs: torch.Tensor, targets: torch.Tensor, extra: tuple = ()) -> list[tuple[torch.Tensor, torch.Tensor, tuple]]:
    """Consecutive groups of at most ``size`` rows: (inputs, targets, extra inputs) of each, in order."""
    return [
        (inputs[start : start + size], targets[start : start + size], tuple(tensor[start : start + size] for tensor in extra))
        for start in range(0, len(inputs), size)
    ]


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
