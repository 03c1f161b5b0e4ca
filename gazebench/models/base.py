"""The model adapter: the one interface every method sees.

An adapter wraps any classifier.  ``preprocess`` turns grid images ``[B, 1, G, G]`` in
[0, 1] into the model's own input (size, channels, normalisation); ``module`` maps that
input to class logits ``[B, C]`` and is an ``nn.Module`` so that Captum can hook into it;
``cam_layer`` is the module inside ``module`` whose output CAM-style methods use.  A model
that needs more than the image (the temporal model's gaze frames) declares ``extra_inputs``:
per-row tensors built from the batch and passed as ``module(x, *extra)`` (Captum's
``additional_forward_args``); the attributions are with respect to the image only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ModelAdapter:
    name: str
    module: nn.Module  # preprocessed input [B, 3, S, S] -> logits [B, C]
    class_names: list[str]
    cam_layer: nn.Module
    input_size: int
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    gaze_head: nn.Module | None = None  # optional: preprocessed input -> gaze logits [B, 1, S, S]
    activation: str = "sigmoid"  # how logits become class probabilities: "sigmoid" or "softmax"
    config: dict = field(default_factory=dict)
    extra_inputs: Callable | None = None  # batch -> tuple of [B, ...] tensors for module(x, *extra)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Grid images [B, 1, G, G] in [0, 1] -> normalised model input [B, 3, S, S]."""
        x = images
        if x.shape[-1] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False, antialias=True)
        x = x.expand(-1, len(self.mean), -1, -1)
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        return (x - mean) / std

    def inputs_from(self, batch) -> tuple[torch.Tensor, ...]:
        """The extra per-row inputs this model needs for ``batch`` (none for image-only models)."""
        return tuple(self.extra_inputs(batch)) if self.extra_inputs is not None else ()

    def logits(self, images: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        return self.module(self.preprocess(images), *extra)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.sigmoid() if self.activation == "sigmoid" else logits.softmax(dim=-1)

    def to(self, device: torch.device | str) -> "ModelAdapter":
        self.module.to(device)
        if self.gaze_head is not None:
            self.gaze_head.to(device)
        return self

    def eval(self) -> "ModelAdapter":
        self.module.eval()
        if self.gaze_head is not None:
            self.gaze_head.eval()
        return self

