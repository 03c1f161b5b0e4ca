"""The EGD paper's static baseline (Karargyris et al. 2021): unet_gaze's classifier without the decoder.

The paper's baseline is the U-Net trained with gamma = 1, i.e. on the class loss alone, and
their code built it as encoder + classification head with no decoder at all (``UnetClassifier``
in the EGD repository: smp ``get_encoder`` + ``ClassificationHead``, head initialised with
smp's ``initialize_head``).  This module builds exactly that network from unet_gaze's pieces:
the same encoder (timm ``tf_efficientnet_b0`` through smp's ``tu-`` encoder, random weights)
and the same head (average pool, dropout, Linear -> classes), under the same parameter names
as in ``UNetGaze`` minus its ``unet.`` prefix (``encoder.*``, ``classification_head.*``), so
the class logits of a ``UNetGaze`` and of an ``EffNetBaseline`` holding the same encoder and
head weights are identical.

Training loss: BCE with logits against the label vectors, NaN labels left out (unet_gaze's
``class_loss``; the paper's ``gamma = 1``).
"""

from __future__ import annotations

import torch
from segmentation_models_pytorch.base import ClassificationHead
from segmentation_models_pytorch.base import initialization as smp_init
from segmentation_models_pytorch.encoders import get_encoder
from torch import nn

from gazebench.data.sample import Batch
from gazebench.errors import UserError
from gazebench.models import recipes
from gazebench.models.base import IMAGENET_MEAN, IMAGENET_STD, ModelAdapter
from gazebench.models.spec import ModelSpec
from gazebench.models.unet_gaze import DEFAULT_CLASSES, ENCODER, INPUT_MULTIPLE, class_loss
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
        return self.encoder.model.blocks[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classification_head(self.encoder(x)[-1])


def build_adapter(
    class_names: tuple[str, ...] | list[str] = DEFAULT_CLASSES,
    input_size: int = 224,
    dropout: float = 0.0,
    state_dict: dict | None = None,
) -> ModelAdapter:
    """An ``effnet_baseline`` adapter: fresh random weights, or ``state_dict`` (an ``EffNetBaseline`` one)."""
    if input_size <= 0 or input_size % INPUT_MULTIPLE:
        raise UserError(f"{NAME}: input_size must be a positive multiple of {INPUT_MULTIPLE}, got {input_size}")
    network = EffNetBaseline(n_classes=len(class_names), dropout=dropout)
    if state_dict is not None:
        network.load_state_dict(state_dict)
    return ModelAdapter(
        name=NAME,
        module=network,
        class_names=list(class_names),
        cam_layer=network.cam_layer,
        input_size=input_size,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        config={"input_size": input_size, "dropout": dropout},
    )


def batch_loss(adapter: ModelAdapter, batch: Batch) -> torch.Tensor:
    """Training loss of one batch: the class BCE alone (the paper's gamma = 1)."""
    return class_loss(adapter.module(adapter.preprocess(batch.images)), batch.labels)


load_recipe, default_recipe = recipes.recipe_functions(NAME)  # baselines/<NAME>.yaml: embedded on synth, paper on real data


SPEC = MODELS.register(NAME)(
    ModelSpec(
        name=NAME,
        build_adapter=build_adapter,
        default_recipe=default_recipe,
        loss=batch_loss,
        description="EGD static baseline (Karargyris et al. 2021): unet_gaze's EfficientNet-B0 encoder + class head, no decoder",
    )
)
