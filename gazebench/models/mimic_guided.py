"""``mimic_guided``: a classifier trained to explain itself like the radiologist looked.

After "Learning How to MIMIC" (WACV 2023; REFERENCES section 2): an extra training loss pulls
the model's own explanation toward the eye-gaze density, and the explanation is used only
during training — at inference this is a plain classifier.  The paper's architecture and
explanation details are **unverified**; gazebench's choices:

* backbone: the ``densenet121`` network (torchvision DenseNet-121 features, final ReLU module,
  average pool, ``Linear(1024, C)``), so the adapter, ``cam_layer`` and checkpoints are the
  same as ``densenet121``'s;
* explanation: the class activation map ``CAM_c = sum_k W[c, k] * A_k`` of the rectified last
  feature map ``A`` (the ``cam_layer`` output) and the classifier weights ``W``.  For this
  architecture (ReLU -> global average pool -> linear) it *is* Grad-CAM: the gradient of
  logit c with respect to ``A_k`` is ``W[c, k] / (h * w)`` at every cell, so Grad-CAM's map is
  ``ReLU(CAM_c) / (h * w)``, which normalises to the same distribution.  CAM costs one einsum
  and no second backward pass (``torch.autograd.grad(..., create_graph=True)`` would give
  the same map at several times the cost) and is differentiable in both W and A;
* normalisation: ``ReLU(CAM_c)`` divided by its sum over the h x w cells (uniform where the
  map is all zero), mixed with the uniform distribution with weight ``smoothing`` (recipe,
  default 0.01) so that its logarithm is finite everywhere.  The ReLU passes no gradient to
  cells with a negative CAM; they are pulled up only through the shared weights, and without
  smoothing the KL jumps whenever a gazed-at cell dies (1e-3 gave spiky training curves on a
  fixed batch, 1e-2 smooth ones);
* gaze target: the gaze density pooled onto the same h x w grid (area pooling) and divided by
  its sum;
* loss: ``BCE + kl_weight * KL(gaze || explanation)``, the KL averaged over the (image, class)
  pairs whose class is a positive label of an image that has gaze (the true class for
  single-label data; every positive label for CheXpert-style data); images without gaze, or
  without a positive label, give BCE only.  ``kl_weight`` is unverified (recipe default 1.0).
"""

from __future__ import annotations

import torch
from torch import nn

from gazebench.data.sample import Batch
from gazebench.models import densenet
from gazebench.models.base import ModelAdapter
from gazebench.models.losses import class_loss, has_gaze, pool_gaze
from gazebench.models.spec import ModelSpec
from gazebench.models.training import recipes
from gazebench.registry import MODELS

NAME = "mimic_guided"
SMOOTHING = 0.01  # default weight of the uniform distribution mixed into each explanation


def build_adapter(
    class_names: tuple[str, ...] | list[str],
    input_size: int = 256,
    imagenet_weights: str | None = None,
    state_dict: dict | None = None,
) -> ModelAdapter:
    """A ``mimic_guided`` adapter: the ``densenet121`` network under this model's name."""
    return densenet.build_adapter(class_names, input_size, imagenet_weights, state_dict, name=NAME)


def class_activation_maps(classifier: nn.Linear, feature_map: torch.Tensor) -> torch.Tensor:
    """CAM of every class: [B, K, h, w] rectified features -> [B, C, h, w] (``sum_k W[c, k] * A_k``)."""
    return torch.einsum("ck,bkhw->bchw", classifier.weight, feature_map)


def explanation_distribution(cams: torch.Tensor, smoothing: float = SMOOTHING) -> torch.Tensor:
    """[B, C, h, w] CAMs -> [B, C, h * w] distributions: ReLU, divided by the sum, smoothed.

    A map without any positive cell becomes uniform; every distribution is mixed with the
    uniform one (weight ``smoothing``) so that no cell has probability 0.
    """
    positive = cams.flatten(2).clamp_min(0)
    total = positive.sum(dim=-1, keepdim=True)
    cells = positive.shape[-1]
    normalised = torch.where(total > 0, positive / total.clamp_min(torch.finfo(positive.dtype).tiny), 1.0 / cells)
    return (1 - smoothing) * normalised + smoothing / cells


def gaze_distribution(gaze: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Gaze densities [B, G, G] -> [B, h * w]: pooled onto the feature grid, divided by the sum (zeros stay zeros)."""
    pooled = pool_gaze(gaze, size).flatten(1)
    return pooled / pooled.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(pooled.dtype).tiny)


def kl_gaze_explanation(gaze: torch.Tensor, explanations: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """Mean of ``KL(gaze_b || explanation_bc)`` over the selected (image, class) ``pairs`` [B, C] (0 if none).

    ``gaze`` [B, n] and ``explanations`` [B, C, n] are distributions over the same n cells;
    cells without gaze contribute 0 (``0 log 0 = 0``).
    """
    if not bool(pairs.any()):
        return explanations.sum() * 0.0
    target = gaze.unsqueeze(1).to(explanations.dtype)
    kl = (torch.xlogy(target, target) - target * explanations.log()).sum(dim=-1)  # [B, C]
    return kl[pairs].mean()


def guided_terms(
    adapter: ModelAdapter, images: torch.Tensor, labels: torch.Tensor, gaze: torch.Tensor, smoothing: float = SMOOTHING
) -> tuple[torch.Tensor, torch.Tensor]:
    """(BCE, KL term) of one batch from a single forward pass (see the module docstring)."""
    network = adapter.module
    feature_map = network.feature_map(adapter.preprocess(images))
    bce = class_loss(network.classify(feature_map), labels)
    explanations = explanation_distribution(class_activation_maps(network.classifier, feature_map), smoothing)
    pairs = (labels == 1) & has_gaze(gaze).unsqueeze(1)
    kl = kl_gaze_explanation(gaze_distribution(gaze, feature_map.shape[-2:]), explanations, pairs)
    return bce, kl


def batch_loss(adapter: ModelAdapter, batch: Batch, kl_weight: float, smoothing: float = SMOOTHING) -> torch.Tensor:
    """``mimic_guided``'s training loss of one batch: ``BCE + kl_weight * KL(gaze || explanation)``."""
    bce, kl = guided_terms(adapter, batch.images, batch.labels, batch.gaze, smoothing)
    return bce + kl_weight * kl


load_recipe, default_recipe = recipes.recipe_functions(NAME)  # gazebench/resources/recipes/mimic_guided.yaml


SPEC = MODELS.register(NAME)(
    ModelSpec(
        name=NAME,
        build_adapter=build_adapter,
        default_recipe=default_recipe,
        loss=batch_loss,
        description="Learning How to MIMIC (WACV 2023): DenseNet-121 + KL(gaze || CAM) training loss",
    )
)
