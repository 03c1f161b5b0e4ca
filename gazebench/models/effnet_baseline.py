"""The EGD paper's static baseline (Karargyris et al. 2021): unet_gaze's classifier without the decoder.

The paper's baseline is the U-Net trained with gamma = 1, i.e. on the class loss alone, and
their code built it as encoder + classification head with no decoder at all (``UnetClassifier``
in the EGD repository: smp ``get_encoder`` + ``ClassificationHead``, head initialised with
smp's ``initialize_head``).  This module builds exactly that network from the same pieces
(egd_encoder.py): the same encoder (timm ``tf_efficientnet_b0`` through smp's ``tu-`` encoder, random weights)
and the same head (average pool, dropout, Linear -> classes), under the same parameter names
as in ``UNetGaze`` minus its ``unet.`` prefix (``encoder.*``, ``classification_head.*``), so
the class logits of a ``UNetGaze`` and of an ``EffNetBaseline`` holding the same encoder and
head weights are identical.

Training loss: BCE with logits against the label vectors, NaN labels left out
(``losses.classification_loss``; the paper's ``gamma = 1``).
"""

from __future__ import annotations

import torch
from segmentation_models_pytorch.base import ClassificationHead
from segmentation_models_pytorch.base import initialization as smp_init
from segmentation_models_pytorch.encoders import get_encoder
from torch import nn

from gazebench.models.egd_encoder import (
    DEFAULT_CLASSES,
    ENCODER,
    encoder_classifier_builder,
    last_stage,
)
from gazebench.models.losses import classification_loss
from gazebench.models.spec import ModelSpec
from gazebench.models.training import recipes
from gazebench.registry import MODELS

NAME = "effnet_baseline"
ENCODER_DEPTH = 5  # smp.Unet's default depth, so the encoder is the one unet_gaze's U-Net holds


class EffNetBaseline(nn.Module):
    """EfficientNet-B0 encoder + classification head: preprocessed input [B, 3, S, S] -> logits [B, C]."""

    def __init__(self, n_classes: int = len(DEFAULT_CLASSES), dropout: float = 0.0):
        super().__init__()
        self.encoder = get_encoder(ENCODER, in_channels=3, depth=ENCODER_DEPTH, weights=None)
        self.classification_head = ClassificationHead(
            in_channels=self.encoder.out_channels[-1], classes=n_classes, dropout=dropout
        )
        smp_init.initialize_head(self.classification_head)  # as smp.Unet and the paper's UnetClassifier do

    @property
    def cam_layer(self) -> nn.Module:
        """The last EfficientNet stage (timm ``blocks[-1]``, 320 channels, stride 32): the map the head pools,
        the same layer as unet_gaze's ``cam_layer`` (the paper's ``encoder.blocks.6``)."""
        return last_stage(self.encoder)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classification_head(self.encoder(x)[-1])


build_adapter = encoder_classifier_builder(NAME, EffNetBaseline, dropout=0.0)


load_recipe, default_recipe = recipes.recipe_functions(NAME)  # gazebench/resources/recipes/<NAME>.yaml: embedded on synth, paper on real data


SPEC = MODELS.register(NAME)(
    ModelSpec(
        name=NAME,
        build_adapter=build_adapter,
        default_recipe=default_recipe,
        loss=classification_loss,  # the class BCE alone (the paper's gamma = 1)
        description="EGD static baseline (Karargyris et al. 2021): unet_gaze's EfficientNet-B0 encoder + class head, no decoder",
    )
)
