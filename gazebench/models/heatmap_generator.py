"""U-Nets with "heatmap generators" (Watanabe et al. 2022, Front. Radiol. 2:991683) -- an UNVERIFIED design.

What is known (REFERENCES section 2): three experiment sets of U-Nets whose decoder acts as a
heatmap generator during training on EGD, the baseline being the Karargyris static U-Net
(unet_gaze), best mean AUC 0.913.  What each set did, and its hyper-parameters, are NOT
verified: gazebench could not check the paper.  This module therefore implements three
configurable choices on top of the Karargyris U-Net (same smp ``Unet``, same timm
``tf_efficientnet_b0`` encoder, same classification head and loss form), and the recipes
``set1``, ``set2`` and ``set3`` are gazebench's assumptions, named after the paper's sets only
to say which idea each stands for:

- ``set1`` (``heatmap_phases=1, attention=False``): the decoder generates the static gaze
  heatmap as an auxiliary training target, ``gamma * class BCE + (1 - gamma) * heatmap BCE``;
  architecturally this is unet_gaze itself.
- ``set2`` (``heatmap_phases=3``): temporal heatmaps.  The decoder generates one heatmap per
  phase of the reading (the fixations split, in reading order, into ``heatmap_phases`` runs of
  equal count: early / middle / late), each the sum of its fixations' per-fixation frames
  (Gaussians, as the temporal model's frames), scaled to a maximum of 1; their sum is a static
  heatmap.  Gaze is used only as a training target, as in set1.
- ``set3`` (``attention=True``): the generated heatmap is also used as an attention map on the
  encoder's deepest features before the classifier: ``features * (1 + sigmoid(heatmap))``
  (the heatmap's maximum over phases, area-resized to the feature map).  The residual form
  ``1 + a`` is an assumption (it keeps every feature when the map is low, as in residual
  attention networks); the map is not detached, so the class loss also shapes the generator.
  The class logits then depend on the decoder: ``forward`` runs the whole U-Net.

In every configuration ``forward(x)`` gives class logits from the image alone (gaze is never an
input), and ``cam_layer`` is an ``nn.Identity`` on the map the classification head pools (the
deepest encoder features, after the attention when there is one), so Grad-CAM explains exactly
what the head sees.  Images without fixations are left out of the heatmap term, and so are the
(image, phase) pairs with no fixation in that phase.
"""

from __future__ import annotations

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import nn

from gazebench.data.sample import Batch
from gazebench.errors import UserError
from gazebench.models.adapters import check_input_size, network_adapter
from gazebench.models.base import ModelAdapter
from gazebench.models.egd_encoder import DEFAULT_CLASSES, ENCODER, INPUT_MULTIPLE
from gazebench.models.fixation_frames import gaussian_profiles, padded_fixations
from gazebench.models.losses import gaze_classification_loss, gaze_target
from gazebench.models.spec import ModelSpec
from gazebench.models.training import recipes
from gazebench.registry import MODELS

NAME = "heatmap_generator"
DEFAULT_SET_FOR_REAL_DATA = "set1"  # the set closest to the verified baseline


class HeatmapGeneratorUNet(nn.Module):
    """smp U-Net whose decoder generates ``heatmap_phases`` gaze heatmaps, optionally gating the class head."""

    def __init__(
        self,
        n_classes: int = len(DEFAULT_CLASSES),
        dropout: float = 0.5,
        heatmap_phases: int = 1,
        attention: bool = False,
    ):
        super().__init__()
        self.unet = smp.Unet(
            encoder_name=ENCODER,
            encoder_weights=None,
            in_channels=3,
            classes=heatmap_phases,
            aux_params=dict(classes=n_classes, dropout=dropout),
        )
        self.attention = attention
        self.gate = nn.Sigmoid() if attention else None
        self.pooled = nn.Identity()  # the feature map the classification head pools (cam_layer)

    @property
    def cam_layer(self) -> nn.Module:
        return self.pooled

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Preprocessed input [B, 3, S, S] -> class logits [B, C] (the decoder runs only with attention)."""
        if self.attention:
            return self.forward_with_heatmaps(x)[0]
        return self.classify(self.unet.encoder(x)[-1])

    def forward_with_heatmaps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Preprocessed input -> (class logits [B, C], heatmap logits [B, phases, S, S])."""
        features = self.unet.encoder(x)
        heatmap_logits = self.unet.segmentation_head(self.unet.decoder(features))
        deepest = features[-1]
        if self.attention:
            deepest = deepest * (1 + self.attention_map(heatmap_logits, deepest.shape[-2:]))
        return self.classify(deepest), heatmap_logits

    def attention_map(self, heatmap_logits: torch.Tensor, size: torch.Size) -> torch.Tensor:
        """sigmoid(heatmap), maximum over phases, area-averaged to the feature map: [B, 1, h, w] in [0, 1]."""
        return F.adaptive_avg_pool2d(self.gate(heatmap_logits).amax(dim=1, keepdim=True), size)

    def classify(self, deepest: torch.Tensor) -> torch.Tensor:
        return self.unet.classification_head(self.pooled(deepest))


