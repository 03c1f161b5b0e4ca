"""Generic model families: ``torchvision:<name>`` and ``timm:<name>`` (``xrv:<weights>``: xrv.py).

Each family is a registry prefix (``gazebench.registry.Registry.register_prefix``): the name
after the colon picks the architecture, and the family builds its ``ModelSpec`` on first use.

``torchvision:<name>``
    ``torchvision.models.get_model(name, weights=None, num_classes=len(class_names))``, any
    classification model torchvision lists (``torchvision.models.list_models(module=
    torchvision.models)``).  ImageNet mean/std, 3 channels, ``input_size`` from the recipe or
    the checkpoint's config (default 224).  Weights come from a gazebench checkpoint
    (``--checkpoint``, made by ``gazebench train --model torchvision:<name>``); random weights
    are only for tests and for the start of training.  ``googlenet`` and ``inception_v3`` are
    built without their auxiliary heads (``aux_logits=False``), so training sees plain logits.
    torchvision's ResNet blocks reuse one ``nn.ReLU`` two or three times per block, which
    Captum's DeepLift cannot handle; ``distinct_block_relus`` gives every use its own module
    (same function, same parameters and state-dict keys), and puts a ``TensorSeparator`` before the
    stem's max pool; with gazebench's corrected max-pool rule (methods/deeplift.py) DeepLift's
    attributions then sum to f(x) - f(baseline).

``timm:<name>``
    ``timm.create_model(name, pretrained=False, num_classes=len(class_names))`` for any name
    ``timm.is_model`` knows (tags such as ``convnext_tiny.fb_in1k`` allowed: only the
    architecture is used).  Mean/std from the model's ``pretrained_cfg`` (ImageNet for most),
    ``input_size`` as above, weights from a gazebench checkpoint only.

The ``cam_layer`` rule (``find_cam_layer``)
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
    ``gazebench.api.wrap_model``.  A ``cam_layer`` model option (a dotted module name, e.g.
    ``features.denseblock4``) overrides the rule.  ``xrv:`` networks have a fixed wrapper, so
    their layer is set directly (``XRVClassifier.cam_layer``; tests check the rule agrees).
"""

from __future__ import annotations

import hashlib
import types
from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from gazebench.data.sample import Batch
from gazebench.errors import UserError
from gazebench.models import recipes
from gazebench.models.base import IMAGENET_MEAN, IMAGENET_STD, ModelAdapter, TensorSeparator
from gazebench.models.spec import ModelSpec
from gazebench.registry import MODELS, choices_phrase

RECIPE_FILE = "generic"  # baselines/generic.yaml, shared by the torchvision and timm families
DEFAULT_INPUT_SIZE = 224
MIN_PROBE_SIZE = 64
TORCHVISION_AUX_HEADS = ("googlenet", "inception_v3")  # built with aux_logits=False


# ----------------------------------------------------------------------------- the cam_layer rule


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


# ----------------------------------------------------------------------------- DeepLift-ready ResNet blocks


def _basic_block_forward(self, x: torch.Tensor) -> torch.Tensor:
    """torchvision ``BasicBlock.forward`` with a distinct ReLU module per use."""
    identity = x if self.downsample is None else self.downsample(x)
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    return self.relu_out(out + identity)


def _bottleneck_forward(self, x: torch.Tensor) -> torch.Tensor:
    """torchvision ``Bottleneck.forward`` with a distinct ReLU module per use."""
    identity = x if self.downsample is None else self.downsample(x)
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.relu_mid(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    return self.relu_out(out + identity)


def distinct_block_relus(network: nn.Module) -> nn.Module:
    """Give every ReLU use in torchvision ResNet blocks its own ``nn.ReLU`` (in place, returns ``network``).

    torchvision's ``BasicBlock`` / ``Bottleneck`` call ``self.relu`` two / three times, and
    Captum's DeepLift raises on a module used more than once.  The stem's max pool gets a
    ``TensorSeparator`` in front, so that the ReLU before it gets the pool's multipliers.  The new
    modules have no parameters, so outputs, parameters and state-dict keys are unchanged.
    """
    from torchvision.models.resnet import BasicBlock, Bottleneck

    for block in network.modules():
        kind = type(block)
        if kind is BasicBlock:
            block.relu_out = nn.ReLU(inplace=True)
            block.forward = types.MethodType(_basic_block_forward, block)
        elif kind is Bottleneck:
            block.relu_mid = nn.ReLU(inplace=True)
            block.relu_out = nn.ReLU(inplace=True)
            block.forward = types.MethodType(_bottleneck_forward, block)
    if isinstance(getattr(network, "maxpool", None), nn.MaxPool2d):  # the stem's relu feeds maxpool directly
        network.maxpool = nn.Sequential(TensorSeparator(), network.maxpool)
    return network


# ----------------------------------------------------------------------------- shared pieces


def class_loss(adapter: ModelAdapter, batch: Batch) -> torch.Tensor:
    """BCE with logits against the label vectors [B, C], mean over the known entries (NaN left out)."""
    logits = adapter.logits(batch.images)
    known = ~batch.labels.isnan()
    if not bool(known.any()):
        return logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(logits[known], batch.labels[known].to(logits.dtype))


def generic_recipe(dataset: str) -> dict:
    """``embedded`` (CPU-sized) for the synthetic dataset, ``default`` for real ones (baselines/generic.yaml)."""
    return recipes.load_recipe(RECIPE_FILE, "embedded" if dataset == "synth" else "default")


def pick_cam_layer(network: nn.Module, cam_layer: str | None, model_name: str, input_size: int, channels: int = 3, run=None) -> nn.Module:
    return named_cam_layer(network, cam_layer, model_name) if cam_layer else find_cam_layer(network, input_size, channels, run, model_name)


def load_weights(network: nn.Module, state_dict: dict | None, model_name: str) -> None:
    if state_dict is None:
        return
    try:
        network.load_state_dict(state_dict)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0]
        raise UserError(f"the weights do not fit {model_name}: {first}") from None


