"""Checkpoints are data, not code: weights, configuration and class names, nothing executable.

A checkpoint file is ``torch.save`` of one dict holding only tensors and plain values (str,
int, float, bool, None, lists, dicts), so ``torch.load(..., weights_only=True)`` reads it::

    {"format": "gazebench-checkpoint-1", "model": <registered model name>,
     "state_dict": {name: tensor}, "config": {"model": <build_adapter keyword arguments>, ...},
     "class_names": [str, ...]}

``config["model"]`` is what the model's ``build_adapter`` needs besides the class names and
the weights (for ``unet_gaze``: input_size, dropout); the rest of ``config`` records how the
weights were made (recipe, seed, selected epoch).

Weights are identified by a SHA-256: of the checkpoint file (``sha256_file``) or, for weights
held in memory (``gazebench.api``), of the module's state dict (``state_dict_sha256``).
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from gazebench.atomic import write_atomic
from gazebench.errors import UserError
from gazebench.models.adapters import WeightsDoNotFit
from gazebench.models.base import ModelAdapter
from gazebench.registry import MODELS

FORMAT = "gazebench-checkpoint-1"
READ_ERRORS = (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError)  # what torch.load raises on a bad file


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes (recorded in run configs to identify a checkpoint)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def state_dict_sha256(module: nn.Module) -> str:
    """SHA-256 of a module's state dict (names, dtypes, shapes, bytes): identifies in-memory weights."""
    digest = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{key}|{flat.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return digest.hexdigest()


def save_checkpoint(
    path: str | os.PathLike,
    model_name: str,
    state_dict: dict[str, torch.Tensor],
    config: dict,
    class_names: Sequence[str],
) -> Path:
    """Write a checkpoint atomically (a temporary file in the same folder, then ``os.replace``)."""
    path = Path(path)
    payload = {
        "format": FORMAT,
        "model": model_name,
        "state_dict": {key: value.detach().cpu() for key, value in state_dict.items()},
        "config": config,
        "class_names": list(class_names),
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_atomic(path, buffer.getvalue())
    return path


def load_checkpoint(
    path: str | os.PathLike,
    expected_model: str | None = None,
    expected_classes: Sequence[str] | None = None,
    hint: str | None = None,
) -> dict:
    """Read and check a checkpoint; every problem is a one-line ``UserError``.

    ``hint`` is the command that creates the file (default: ``gazebench train --model NAME``).
    """
    path = Path(path)
    hint = hint or f"gazebench train --model {expected_model or '<model>'}"
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}; create it with `{hint}`")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except READ_ERRORS as error:
        raise UserError(
            f"cannot read checkpoint {path}: not an intact gazebench checkpoint ({type(error).__name__}); "
            f"recreate it with `{hint}`"
        ) from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise UserError(f"cannot read checkpoint {path}: not a {FORMAT} file; recreate it with `{hint}`")
    if expected_model is not None and checkpoint["model"] != expected_model:
        raise UserError(f"checkpoint {path} is for model {checkpoint['model']!r}, not {expected_model!r}")
    if expected_classes is not None and list(checkpoint["class_names"]) != list(expected_classes):
        raise UserError(
            f"checkpoint {path} has classes {list(checkpoint['class_names'])}, "
            f"but the data have {list(expected_classes)}"
        )
    return checkpoint


def adapter_from_checkpoint(
    path: str | os.PathLike,
    expected_model: str | None = None,
    expected_classes: Sequence[str] | None = None,
    hint: str | None = None,
) -> ModelAdapter:
    """Load a checkpoint and build its model's adapter with the saved weights (in eval mode)."""
    checkpoint = load_checkpoint(path, expected_model, expected_classes, hint)
    spec = MODELS.get(checkpoint["model"])
    try:
        adapter = spec.build_adapter(
            class_names=checkpoint["class_names"],
            state_dict=checkpoint["state_dict"],
            **checkpoint["config"]["model"],
        )
    except (WeightsDoNotFit, RuntimeError, KeyError, TypeError) as error:  # a state dict or config of another network
        if isinstance(error, WeightsDoNotFit):
            reason = error.reason
        else:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"checkpoint {path} does not fit model {checkpoint['model']!r}: {reason}") from None
    return adapter.eval()
