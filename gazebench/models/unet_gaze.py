"""The static U-Net of the EGD paper (Karargyris et al. 2021): a classifier that also predicts gaze.

segmentation_models_pytorch's ``Unet`` with timm's ``tf_efficientnet_b0`` encoder (the network
smp used to call ``timm-efficientnet-b0``), a 1-channel decoder that predicts the radiologist's
gaze heatmap, and a classification head (average pool, dropout, Linear -> classes) on the
deepest encoder features.  Weights start random (``encoder_weights=None``): smp's default
would download ImageNet weights, and gazebench never touches the network at run time.

Training loss (REFERENCES section 2)::

    gamma * BCEWithLogits(class_logits, onehot) + (1 - gamma) * BCEWithLogits(gaze_logits, gaze_target)

where ``gaze_target`` is the sample's gaze density resized to the model input and divided by
its maximum, a [0, 1] heatmap like the paper's decoder target.  Images without any fixation
(all-zero density) have no target: they are left out of the gaze term, which then averages
over the images that have one (and is 0 when none has).
"""

from __future__ import annotations

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import nn

from gazebench.data.sample import Batch
from gazebench.errors import UserError
from gazebench.models import recipes
from gazebench.models.base import IMAGENET_MEAN, IMAGENET_STD, ModelAdapter
from gazebench.models.spec import ModelSpec
from gazebench.registry import MODELS

NAME = "unet_gaze"
DEFAULT_CLASSES = ("Normal", "CHF", "pneumonia")
ENCODER = "tu-tf_efficientnet_b0"
INPUT_MULTIPLE = 32  # the U-Net halves the resolution five times


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
        return self.unet.encoder.model.blocks[-1]

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


def build_adapter(
    class_names: tuple[str, ...] | list[str] = DEFAULT_CLASSES,
    input_size: int = 224,
    dropout: float = 0.5,
    state_dict: dict | None = None,
) -> ModelAdapter:
    """A ``unet_gaze`` adapter: fresh random weights, or ``state_dict`` (a ``UNetGaze`` one)."""
    if input_size <= 0 or input_size % INPUT_MULTIPLE:
        raise UserError(f"unet_gaze: input_size must be a positive multiple of {INPUT_MULTIPLE}, got {input_size}")
    network = UNetGaze(n_classes=len(class_names), dropout=dropout)
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
        gaze_head=GazeHead(network),
        config={"input_size": input_size, "dropout": dropout},
    )


def gaze_target(gaze: torch.Tensor, size: int) -> torch.Tensor:
    """Gaze densities [B, G, G] -> decoder targets [B, 1, size, size], each scaled to a maximum of 1.

    Resized like the images (bilinear, antialiased: non-negative weights, so no negative
    values); an all-zero density (an image without gaze) stays all zero.
    """
    target = gaze.unsqueeze(1).float()
    if target.shape[-1] != size:
        target = F.interpolate(target, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    peak = target.amax(dim=(1, 2, 3), keepdim=True)
    return target / peak.clamp_min(torch.finfo(target.dtype).tiny)


def class_loss(class_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """BCE with logits against the label vectors [B, C] (one-hot for single-label data), mean
    over the known (image, class) entries: NaN labels (uncertain) are left out."""
    known = ~labels.isnan()
    if not bool(known.any()):
        return class_logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(class_logits[known], labels[known].to(class_logits.dtype))


def gaze_loss(gaze_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-pixel BCE with logits, mean over the pixels of the images that have gaze (0 if none has)."""
    has_gaze = targets.flatten(1).amax(dim=1) > 0
    if not bool(has_gaze.any()):
        return gaze_logits.new_zeros(())
    return F.binary_cross_entropy_with_logits(gaze_logits[has_gaze], targets[has_gaze])


def gaze_classification_loss(
    class_logits: torch.Tensor,
    gaze_logits: torch.Tensor,
    labels: torch.Tensor,
    targets: torch.Tensor,
    gamma: float,
) -> torch.Tensor:
    """The paper's loss, ``gamma * class_loss + (1 - gamma) * gaze_loss``; ``targets`` from ``gaze_target``."""
    return gamma * class_loss(class_logits, labels) + (1 - gamma) * gaze_loss(gaze_logits, targets)


def batch_loss(adapter: ModelAdapter, batch: Batch, gamma: float) -> torch.Tensor:
    """Training loss of one batch (the ``ModelSpec.loss`` of ``unet_gaze``)."""
    inputs = adapter.preprocess(batch.images)
    if gamma == 1:  # the paper's baseline: no gaze term, so the decoder need not run
        return class_loss(adapter.module(inputs), batch.labels)
    class_logits, gaze_logits = adapter.module.forward_with_gaze(inputs)
    targets = gaze_target(batch.gaze, adapter.input_size)
    return gaze_classification_loss(class_logits, gaze_logits, batch.labels, targets, gamma)


load_recipe, default_recipe = recipes.recipe_functions(NAME)  # baselines/<NAME>.yaml: embedded on synth, paper on real data


SPEC = MODELS.register(NAME)(
    ModelSpec(
        name=NAME,
        build_adapter=build_adapter,
        default_recipe=default_recipe,
        loss=batch_loss,
        description="EGD static U-Net (Karargyris et al. 2021): EfficientNet-B0 U-Net, gaze decoder + class head",
    )
)
