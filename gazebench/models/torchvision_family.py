"""The ``torchvision:<name>`` family: any classification model torchvision lists, trained by gazebench.

A registry prefix (``gazebench.registry.Registry.register_prefix``): the name after the colon
picks the architecture, and the family builds its ``ModelSpec`` on first use.

``torchvision.models.get_model(name, weights=None, num_classes=len(class_names))``, any
classification model torchvision lists (``torchvision.models.list_models(module=
torchvision.models)``).  ImageNet mean/std, 3 channels, ``input_size`` from the recipe or the
checkpoint's config (default 224).  Weights come from a gazebench checkpoint (``--checkpoint``,
made by ``gazebench train --model torchvision:<name>``); random weights are only for tests and
for the start of training.  ``googlenet`` and ``inception_v3`` are built without their auxiliary
heads (``aux_logits=False``), so training sees plain logits.  torchvision's ResNet blocks reuse
one ``nn.ReLU`` two or three times per block, which Captum's DeepLift cannot handle;
``captum_compat.distinct_block_relus`` gives every use its own module (same function, same
parameters and state-dict keys).  The ``cam_layer`` is found by the rule of cam_layer.py, or
named with the ``cam_layer`` model option.  Recipes: ``gazebench/resources/recipes/generic.yaml``
(shared with ``timm:``); loss: BCE with logits, NaN labels left out.
"""

from __future__ import annotations

from torch import nn

from gazebench.models.adapters import (
    DEFAULT_INPUT_SIZE,
    check_class_names,
    open_family_spec,
    probed_adapter,
)
from gazebench.models.base import ModelAdapter
from gazebench.models.captum_compat import distinct_block_relus
from gazebench.models.spec import ModelSpec
from gazebench.registry import MODELS, choices_phrase

TORCHVISION_AUX_HEADS = ("googlenet", "inception_v3")  # built with aux_logits=False


def torchvision_names() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def build_torchvision_network(arch: str, n_classes: int) -> nn.Module:
    import torchvision

    options = {"aux_logits": False, "init_weights": True} if arch in TORCHVISION_AUX_HEADS else {}
    network = torchvision.models.get_model(arch, weights=None, num_classes=n_classes, **options)
    return distinct_block_relus(network)


def build_torchvision_adapter(
    arch: str,
    class_names,
    input_size: int = DEFAULT_INPUT_SIZE,
    state_dict: dict | None = None,
    cam_layer: str | None = None,
) -> ModelAdapter:
    """A ``torchvision:<arch>`` adapter: random weights, or ``state_dict`` (a gazebench checkpoint's)."""
    network = build_torchvision_network(arch, len(check_class_names(class_names, f"torchvision:{arch}")))
    return probed_adapter(network, f"torchvision:{arch}", class_names, input_size, state_dict, cam_layer)


@MODELS.register_prefix("torchvision", placeholder="name")
def torchvision_family(arch: str) -> ModelSpec:
    """The spec of ``torchvision:<arch>``; an architecture torchvision does not list is refused."""
    names = torchvision_names()
    if arch not in names:
        raise LookupError(f"torchvision has no classification model {arch!r}; {choices_phrase(names, arch, limit=100)}")
    return open_family_spec("torchvision", arch, build_torchvision_adapter)
