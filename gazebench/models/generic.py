"""Generic model families: ``torchvision:<name>``, ``timm:<name>`` and ``xrv:<weights>``.

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
    (same function, same parameters and state-dict keys).  DeepLift's attributions then sum to
    f(x) - f(baseline) for the zero baseline; for others (``black``) Captum's rule for the
    stem's ``MaxPool2d`` is not exact (measured on ResNet-18: 0.036 vs 0.079), which holds for
    every network with max pooling, torchxrayvision's DenseNet included.

``timm:<name>``
    ``timm.create_model(name, pretrained=False, num_classes=len(class_names))`` for any name
    ``timm.is_model`` knows (tags such as ``convnext_tiny.fb_in1k`` allowed: only the
    architecture is used).  Mean/std from the model's ``pretrained_cfg`` (ImageNet for most),
    ``input_size`` as above, weights from a gazebench checkpoint only.

``xrv:<weights>``
    A pretrained torchxrayvision classifier by its weights name (``densenet121-res224-all``,
    ``densenet121-res224-mimic_ch``, ``resnet50-res512-all``, ... : the names in
    ``torchxrayvision.models.model_urls`` that start with ``densenet`` or ``resnet``).  It is
    built with ``torchxrayvision.models.get_model(weights, cache_dir=...)`` only when the
    weights file is already on disk: in torchxrayvision's cache folder
    (``~/.torchxrayvision/models_data/<file>``) or at a local path given by ``--checkpoint``
    or ``weights_path`` (a file of any name, or a folder holding the file).  Otherwise a
    one-line UserError names the file, the folder and the URL to fetch it from; nothing is
    ever downloaded.  See ``XRVClassifier`` for how the network is wrapped: raw logits (not
    torchxrayvision's operating-point outputs), empty-named outputs dropped, a distinct final
    ``nn.ReLU`` module.  Preprocessing is torchxrayvision's: 1 channel, its resolution
    (``input_resolution``: 224 or 512; ``input_size`` overrides it), and
    ``xrv.utils.normalize(img, maxval=1)`` = ``(2 img - 1) * 1024``, which is exactly the
    adapter's ``(img - mean) / std`` with mean 0.5 and std 1/2048 (so ``ModelAdapter`` needs no
    change).  ``random_weights: true`` builds the same network with random weights and no file
    (tests only).  These models are not trained by gazebench: ``default_recipe`` refuses.

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
import os
import tempfile
import types
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from gazebench.data.sample import Batch
from gazebench.errors import UserError
from gazebench.models import recipes
from gazebench.models.base import IMAGENET_MEAN, IMAGENET_STD, ModelAdapter
from gazebench.models.spec import ModelSpec
from gazebench.registry import MODELS, choices_phrase

RECIPE_FILE = "generic"  # baselines/generic.yaml, shared by the torchvision and timm families
DEFAULT_INPUT_SIZE = 224
MIN_PROBE_SIZE = 64
TORCHVISION_AUX_HEADS = ("googlenet", "inception_v3")  # built with aux_logits=False
XRV_MEAN = (0.5,)  # (img - 0.5) / (1 / 2048) = (2 img - 1) * 1024 = xrv.utils.normalize(img, maxval=1)
XRV_STD = (1 / 2048,)


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
    Captum's DeepLift raises on a module used more than once.  The new modules have no
    parameters, so outputs, parameters and state-dict keys are unchanged.
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


# ----------------------------------------------------------------------------- xrv:<weights>


def xrv_models():
    """``torchxrayvision.models``, imported without its process-wide ``warnings.filterwarnings("ignore")``."""
    with warnings.catch_warnings():
        import torchxrayvision

    return torchxrayvision.models


def xrv_weights_names() -> list[str]:
    """The weights names ``xrv.models.get_model`` accepts (the model_urls keys it can build)."""
    return sorted(key for key in xrv_models().model_urls if key.startswith(("densenet", "resnet")))


def xrv_cache_dir() -> Path:
    """torchxrayvision's weights folder (``xrv.utils.get_cache_dir()``: ~/.torchxrayvision/models_data)."""
    with warnings.catch_warnings():
        from torchxrayvision import utils

    return Path(utils.get_cache_dir())


def xrv_weights_file(weights: str) -> tuple[str, str]:
    """(file name, URL) of the weights, as torchxrayvision's ``get_weights`` derives them."""
    url = xrv_models().model_urls[weights]["weights_url"]
    return os.path.basename(url), url


