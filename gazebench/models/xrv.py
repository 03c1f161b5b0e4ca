"""The ``xrv:<weights>`` family: pretrained torchxrayvision classifiers, never downloaded.

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
(tests only).  These models are not trained by gazebench: their spec declares no
``default_recipe`` (``gazebench train`` refuses in one line) and an ``open_for_run`` that finds
the weights file for ``gazebench run``.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from functools import partial
from pathlib import Path

import torch
from torch import nn

from gazebench.errors import UserError
from gazebench.models.adapters import DEFAULT_INPUT_SIZE, network_adapter
from gazebench.models.base import ModelAdapter
from gazebench.models.captum_compat import distinct_block_relus
from gazebench.models.losses import classification_loss
from gazebench.models.spec import ModelSpec
from gazebench.registry import MODELS, choices_phrase

XRV_MEAN = (0.5,)  # (img - 0.5) / (1 / 2048) = (2 img - 1) * 1024 = xrv.utils.normalize(img, maxval=1)
XRV_STD = (1 / 2048,)


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


# what a torchxrayvision weights file may reference besides torch's own weights-only allowlist:
# module classes, rebuilt without calling anything else (its loader unpickles the whole file)
XRV_SAFE_PREFIXES = ("torch.nn.modules.", "torchxrayvision.models.", "torchxrayvision.baseline_models.", "torchvision.models.", "collections.OrderedDict", "builtins.set")


def check_xrv_file(path: Path, weights: str) -> None:
    """Refuse, before torchxrayvision unpickles it (``torch.load(weights_only=False)``), a file that
    references anything but module classes: such a file could run code when loaded."""
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception as error:  # noqa: BLE001 - whatever the file is, it cannot be checked
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"cannot check torchxrayvision weights {path} for xrv:{weights} ({first}); it is not a torch.save file gazebench can inspect safely: fetch the file again") from None
    foreign = sorted(name for name in unsafe if not name.startswith(XRV_SAFE_PREFIXES))
    if foreign:
        raise UserError(f"refusing torchxrayvision weights {path} for xrv:{weights}: loading it would call {', '.join(foreign[:3])}, which is no model class (the file may run code); fetch the file again from torchxrayvision's release")


def load_xrv_network(weights: str, path: Path) -> nn.Module:
    """torchxrayvision's own loader on a local file (a symlink under the expected name when it differs),
    after ``check_xrv_file``: the loader unpickles the file, so what it references is checked first."""
    check_xrv_file(path, weights)
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
        source = "state_dict" if state_dict is not None else "random"
    else:
        path = resolve_xrv_weights(weights, weights_path)
        network = XRVClassifier(load_xrv_network(weights, path), pathologies)
        source = str(path)
    if class_names is not None and list(class_names) != network.class_names:
        raise UserError(f"{name} predicts {network.class_names}, not {list(class_names)}; map the data's classes with a label map")
    input_size = int(input_size or info.get("input_resolution", DEFAULT_INPUT_SIZE))
    config = {"input_size": input_size, "weights": weights, "weights_source": source}
    return network_adapter(network.eval(), name, network.class_names, config, state_dict, mean=XRV_MEAN, std=XRV_STD)


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
def xrv_family(weights: str) -> ModelSpec:
    """The spec of ``xrv:<weights>``; weights names torchxrayvision does not know are refused."""
    names = xrv_weights_names()
    if weights not in names:
        raise LookupError(f"torchxrayvision has no weights {weights!r}; {choices_phrase(names, weights)}")
    return ModelSpec(
        name=f"xrv:{weights}",
        build_adapter=partial(build_xrv_adapter, weights),
        default_recipe=None,
        not_trained="a pretrained torchxrayvision model",
        loss=classification_loss,
        description=f"torchxrayvision {weights} (pretrained; weights file from its cache or --checkpoint)",
        open_for_run=partial(open_xrv_for_run, weights),
    )
