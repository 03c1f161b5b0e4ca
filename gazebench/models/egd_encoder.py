"""What the EGD paper's models share (Karargyris et al. 2021): its classes, the EfficientNet-B0 encoder, one builder.

unet_gaze, effnet_baseline and heatmap_generator use smp's ``tu-tf_efficientnet_b0`` encoder
(timm's ``tf_efficientnet_b0``, the network smp used to call ``timm-efficientnet-b0``), built with
random weights; it halves the resolution five times, so inputs are multiples of 32.  The last
encoder stage (timm ``blocks[-1]``, 320 channels, stride 32) gives the deepest feature map, the
one the classification head pools and the paper's Grad-CAM used (``encoder.blocks.6``).
``encoder_classifier_builder`` makes the ``build_adapter`` of a network built from the number of
classes and a dropout (unet_gaze, effnet_baseline).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from gazebench.models.adapters import check_input_size, network_adapter
from gazebench.models.base import ModelAdapter

DEFAULT_CLASSES = ("Normal", "CHF", "pneumonia")  # the EGD dataset's classes
ENCODER = "tu-tf_efficientnet_b0"
INPUT_MULTIPLE = 32  # the encoder halves the resolution five times


def last_stage(encoder: nn.Module) -> nn.Module:
    """The last EfficientNet stage of an smp ``tu-`` encoder: its output is the deepest feature map."""
    return encoder.model.blocks[-1]


def encoder_classifier_builder(name: str, network_class: Callable[..., nn.Module], dropout: float, gaze_head: Callable[[nn.Module], nn.Module] | None = None) -> Callable[..., ModelAdapter]:
    """``build_adapter`` of ``network_class(n_classes=..., dropout=...)``, whose config is its input size and dropout.

    ``dropout``: the default of the built function; ``gaze_head(network)``: the adapter's gaze head, if any.
    """

    def build_adapter(class_names: Sequence[str] = DEFAULT_CLASSES, input_size: int = 224, dropout: float = dropout, state_dict: dict | None = None) -> ModelAdapter:
        check_input_size(name, input_size, INPUT_MULTIPLE)
        network = network_class(n_classes=len(class_names), dropout=dropout)
        head = gaze_head(network) if gaze_head is not None else None
        return network_adapter(network, name, class_names, {"input_size": input_size, "dropout": dropout}, state_dict, gaze_head=head)

    build_adapter.__doc__ = f"A ``{name}`` adapter: fresh random weights, or ``state_dict`` (a ``{network_class.__name__}`` one)."
    return build_adapter