def xrv_missing(weights: str, given: Path | None = None) -> UserError:
    """The one-line error for a weights file that is not on disk: the file, xrv's folder, the URL."""
    filename, url = xrv_weights_file(weights)
    folder = xrv_cache_dir()
    where = f"no file {given}, and " if given is not None else ""
    return UserError(
        f"weights of xrv:{weights} not found: {where}torchxrayvision's cache folder {folder} has no file {filename}; "
        f"fetch {url} into that folder, or give its local path with --checkpoint (weights_path); gazebench never downloads"
    )


def resolve_xrv_weights(weights: str, weights_path: str | os.PathLike | None) -> Path:
    """The local weights file: ``weights_path`` (a file, or a folder holding the file) or the xrv cache."""
    filename, _ = xrv_weights_file(weights)
    if weights_path is None:
        candidate = xrv_cache_dir() / filename
        if not candidate.is_file():
            raise xrv_missing(weights)
        return candidate
    given = Path(weights_path).expanduser()
    candidate = given / filename if given.is_dir() else given
    if not candidate.is_file():
        raise xrv_missing(weights, candidate)
    return candidate


def load_xrv_network(weights: str, path: Path) -> nn.Module:
    """torchxrayvision's own loader on a local file (a symlink under the expected name when it differs)."""
    filename, _ = xrv_weights_file(weights)
    models = xrv_models()
    with tempfile.TemporaryDirectory() as folder:
        if path.name == filename:
            cache_dir = str(path.parent)
        else:
            os.symlink(path.resolve(), Path(folder) / filename)
            cache_dir = folder
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return models.get_model(weights, cache_dir=cache_dir)
        except Exception as error:  # noqa: BLE001 - xrv raises bare Exceptions for unreadable files
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise UserError(f"cannot load torchxrayvision weights {path} for xrv:{weights} ({first}); fetch the file again") from None


def random_xrv_network(weights: str) -> nn.Module:
    """The architecture of ``weights`` with random weights and the 18 default outputs (tests only)."""
    models = xrv_models()
    if weights.startswith("densenet"):
        return models.DenseNet(weights=None, num_classes=len(models.model_urls[weights]["labels"]))
    import torchvision

    network = torchvision.models.resnet50(weights=None, num_classes=len(models.model_urls[weights]["labels"]))
    network.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)  # as xrv's ResNet
    holder = nn.Module()
    holder.model = network
    return holder


def kept_rows(linear: nn.Linear, keep: list[int]) -> nn.Linear:
    """A Linear layer with only the ``keep`` output rows of ``linear`` (same values)."""
    selected = nn.Linear(linear.in_features, len(keep), bias=linear.bias is not None)
    with torch.no_grad():
        selected.weight.copy_(linear.weight[keep])
        if linear.bias is not None:
            selected.bias.copy_(linear.bias[keep])
    return selected


