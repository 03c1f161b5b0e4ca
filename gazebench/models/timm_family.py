"""The ``timm:<name>`` family: any model timm knows, trained by gazebench.

A registry prefix (``gazebench.registry.Registry.register_prefix``): the name after the colon
picks the architecture, and the family builds its ``ModelSpec`` on first use.

``timm.create_model(name, pretrained=False, num_classes=len(class_names))`` for any name
``timm.is_model`` knows (tags such as ``convnext_tiny.fb_in1k`` allowed: only the architecture is
used).  Mean/std from the model's ``pretrained_cfg`` (ImageNet for most), ``input_size`` from the
recipe or the checkpoint's config (default 224), weights from a gazebench checkpoint only.  The
``cam_layer`` rule (cam_layer.py) probes ``forward_features`` and picks the module whose output
*is* its result (ConvNeXt ``norm_pre``, EfficientNet ``bn2``); channels-last networks (timm Swin)
need a ``cam_layer`` named by hand.  Recipes: ``gazebench/resources/recipes/generic.yaml``
(shared with ``torchvision:``); loss: BCE with logits, NaN labels left out.
"""

from __future__ import annotations

from gazebench.errors import UserError
from gazebench.models.adapters import (
    DEFAULT_INPUT_SIZE,
    check_class_names,
    open_family_spec,
    probed_adapter,
)
from gazebench.models.base import IMAGENET_MEAN, IMAGENET_STD, ModelAdapter
from gazebench.models.spec import ModelSpec
from gazebench.registry import MODELS, choices_phrase


def build_timm_adapter(
    arch: str,
    class_names,
    input_size: int = DEFAULT_INPUT_SIZE,
    state_dict: dict | None = None,
    cam_layer: str | None = None,
) -> ModelAdapter:
    """A ``timm:<arch>`` adapter: random weights, or ``state_dict`` (a gazebench checkpoint's)."""
    import timm

    name = f"timm:{arch}"
    network = timm.create_model(arch, pretrained=False, num_classes=len(check_class_names(class_names, name)))
    if str(getattr(network, "output_fmt", "NCHW")) not in ("NCHW", "Format.NCHW") and not cam_layer:
        raise UserError(f"{name}: its features are channels-last ({network.output_fmt}); Grad-CAM needs channels first; give cam_layer by hand with gazebench.api.wrap_model")
    pretrained = getattr(network, "pretrained_cfg", None) or {}
    mean = tuple(pretrained.get("mean", IMAGENET_MEAN))
    std = tuple(pretrained.get("std", IMAGENET_STD))
    return probed_adapter(network, name, class_names, input_size, state_dict, cam_layer, mean, std, probe=network.forward_features)


@MODELS.register_prefix("timm", placeholder="name")
def timm_family(arch: str) -> ModelSpec:
    """The spec of ``timm:<arch>``; a name timm does not know is refused (with close matches)."""
    import timm

    if not timm.is_model(arch):
        raise LookupError(f"timm has no model {arch!r}; {choices_phrase(timm.list_models(), arch, listing='timm.list_models()')}")
    return open_family_spec("timm", arch, build_timm_adapter)
