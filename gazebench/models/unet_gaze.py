"""The static U-Net of the EGD paper (Karargyris et al. 2021): a classifier that also predicts gaze.

segmentation_models_pytorch's ``Unet`` with timm's ``tf_efficientnet_b0`` encoder (the network
smp used to call ``timm-efficientnet-b0``; see egd_encoder.py), a 1-channel decoder that predicts the radiologist's
gaze heatmap, and a classification head (average pool, dropout, Linear -> classes) on the
deepest encoder features.  Weights start random (``encoder_weights=None``): smp's default
would download ImageNet weights, and gazebench never touches the network at run time.

Training loss (REFERENCES section 2)::

    gamma * BCEWithLogits(class_logits, onehot) + (1 - gamma) * BCEWithLogits(gaze_logits, gaze_target)

where ``gaze_target`` is the sample's gaze density resized to the model input and divided by
its maximum, a [0, 1] heatmap like the paper's decoder target.  Images without any fixation
(all-zero density) have no target: they are left out of the gaze term, which then averages
over the images that have one (and is 0 when none has).  The pieces are in losses.py
(``gaze_target``, ``gaze_classification_loss``).
"""

from __future__ import annotations

import segmentation_models_pytorch as smp
import torch
from torch import nn

from gazebench.data.sample import Batch
from gazebench.models.base import ModelAdapter
from gazebench.models.egd_encoder import (
    DEFAULT_CLASSES,
    ENCODER,
    encoder_classifier_builder,
    last_stage,
)
from gazebench.models.losses import class_loss, gaze_classification_loss, gaze_target
from gazebench.models.spec import ModelSpec
from gazebench.models.training import recipes
from gazebench.registry import MODELS

NAME = "unet_gaze"


class UNetGaze(nn.Module):
    """smp U-Net seen as a plain classifier: ``forward(x)`` gives class logits only.

    ``forward`` skips the decoder (the class logits depend on the encoder alone), so Captum
    and the methods pay only for the classifier; ``forward_with_gaze`` runs the whole U-Net.
    """

    def __init__(self, n_classes: int = len(DEFAULT_CLASSES), dropout: float = 0.5):
        super().__init__()
        self.unet = smp.Unet(
            encoder_name=ENCODER,
            encoder_weights=None,
            in_channels=3,
            classes=1,
            aux_params=dict(classes=n_classes, dropout=dropout),
        )

    @property
    def cam_layer(self) -> nn.Module:
        """The last stage of the EfficientNet encoder (timm ``blocks[-1]``, 320 channels, stride 32).

        Its output is the deepest feature map, the one the classification head pools: smp's
        ``encoder(x)[-1]`` is exactly this module's output (the paper's Grad-CAM used the same
        layer, ``encoder.blocks.6``).
        """
        return last_stage(self.unet.encoder)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Preprocessed input [B, 3, S, S] -> class logits [B, C]."""
        return self.unet.classification_head(self.unet.encoder(x)[-1])

    def forward_with_gaze(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Preprocessed input [B, 3, S, S] -> (class logits [B, C], gaze logits [B, 1, S, S])."""
        gaze_logits, class_logits = self.unet(x)
        return class_logits, gaze_logits


class GazeHead(nn.Module):
    """Preprocessed input -> gaze logits [B, 1, S, S] of a ``UNetGaze`` (the adapter's ``gaze_head``)."""

    def __init__(self, network: UNetGaze):
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network.forward_with_gaze(x)[1]


build_adapter = encoder_classifier_builder(NAME, UNetGaze, dropout=0.5, gaze_head=GazeHead)


def batch_loss(adapter: ModelAdapter, batch: Batch, gamma: float) -> torch.Tensor:
    """Training loss of one batch (the ``ModelSpec.loss`` of ``unet_gaze``)."""
    inputs = adapter.preprocess(batch.images)
    if gamma == 1:  # the paper's baseline: no gaze term, so the decoder need not run
        return class_loss(adapter.module(inputs), batch.labels)
    class_logits, gaze_logits = adapter.module.forward_with_gaze(inputs)
    targets = gaze_target(batch.gaze, adapter.input_size)
    return gaze_classification_loss(class_logits, gaze_logits, batch.labels, targets, gamma)


load_recipe, default_recipe = recipes.recipe_functions(NAME)  # gazebench/resources/recipes/<NAME>.yaml: embedded on synth, paper on real data


SPEC = MODELS.register(NAME)(
    ModelSpec(
        name=NAME,
        build_adapter=build_adapter,
        default_recipe=default_recipe,
        loss=batch_loss,
        description="EGD static U-Net (Karargyris et al. 2021): EfficientNet-B0 U-Net, gaze decoder + class head",
    )
)