class XRVClassifier(nn.Module):
    """A torchxrayvision classifier as raw class logits, with only its named outputs.

    * Logits, not torchxrayvision's outputs: xrv's ``forward`` turns logits into
      operating-point-normalised probabilities (``op_norm``) when weights are loaded; here the
      classifier's raw logits are the output, so gradients and DeepLift explain the logit and
      ``sigmoid`` gives the (uncalibrated) probability.
    * Empty-named outputs are dropped: several weights (``nih``, ``chex``, ``mimic_ch``, ...)
      leave some of their 18 outputs untrained and name them ``""``; their rows are removed
      from the final Linear layer, so ``class_names`` is ``[p for p in pathologies if p]``.
    * DenseNet: ``features -> nn.ReLU module -> average pool -> classifier`` (xrv applies an
      in-place functional ``F.relu``, which DeepLift has no rule for); ResNet: xrv's
      torchvision ResNet-50 with ``distinct_block_relus``.  No resize inside: the adapter
      resizes to the model's resolution before the network sees the image.
    """

    def __init__(self, xrv_network: nn.Module, pathologies: list[str]):
        super().__init__()
        keep = [index for index, name in enumerate(pathologies) if name]
        self.class_names = [pathologies[index] for index in keep]
        if isinstance(getattr(xrv_network, "features", None), nn.Module):  # xrv DenseNet
            self.kind = "densenet"
            self.features = xrv_network.features
            self.relu = nn.ReLU()  # not in place: its output is the map hooks keep (the cam_layer)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.flatten = nn.Flatten()
            self.classifier = kept_rows(xrv_network.classifier, keep)
        else:  # xrv ResNet: a torchvision ResNet with a 1-channel stem in .model
            self.kind = "resnet"
            self.model = distinct_block_relus(xrv_network.model)
            self.model.fc = kept_rows(self.model.fc, keep)

    @property
    def cam_layer(self) -> nn.Module:
        """What the cam_layer rule finds (tested), without its probe: the final ReLU / ``layer4``."""
        return self.relu if self.kind == "densenet" else self.model.layer4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised 1-channel input [B, 1, S, S] in [-1024, 1024] -> logits [B, C]."""
        if self.kind == "densenet":
            return self.classifier(self.flatten(self.pool(self.relu(self.features(x)))))
        return self.model(x)


def build_xrv_adapter(
    weights: str,
    class_names=None,
    state_dict: dict | None = None,
    weights_path: str | os.PathLike | None = None,
    random_weights: bool = False,
    input_size: int | None = None,
) -> ModelAdapter:
    """An ``xrv:<weights>`` adapter from the local weights file (or ``state_dict``, or random weights for tests)."""
    name = f"xrv:{weights}"
    info = xrv_models().model_urls[weights]
    pathologies = list(info["labels"])
    if state_dict is not None or random_weights:
        network = XRVClassifier(random_xrv_network(weights), pathologies)
        load_weights(network, state_dict, name)
        source = "state_dict" if state_dict is not None else "random"
    else:
        path = resolve_xrv_weights(weights, weights_path)
        network = XRVClassifier(load_xrv_network(weights, path), pathologies)
        source = str(path)
    if class_names is not None and list(class_names) != network.class_names:
        raise UserError(f"{name} predicts {network.class_names}, not {list(class_names)}; map the data's classes with a label map")
    input_size = int(input_size or info.get("input_resolution", DEFAULT_INPUT_SIZE))
    return ModelAdapter(
        name=name,
        module=network.eval(),
        class_names=network.class_names,
        cam_layer=network.cam_layer,
        input_size=input_size,
        mean=XRV_MEAN,
        std=XRV_STD,
        config={"input_size": input_size, "weights": weights, "weights_source": source},
    )


def xrv_no_training(weights: str) -> Callable[[str], dict]:
    def default_recipe(dataset: str) -> dict:
        raise UserError(
            f"xrv:{weights} is a pretrained torchxrayvision model and gazebench does not train it; "
            f"run it directly: gazebench run --model xrv:{weights} --data {dataset}"
        )

    return default_recipe


@dataclass(frozen=True)
class PretrainedModelSpec(ModelSpec):
    """A spec whose weights come from outside gazebench (``open_for_run(checkpoint)`` finds them)."""

    open_for_run: Callable[..., tuple[ModelAdapter, Path | None, str]] | None = None


def is_gazebench_checkpoint(path: Path) -> bool:
    """True for a file written by ``gazebench.models.checkpoint.save_checkpoint``."""
    from gazebench.models.checkpoint import FORMAT, READ_ERRORS

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except READ_ERRORS:
        return False
    except Exception:  # noqa: BLE001 - e.g. pickled modules refused by weights_only
        return False
    return isinstance(payload, dict) and payload.get("format") == FORMAT


def open_xrv_for_run(weights: str, checkpoint: str | os.PathLike | None = None) -> tuple[ModelAdapter, Path, str]:
    """(adapter, weights file, its sha256) for ``gazebench run --model xrv:<weights> [--checkpoint PATH]``.

    ``checkpoint`` may be a gazebench checkpoint of this model, torchxrayvision's weights file
    (any name) or a folder holding it; without it, torchxrayvision's cache folder is used.
    """
    from gazebench.models.checkpoint import adapter_from_checkpoint, sha256_file

    name = f"xrv:{weights}"
    if checkpoint is not None and Path(checkpoint).is_file() and is_gazebench_checkpoint(Path(checkpoint)):
        return adapter_from_checkpoint(checkpoint, expected_model=name), Path(checkpoint), sha256_file(checkpoint)
    path = resolve_xrv_weights(weights, checkpoint)
    return build_xrv_adapter(weights, weights_path=path), path, sha256_file(path)


@MODELS.register_prefix("xrv", placeholder="weights")
def xrv_family(weights: str) -> PretrainedModelSpec:
    """The spec of ``xrv:<weights>``; weights names torchxrayvision does not know are refused."""
    names = xrv_weights_names()
    if weights not in names:
        raise LookupError(f"torchxrayvision has no weights {weights!r}; {choices_phrase(names, weights)}")
    return PretrainedModelSpec(
        name=f"xrv:{weights}",
        build_adapter=partial(build_xrv_adapter, weights),
        default_recipe=xrv_no_training(weights),
        loss=class_loss,
        description=f"torchxrayvision {weights} (pretrained; weights file from its cache or --checkpoint)",
        open_for_run=partial(open_xrv_for_run, weights),
    )


def state_dict_sha256(module: nn.Module) -> str:
    """SHA-256 of a module's state dict (names, dtypes, shapes, bytes): identifies in-memory weights."""
    digest = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{key}|{flat.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return digest.hexdigest()
