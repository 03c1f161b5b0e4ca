"""The ``cam_layer`` rule: which module of a foreign network Grad-CAM and the other layer methods use.

``find_cam_layer``
    Run the network once on a blank input (eval mode, no gradients) with a forward hook on
    every module, and take the last module to *finish* whose output is a 4-D tensor with more
    than one spatial cell and that is not an adaptive pooling layer: the deepest feature map
    before global pooling (pooled maps are 1 x 1; VGG's ``AdaptiveAvgPool2d((7, 7))`` only
    resamples ``features``; when nested modules return the same map, the outermost finishes
    last).  For timm models the probe runs ``forward_features`` instead, and the module whose
    output *is* that result is picked.  Examples: ResNet ``layer4``, DenseNet ``features``
    (torchvision applies its final ReLU functionally, so the rule cannot see it), VGG,
    EfficientNet, MobileNet and ConvNeXt ``features`` (torchvision), ConvNeXt ``norm_pre`` and
    EfficientNet ``bn2`` (timm), Swin ``permute`` (torchvision), Inception-v3 ``Mixed_7c``.
    The probe input is ``max(input_size, 64)`` pixels, so that stride-32 networks keep a map
    larger than 1 x 1.  Networks whose last features are not a channels-first 4-D map (ViTs:
    token sequences follow the patch embedding; timm Swin: channels last) or come from a module
    used more than once are refused with a UserError: give their ``cam_layer`` by hand with
    ``gazebench.api.wrap_model``.

``named_cam_layer``
    A ``cam_layer`` model option (a dotted module name, e.g. ``features.denseblock4``) overrides
    the rule; ``pick_cam_layer`` chooses between the two.

The seed studies' networks and ``xrv:`` networks have fixed wrappers, so their layer is set
directly (their ``cam_layer`` property; tests check the rule agrees for ``xrv:``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from gazebench.errors import UserError

MIN_PROBE_SIZE = 64


@dataclass
class ProbeRecord:
    """One module output seen by the probe (a summary: the probe keeps no tensors alive)."""

    name: str
    module: nn.Module
    shape: tuple[int, ...]
    storage: tuple[int, tuple[int, ...]]  # (data pointer, shape): which tensor it was


POOLING_TYPES = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)  # resample a map to a fixed size: not a feature map


def tensor_key(tensor: torch.Tensor) -> tuple[int, tuple[int, ...]]:
    return tensor.data_ptr(), tuple(tensor.shape)


def is_feature_map(record: ProbeRecord) -> bool:
    """A 4-D output with more than one spatial cell, not from an adaptive pooling layer.

    Global pooling gives 1 x 1 maps; VGG's ``AdaptiveAvgPool2d((7, 7))`` resamples the last
    feature map to 7 x 7, which is still the ``features`` output underneath.
    """
    shape = record.shape
    return len(shape) == 4 and shape[-1] * shape[-2] > 1 and not isinstance(record.module, POOLING_TYPES)


def probe_outputs(network: nn.Module, inputs: torch.Tensor, run: Callable[[torch.Tensor], object] | None = None):
    """(tensor outputs of every module in finishing order, calls per module, what ``run`` returned).

    Runs in eval mode without gradients; every module's training flag is restored after.
    """
    records: list[ProbeRecord] = []
    calls: dict[nn.Module, int] = {}
    names = {module: name for name, module in network.named_modules()}

    def hook(module, args, output):
        calls[module] = calls.get(module, 0) + 1
        if isinstance(output, torch.Tensor):
            records.append(ProbeRecord(names[module], module, tuple(output.shape), tensor_key(output)))

    handles = [module.register_forward_hook(hook) for module in names if module is not network]
    modes = {module: module.training for module in names}
    try:
        network.eval()
        with torch.no_grad():
            result = (run or network)(inputs)
    finally:
        for handle in handles:
            handle.remove()
        for module, mode in modes.items():
            module.training = mode
    return records, calls, result


def find_cam_layer(
    network: nn.Module,
    input_size: int,
    channels: int = 3,
    run: Callable[[torch.Tensor], object] | None = None,
    model_name: str = "model",
) -> nn.Module:
    """The deepest feature-map module of ``network`` (the rule in the module docstring).

    ``run`` replaces ``network.forward`` for the probe (timm: ``forward_features``); the last
    module whose output is what ``run`` returns is then preferred.
    """
    size = max(input_size, MIN_PROBE_SIZE)
    try:
        records, calls, result = probe_outputs(network, torch.zeros(1, channels, size, size), run)
    except Exception as error:  # noqa: BLE001 - any failure of a foreign network is reported the same way
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"{model_name}: cannot run the network on a {size}x{size} input to find its cam_layer ({first})") from None
    hint = "give it by hand with gazebench.api.wrap_model(..., cam_layer=...) or the cam_layer model option"
    positions = [index for index, record in enumerate(records) if is_feature_map(record)]
    if run is not None:  # timm forward_features: its output must be a feature map, and its module is preferred
        if not (isinstance(result, torch.Tensor) and result.dim() == 4):
            positions = []
        else:
            positions = [index for index in positions if records[index].storage == tensor_key(result)] or positions
    if not positions:
        raise UserError(f"{model_name}: its last features are not a 4-D feature map (a transformer?), so Grad-CAM has no layer; {hint}")
    chosen = records[positions[-1]]
    if any(len(record.shape) == 3 for record in records[positions[-1] + 1 :]):
        raise UserError(f"{model_name}: token sequences follow its last 4-D map {chosen.name!r} (a transformer?), so Grad-CAM has no layer; {hint}")
    if calls[chosen.module] > 1:
        raise UserError(f"{model_name}: its last feature map comes from {chosen.name!r}, a module used {calls[chosen.module]} times per forward pass; {hint}")
    return chosen.module


def named_cam_layer(network: nn.Module, dotted: str, model_name: str) -> nn.Module:
    """The module called ``dotted`` inside ``network`` (the ``cam_layer`` model option)."""
    try:
        return network.get_submodule(dotted)
    except AttributeError:
        children = ", ".join(name for name, _ in network.named_children())
        raise UserError(f"{model_name}: no module {dotted!r} for cam_layer; top-level modules: {children}") from None


def pick_cam_layer(network: nn.Module, cam_layer: str | None, model_name: str, input_size: int, channels: int = 3, run=None) -> nn.Module:
    """The module called ``cam_layer`` when one is named, else the one ``find_cam_layer`` finds."""
    return named_cam_layer(network, cam_layer, model_name) if cam_layer else find_cam_layer(network, input_size, channels, run, model_name)
