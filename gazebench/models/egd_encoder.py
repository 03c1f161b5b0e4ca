"""What the EGD paper's models share (Karargyris et al. 2021): its classes and the EfficientNet-B0 encoder.

unet_gaze, effnet_baseline and heatmap_generator use smp's ``tu-tf_efficientnet_b0`` encoder
(timm's ``tf_efficientnet_b0``, the network smp used to call ``timm-efficientnet-b0``), built with
random weights; it halves the resolution five times, so inputs are multiples of 32.  The last
encoder stage (timm ``blocks[-1]``, 320 channels, stride 32) gives the deepest feature map, the
one the classification head pools and the paper's Grad-CAM used (``encoder.blocks.6``).
"""

from __future__ import annotations

from torch import nn

DEFAULT_CLASSES = ("Normal", "CHF", "pneumonia")  # the EGD dataset's classes
ENCODER = "tu-tf_efficientnet_b0"
INPUT_MULTIPLE = 32  # the encoder halves the resolution five times


def last_stage(encoder: nn.Module) -> nn.Module:
    """The last EfficientNet stage of an smp ``tu-`` encoder: its output is the deepest feature map."""
    return encoder.model.blocks[-1]