def check_classes(class_names) -> list[str]:
    names = list(class_names or [])
    if not names or len(set(names)) != len(names):
        raise UserError(f"class names must be a non-empty list without repeats, got {names}")
    return names


# ----------------------------------------------------------------------------- torchvision:<name>


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
    name = f"torchvision:{arch}"
    class_names = check_classes(class_names)
    network = build_torchvision_network(arch, len(class_names))
    load_weights(network, state_dict, name)
    return ModelAdapter(
        name=name,
        module=network,
        class_names=class_names,
        cam_layer=pick_cam_layer(network, cam_layer, name, input_size),
        input_size=input_size,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        config={"input_size": input_size, "cam_layer": cam_layer},
    )


@MODELS.register_prefix("torchvision", placeholder="name")
def torchvision_family(arch: str) -> ModelSpec:
    """The spec of ``torchvision:<arch>``; an architecture torchvision does not list is refused."""
    names = torchvision_names()
    if arch not in names:
        raise LookupError(f"torchvision has no classification model {arch!r}; {choices_phrase(names, arch, limit=100)}")
    return ModelSpec(
        name=f"torchvision:{arch}",
        build_adapter=partial(build_torchvision_adapter, arch),
        default_recipe=generic_recipe,
        loss=class_loss,
        description=f"torchvision {arch} (random init; weights from a gazebench checkpoint), BCE",
    )


# ----------------------------------------------------------------------------- timm:<name>


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
    class_names = check_classes(class_names)
    network = timm.create_model(arch, pretrained=False, num_classes=len(class_names))
    load_weights(network, state_dict, name)
    if str(getattr(network, "output_fmt", "NCHW")) not in ("NCHW", "Format.NCHW") and not cam_layer:
        raise UserError(f"{name}: its features are channels-last ({network.output_fmt}); Grad-CAM needs channels first; give cam_layer by hand with gazebench.api.wrap_model")
    config = getattr(network, "pretrained_cfg", None) or {}
    mean = tuple(config.get("mean", IMAGENET_MEAN))
    std = tuple(config.get("std", IMAGENET_STD))
    return ModelAdapter(
        name=name,
        module=network,
        class_names=class_names,
        cam_layer=pick_cam_layer(network, cam_layer, name, input_size, len(mean), run=network.forward_features),
        input_size=input_size,
        mean=mean,
        std=std,
        config={"input_size": input_size, "cam_layer": cam_layer},
    )


@MODELS.register_prefix("timm", placeholder="name")
def timm_family(arch: str) -> ModelSpec:
    """The spec of ``timm:<arch>``; a name timm does not know is refused (with close matches)."""
    import timm

    if not timm.is_model(arch):
        raise LookupError(f"timm has no model {arch!r}; {choices_phrase(timm.list_models(), arch, listing='timm.list_models()')}")
    return ModelSpec(
        name=f"timm:{arch}",
        build_adapter=partial(build_timm_adapter, arch),
        default_recipe=generic_recipe,
        loss=class_loss,
        description=f"timm {arch} (random init; weights from a gazebench checkpoint), BCE",
    )


def state_dict_sha256(module: nn.Module) -> str:
    """SHA-256 of a module's state dict (names, dtypes, shapes, bytes): identifies in-memory weights."""
    digest = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{key}|{flat.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return digest.hexdigest()
