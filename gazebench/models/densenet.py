"""DenseNet-121 classifiers of the seed studies: ``densenet121`` (CheXclusion) and ``densenet_aug`` (Kim et al.).

``densenet121`` is the CheXclusion recipe (Seyyed-Kalantari et al. 2021; REFERENCES section 2):
torchvision's DenseNet-121 with ``Linear(1024, C)`` on the pooled features, trained with
BCE-with-logits against the label vectors (the 3 EGD classes one-hot, or the 14 CheXpert labels;
NaN = uncertain, left out).  Class names come from the data.

The network is rebuilt around torchvision's ``features`` (never torchvision's ``DenseNet``
object itself): torchvision's ``DenseNet.forward`` applies a functional ``F.relu`` to the
features, for which DeepLift has no rule, so ``DenseNet121`` applies a distinct ``nn.ReLU``
module instead (features -> ReLU module -> adaptive average pool -> flatten -> classifier).
Every ReLU is used once per forward pass and every other layer is linear in eval mode, except
the stem's max pooling, which has a DeepLift rule of its own.  One more patch: the stem's
``relu0`` feeds ``pool0`` directly, and Captum hooks both on that one tensor, so ``relu0``'s rule
would see the plain gradient instead of ``pool0``'s multipliers; a ``TensorSeparator`` (an
identity that returns a new tensor) between them fixes it.  With these, DeepLift's
attributions sum to f(x) - f(baseline), given a correct max-pool rule (Captum 0.9's is not:
see tests/models/test_densenet.py).
The parameter names are torchvision's (``features.*``, ``classifier.*``), so a torchvision
DenseNet-121 state dict loads as it is.

``densenet_aug`` (Kim, Zhou, Lipton, poster) adds a gaze head to the same network: a 1x1
convolution on the final feature map (the ReLU output, 1024 channels, stride 32) giving one
gaze logit per feature cell.  Its training loss is::

    BCE(class_logits, labels) + gaze_weight * MSE(sigmoid(gaze_logits), E)

where ``E`` is the gaze density pooled onto the feature grid (``F.adaptive_avg_pool2d``: the
share of gaze in each cell) and divided by its maximum (a [0, 1] map peaking at 1), and the
MSE is the mean over the cells of the images that have gaze; images without gaze contribute
BCE only (the study: "where gaze E exists, BCE otherwise").  ``gaze_weight`` is the study's
lambda, whose value is **unverified** (recipe default 1.0).  At inference it is a plain
classifier; the adapter's ``gaze_head`` gives the gaze logits upsampled to the input size.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import densenet121

from gazebench.data.sample import Batch
from gazebench.errors import UserError
from gazebench.models.adapters import check_input_size, network_adapter
from gazebench.models.base import ModelAdapter
from gazebench.models.captum_compat import TensorSeparator
from gazebench.models.losses import class_loss, classification_loss, gaze_mse
from gazebench.models.spec import ModelSpec
from gazebench.models.training import recipes
from gazebench.registry import MODELS

NAME = "densenet121"
AUG_NAME = "densenet_aug"
FEATURE_CHANNELS = 1024  # DenseNet-121's final feature map
INPUT_MULTIPLE = 32  # DenseNet halves the resolution five times
IMAGENET_FILE = "densenet121-a639ec97.pth"  # torchvision's DenseNet121_Weights.IMAGENET1K_V1 file
# torchvision's published file names dense-layer parts "norm.1" where the modules say "norm1"
LEGACY_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.([12]\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)


def separated_stem(features: nn.Sequential) -> nn.Sequential:
    """torchvision's DenseNet ``features`` with a ``TensorSeparator`` between ``relu0`` and ``pool0``.

    The separator has no parameters: the state dict keys stay torchvision's.
    """
    layers = []
    for name, module in features.named_children():
        layers.append((name, module))
        if name == "relu0":
            layers.append(("separator0", TensorSeparator()))
    return nn.Sequential(OrderedDict(layers))


class DenseNet121(nn.Module):
    """torchvision DenseNet-121 as a classifier whose every nonlinearity is its own module.

    ``forward``: features -> ``relu`` (an ``nn.ReLU`` module, replacing torchvision's
    functional ``F.relu``) -> adaptive average pool -> flatten -> ``classifier``.
    """

    def __init__(self, n_classes: int):
        super().__init__()
        torchvision_net = densenet121(weights=None, num_classes=n_classes)  # torchvision's initialisation
        self.features = separated_stem(torchvision_net.features)
        self.relu = nn.ReLU()  # not in-place: its output is the cam_layer output that hooks keep
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = torchvision_net.classifier

    @property
    def cam_layer(self) -> nn.Module:
        """The final ReLU: its output is the rectified last feature map [B, 1024, S/32, S/32].

        This is the layer Grad-CAM and CAM are defined on for this architecture: the class
        logits are ``classifier(mean_hw(A))`` with A this output, so Grad-CAM's weights are
        exactly ``classifier.weight / (h * w)`` and Grad-CAM equals CAM (Zhou et al. 2016), as
        Selvaraju et al. note.  ``features.norm5`` (before the ReLU) would mix in negative
        activations that the classifier never sees.
        """
        return self.relu

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """Preprocessed input [B, 3, S, S] -> rectified last feature map [B, 1024, S/32, S/32]."""
        return self.relu(self.features(x))

    def classify(self, feature_map: torch.Tensor) -> torch.Tensor:
        """Rectified feature map -> class logits [B, C]."""
        return self.classifier(self.flatten(self.pool(feature_map)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Preprocessed input [B, 3, S, S] -> class logits [B, C]."""
        return self.classify(self.feature_map(x))