class HeatmapHead(nn.Module):
    """Preprocessed input -> heatmap logits [B, 1, S, S] (the adapter's ``gaze_head``; phases merged by max)."""

    def __init__(self, network: HeatmapGeneratorUNet):
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network.forward_with_heatmaps(x)[1].amax(dim=1, keepdim=True)


def build_adapter(
    class_names: tuple[str, ...] | list[str] = DEFAULT_CLASSES,
    input_size: int = 224,
    dropout: float = 0.5,
    heatmap_phases: int = 1,
    attention: bool = False,
    heatmap_sigma: float = 0.05,
    state_dict: dict | None = None,
) -> ModelAdapter:
    """A ``heatmap_generator`` adapter: fresh random weights, or ``state_dict``.

    ``heatmap_sigma`` (a fraction of the grid side) shapes the phase heatmaps of ``heatmap_phases > 1``;
    a single phase uses the sample's own gaze density.
    """
    check_input_size(NAME, input_size, INPUT_MULTIPLE)
    if heatmap_phases < 1:
        raise UserError(f"{NAME}: heatmap_phases must be at least 1, got {heatmap_phases}")
    if heatmap_sigma <= 0:
        raise UserError(f"{NAME}: heatmap_sigma must be positive (a fraction of the grid side), got {heatmap_sigma}")
    network = HeatmapGeneratorUNet(len(class_names), dropout, heatmap_phases, attention)
    config = {
        "input_size": input_size, "dropout": dropout, "heatmap_phases": heatmap_phases,
        "attention": attention, "heatmap_sigma": heatmap_sigma,
    }
    return network_adapter(network, NAME, class_names, config, state_dict, gaze_head=HeatmapHead(network))


def phase_heatmaps(fixations: list[torch.Tensor], grid: int, size: int, phases: int, sigma: float, device) -> torch.Tensor:
    """Per-phase heatmaps [B, phases, size, size], each scaled to a maximum of 1 (all zero when empty).

    Fixation i of n (reading order) belongs to phase floor(i * phases / n); a phase's map is the
    sum of its fixations' Gaussians (sigma = ``sigma`` x the grid side).  Separable: one einsum.
    """
    padded, mask = padded_fixations(fixations, device)
    counts = mask.sum(dim=1, keepdim=True).clamp_min(1)
    order = torch.arange(padded.shape[1], device=device)[None, :]
    phase = torch.div(order * phases, counts, rounding_mode="floor").clamp_max(phases - 1)
    membership = F.one_hot(phase, phases).to(padded.dtype) * mask[..., None]  # [B, T, P]
    along_x = gaussian_profiles(padded[..., 0], grid, size, sigma * grid)  # [B, T, S]
    along_y = gaussian_profiles(padded[..., 1], grid, size, sigma * grid)
    maps = torch.einsum("btp,bty,btx->bpyx", membership, along_y, along_x)
    peak = maps.amax(dim=(2, 3), keepdim=True)
    return maps / peak.clamp_min(torch.finfo(maps.dtype).tiny)


def heatmap_targets(adapter: ModelAdapter, batch: Batch) -> torch.Tensor:
    """Decoder targets [B, phases, S, S] in [0, 1]: the gaze density (one phase) or the phase heatmaps."""
    phases = adapter.config["heatmap_phases"]
    if phases == 1:
        return gaze_target(batch.gaze, adapter.input_size)
    grid = batch.images.shape[-1]
    return phase_heatmaps(batch.fixations, grid, adapter.input_size, phases, adapter.config["heatmap_sigma"], batch.images.device)


def batch_loss(adapter: ModelAdapter, batch: Batch, gamma: float) -> torch.Tensor:
    """``gamma * class BCE + (1 - gamma) * heatmap BCE`` over the (image, phase) maps that have gaze."""
    class_logits, heatmap_logits = adapter.module.forward_with_heatmaps(adapter.preprocess(batch.images))
    targets = heatmap_targets(adapter, batch)
    per_map = lambda t: t.reshape(-1, 1, *t.shape[-2:])  # noqa: E731 - one row per (image, phase)
    return gaze_classification_loss(class_logits, per_map(heatmap_logits), batch.labels, per_map(targets), gamma)


def load_recipe(name: str = "embedded") -> dict:
    """One recipe from ``gazebench/resources/recipes/heatmap_generator.yaml``, with its ``name`` added."""
    return recipes.load_recipe(NAME, name)


def default_recipe(dataset: str) -> dict:
    """``embedded`` for the synthetic dataset (CPU-sized); ``set1`` for the real ones (there is no ``paper``)."""
    name = recipes.default_recipe_name(dataset)
    return load_recipe(DEFAULT_SET_FOR_REAL_DATA if name == "paper" else name)


SPEC = MODELS.register(NAME)(
    ModelSpec(
        name=NAME,
        build_adapter=build_adapter,
        default_recipe=default_recipe,
        loss=batch_loss,
        description="U-Net with heatmap generators (Watanabe et al. 2022; sets unverified): static / temporal / attention",
    )
)
