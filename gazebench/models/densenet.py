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
from gazebench.models import recipes
from gazebench.models.base import TensorSeparator, IMAGENET_MEAN, IMAGENET_STD, ModelAdapter
from gazebench.models.spec import ModelSpec
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


def check_input_size(name: str, input_size: int) -> None:
    """Input sizes must be positive multiples of 32, so the feature grid tiles the image exactly."""
    if input_size <= 0 or input_size % INPUT_MULTIPLE:
        raise UserError(f"{name}: input_size must be a positive multiple of {INPUT_MULTIPLE}, got {input_size}")


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


def load_weights(network: DenseNet121, state_dict: dict | None, imagenet_weights: str | None) -> None:
    """A full ``state_dict`` (a checkpoint) wins; otherwise ImageNet features from a local file, if given."""
    if state_dict is not None:
        network.load_state_dict(state_dict)
    elif imagenet_weights:
        features = imagenet_features(imagenet_weights)
        wanted = [key for key in network.state_dict() if key.startswith("features.") and not key.endswith("num_batches_tracked")]
        missing = [key for key in wanted if key not in features]  # the published file predates num_batches_tracked
        if missing:
            raise UserError(
                f"{imagenet_weights} is not a DenseNet-121 state dict: {len(missing)} feature weights missing, e.g. {missing[0]}"
            )
        network.load_state_dict(features, strict=False)


def make_adapter(name: str, network: DenseNet121, class_names, input_size: int, imagenet_weights, gaze_head=None) -> ModelAdapter:
    return ModelAdapter(
        name=name,
        module=network,
        class_names=list(class_names),
        cam_layer=network.cam_layer,
        input_size=input_size,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        gaze_head=gaze_head,
        config={"input_size": input_size, "imagenet_weights": imagenet_weights},
    )


def build_adapter(
    class_names: tuple[str, ...] | list[str],
    input_size: int = 256,
    imagenet_weights: str | None = None,
    state_dict: dict | None = None,
    name: str = NAME,
) -> ModelAdapter:
    """A ``densenet121`` adapter: random weights, ImageNet features from a local file, or ``state_dict``."""
    check_input_size(name, input_size)
    network = DenseNet121(len(class_names))
    load_weights(network, state_dict, imagenet_weights)
    return make_adapter(name, network, class_names, input_size, imagenet_weights)


def build_aug_adapter(
    class_names: tuple[str, ...] | list[str],
    input_size: int = 256,
    imagenet_weights: str | None = None,
    state_dict: dict | None = None,
) -> ModelAdapter:
    """A ``densenet_aug`` adapter (a plain classifier at inference, plus ``gaze_head``)."""
    check_input_size(AUG_NAME, input_size)
    network = DenseNetAug(len(class_names))
    load_weights(network, state_dict, imagenet_weights)
    return make_adapter(AUG_NAME, network, class_names, input_size, imagenet_weights, gaze_head=GazeHead(network))


# ----------------------------------------------------------------------------- losses


def class_loss(class_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """BCE with logits against label vectors [B, C], mean over known entries (NaN labels left out)."""
    known = ~labels.isnan()
    if not bool(known.any()):
        return class_logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(class_logits[known], labels[known].to(class_logits.dtype))


def pool_gaze(gaze: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Gaze densities [B, G, G] -> [B, 1, h, w]: the mean density over each feature cell (area pooling).

    Proportional to the share of gaze inside each cell (exactly, when h and w divide G); an
    all-zero density (no gaze) stays all zero.
    """
    return F.adaptive_avg_pool2d(gaze.unsqueeze(1).float(), size)


def has_gaze(gaze: torch.Tensor) -> torch.Tensor:
    """[B] bool: which images have gaze (a density that is not all zero)."""
    return gaze.flatten(1).amax(dim=1) > 0


def gaze_heatmap_target(gaze: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``E``: the density pooled onto the feature grid and divided by its maximum ([0, 1], peak 1)."""
    pooled = pool_gaze(gaze, size)
    peak = pooled.amax(dim=(1, 2, 3), keepdim=True)
    return pooled / peak.clamp_min(torch.finfo(pooled.dtype).tiny)


def gaze_mse(gaze_logits: torch.Tensor, gaze: torch.Tensor) -> torch.Tensor:
    """MSE(sigmoid(gaze_logits), E), mean over the cells of the images with gaze (0 if none has)."""
    with_gaze = has_gaze(gaze)
    if not bool(with_gaze.any()):
        return gaze_logits.sum() * 0.0
    target = gaze_heatmap_target(gaze[with_gaze], gaze_logits.shape[-2:]).to(gaze_logits.dtype)
    return F.mse_loss(gaze_logits[with_gaze].sigmoid(), target)


def batch_loss(adapter: ModelAdapter, batch: Batch) -> torch.Tensor:
    """``densenet121``'s training loss of one batch: BCE with logits (CheXclusion)."""
    return class_loss(adapter.logits(batch.images), batch.labels)


def aug_batch_loss(adapter: ModelAdapter, batch: Batch, gaze_weight: float) -> torch.Tensor:
    """``densenet_aug``'s training loss: ``BCE + gaze_weight * MSE(sigmoid(gaze head), E)`` (see the module doc)."""
    class_logits, gaze_logits = adapter.module.forward_with_gaze(adapter.preprocess(batch.images))
    return class_loss(class_logits, batch.labels) + gaze_weight * gaze_mse(gaze_logits, batch.gaze)


# ----------------------------------------------------------------------------- recipes and registration


def recipe_loader(model: str):
    """``default_recipe`` for ``model``: ``embedded`` for the synthetic dataset, ``paper`` for real ones."""

    def default_recipe(dataset: str) -> dict:
        return recipes.load_recipe(model, recipes.default_recipe_name(dataset))

    return default_recipe


SPEC = MODELS.register(NAME)(
    ModelSpec(
        name=NAME,
        build_adapter=build_adapter,
        default_recipe=recipe_loader(NAME),
        loss=batch_loss,
        description="CheXclusion DenseNet-121 (torchvision features, Linear(1024, C), BCE)",
    )
)

AUG_SPEC = MODELS.register(AUG_NAME)(
    ModelSpec(
        name=AUG_NAME,
        build_adapter=build_aug_adapter,
        default_recipe=recipe_loader(AUG_NAME),
        loss=aug_batch_loss,
        description="DenseNet-Aug (Kim, Zhou, Lipton): DenseNet-121 + 1x1-conv gaze head, BCE + lambda * MSE to gaze",
    )
)