class DenseNetAug(DenseNet121):
    """DenseNet-121 with a gaze head: a 1x1 convolution on the rectified last feature map."""

    def __init__(self, n_classes: int):
        super().__init__(n_classes)
        self.gaze_conv = nn.Conv2d(FEATURE_CHANNELS, 1, kernel_size=1)

    def forward_with_gaze(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Preprocessed input -> (class logits [B, C], gaze logits [B, 1, S/32, S/32])."""
        features = self.feature_map(x)
        return self.classify(features), self.gaze_conv(features)


class GazeHead(nn.Module):
    """Preprocessed input -> gaze logits [B, 1, S, S] of a ``DenseNetAug`` (bilinear upsampling)."""

    def __init__(self, network: DenseNetAug):
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gaze_logits = self.network.forward_with_gaze(x)[1]
        return F.interpolate(gaze_logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


# ----------------------------------------------------------------------------- building


def imagenet_features(path: str | Path) -> dict[str, torch.Tensor]:
    """The ``features.*`` weights of torchvision's ImageNet DenseNet-121 file at ``path`` (legacy keys renamed).

    The classifier is left out: its ImageNet 1000 classes are not ours.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(
            f"DenseNet-121 ImageNet weights not found: {path}; download torchvision's {IMAGENET_FILE} "
            f"(https://download.pytorch.org/models/{IMAGENET_FILE}) and give its local path as imagenet_weights"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file is the same user mistake
        reason = type(error).__name__
        raise UserError(f"cannot read DenseNet-121 weights {path} ({reason}); download {IMAGENET_FILE} again") from None
    renamed = {LEGACY_KEY.sub(r"\1\2", key): value for key, value in state.items()}
    return {key: value for key, value in renamed.items() if key.startswith("features.")}


def load_imagenet_features(network: DenseNet121, imagenet_weights: str | None) -> None:
    """ImageNet features from a local file, if given (a checkpoint's full state dict, when there is one, wins)."""
    if not imagenet_weights:
        return
    features = imagenet_features(imagenet_weights)
    wanted = [key for key in network.state_dict() if key.startswith("features.") and not key.endswith("num_batches_tracked")]
    missing = [key for key in wanted if key not in features]  # the published file predates num_batches_tracked
    if missing:
        raise UserError(
            f"{imagenet_weights} is not a DenseNet-121 state dict: {len(missing)} feature weights missing, e.g. {missing[0]}"
        )
    network.load_state_dict(features, strict=False)


def densenet_adapter(
    name: str,
    network: DenseNet121,
    class_names,
    input_size: int,
    imagenet_weights: str | None,
    state_dict: dict | None,
    gaze_head: nn.Module | None = None,
) -> ModelAdapter:
    """The adapter of a DenseNet-121 network: weights from ``state_dict`` (a checkpoint), else ImageNet features, else random."""
    if state_dict is None:
        load_imagenet_features(network, imagenet_weights)
    config = {"input_size": input_size, "imagenet_weights": imagenet_weights}
    return network_adapter(network, name, class_names, config, state_dict, gaze_head=gaze_head)


def build_adapter(
    class_names: tuple[str, ...] | list[str],
    input_size: int = 256,
    imagenet_weights: str | None = None,
    state_dict: dict | None = None,
    name: str = NAME,
) -> ModelAdapter:
    """A ``densenet121`` adapter: random weights, ImageNet features from a local file, or ``state_dict``."""
    check_input_size(name, input_size, INPUT_MULTIPLE)
    return densenet_adapter(name, DenseNet121(len(class_names)), class_names, input_size, imagenet_weights, state_dict)


def build_aug_adapter(
    class_names: tuple[str, ...] | list[str],
    input_size: int = 256,
    imagenet_weights: str | None = None,
    state_dict: dict | None = None,
) -> ModelAdapter:
    """A ``densenet_aug`` adapter (a plain classifier at inference, plus ``gaze_head``)."""
    check_input_size(AUG_NAME, input_size, INPUT_MULTIPLE)
    network = DenseNetAug(len(class_names))
    return densenet_adapter(AUG_NAME, network, class_names, input_size, imagenet_weights, state_dict, gaze_head=GazeHead(network))


# ----------------------------------------------------------------------------- losses (pieces in losses.py)


def aug_batch_loss(adapter: ModelAdapter, batch: Batch, gaze_weight: float) -> torch.Tensor:
    """``densenet_aug``'s training loss: ``BCE + gaze_weight * MSE(sigmoid(gaze head), E)`` (see the module doc)."""
    class_logits, gaze_logits = adapter.module.forward_with_gaze(adapter.preprocess(batch.images))
    return class_loss(class_logits, batch.labels) + gaze_weight * gaze_mse(gaze_logits, batch.gaze)


# ----------------------------------------------------------------------------- recipes and registration


load_recipe, default_recipe = recipes.recipe_functions(NAME)  # gazebench/resources/recipes/densenet121.yaml
load_aug_recipe, default_aug_recipe = recipes.recipe_functions(AUG_NAME)  # gazebench/resources/recipes/densenet_aug.yaml


SPEC = MODELS.register(NAME)(
    ModelSpec(
        name=NAME,
        build_adapter=build_adapter,
        default_recipe=default_recipe,
        loss=classification_loss,  # BCE with logits (CheXclusion)
        description="CheXclusion DenseNet-121 (torchvision features, Linear(1024, C), BCE)",
    )
)

AUG_SPEC = MODELS.register(AUG_NAME)(
    ModelSpec(
        name=AUG_NAME,
        build_adapter=build_aug_adapter,
        default_recipe=default_aug_recipe,
        loss=aug_batch_loss,
        description="DenseNet-Aug (Kim, Zhou, Lipton): DenseNet-121 + 1x1-conv gaze head, BCE + lambda * MSE to gaze",
    )
)
