"""Turning a network into a ``ModelAdapter``: one place checks class names and weights.

Every model module builds its ``nn.Module`` and hands it to ``network_adapter``, which checks
the class names, loads the state dict (one clear ``WeightsDoNotFit`` when it does not fit the
network) and returns the adapter with the network's ``cam_layer``.  The open families
(``torchvision:``, ``timm:``) use ``probed_adapter``: the same, with the ``cam_layer`` model
option or the layer the rule of cam_layer.py finds, and ``open_family_spec`` for their specs.  ``check_input_size`` is the
one "positive multiple of N" rule of the networks whose feature grid must tile the input.
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Sequence

from torch import nn

from gazebench.errors import UserError
from gazebench.models.base import IMAGENET_MEAN, IMAGENET_STD, ModelAdapter
from gazebench.models.cam_layer import pick_cam_layer
from gazebench.models.losses import classification_loss
from gazebench.models.spec import ModelSpec
from gazebench.models.training.recipes import generic_recipe

DEFAULT_INPUT_SIZE = 224  # the open families' input size when neither the recipe nor the checkpoint gives one


class WeightsDoNotFit(UserError):
    """A state dict whose keys or shapes are not the network's; ``reason`` is torch's first line."""

    def __init__(self, model_name: str, reason: str):
        super().__init__(f"the weights do not fit {model_name}: {reason}")
        self.reason = reason


def check_input_size(model_name: str, input_size: int, multiple: int) -> None:
    """Input sizes must be positive multiples of ``multiple``, so the feature grid tiles the image exactly."""
    if input_size <= 0 or input_size % multiple:
        raise UserError(f"{model_name}: input_size must be a positive multiple of {multiple}, got {input_size}")


def check_class_names(class_names: Sequence[str] | None, model_name: str) -> list[str]:
    """The class names as a list; empty or repeated names are a one-line UserError naming the model."""
    names = list(class_names or [])
    if not names or len(set(names)) != len(names):
        raise UserError(f"{model_name}: class names must be a non-empty list without repeats, got {names}")
    return names


def load_weights(network: nn.Module, state_dict: dict | None, model_name: str) -> None:
    """Load ``state_dict`` (strict) into ``network``; nothing when it is None."""
    if state_dict is None:
        return
    try:
        network.load_state_dict(state_dict)
    except RuntimeError as error:
        lines = str(error).strip().splitlines()
        raise WeightsDoNotFit(model_name, lines[0] if lines else type(error).__name__) from None


def network_adapter(
    network: nn.Module,
    name: str,
    class_names: Sequence[str],
    config: dict,
    state_dict: dict | None = None,
    gaze_head: nn.Module | None = None,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
    extra_inputs: Callable | None = None,
    cam_layer: nn.Module | None = None,
) -> ModelAdapter:
    """The adapter of ``network`` (built for ``len(class_names)`` outputs), with ``state_dict`` loaded.

    ``config`` holds the model's ``build_adapter`` keyword arguments (``input_size`` among them)
    and is what checkpoints save; ``cam_layer`` defaults to ``network.cam_layer``.
    """
    names = check_class_names(class_names, name)
    load_weights(network, state_dict, name)
    return ModelAdapter(
        name=name,
        module=network,
        class_names=names,
        cam_layer=network.cam_layer if cam_layer is None else cam_layer,
        input_size=config["input_size"],
        mean=tuple(mean),
        std=tuple(std),
        gaze_head=gaze_head,
        config=config,
        extra_inputs=extra_inputs,
    )


def probed_adapter(
    network: nn.Module,
    name: str,
    class_names: Sequence[str],
    input_size: int,
    state_dict: dict | None,
    cam_layer: str | None,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
    probe: Callable | None = None,
) -> ModelAdapter:
    """An open family's adapter: ``cam_layer`` (a dotted module name) or the probe rule's layer.

    ``probe`` replaces ``network.forward`` for the rule (timm: ``forward_features``); the config
    is ``{input_size, cam_layer}``.
    """
    layer = pick_cam_layer(network, cam_layer, name, input_size, len(mean), run=probe)
    config = {"input_size": input_size, "cam_layer": cam_layer}
    return network_adapter(network, name, class_names, config, state_dict, mean=mean, std=std, cam_layer=layer)


def open_family_spec(prefix: str, arch: str, build_adapter: Callable[..., ModelAdapter]) -> ModelSpec:
    """The spec of ``prefix:arch`` in an open family (``torchvision``, ``timm``): ``build_adapter(arch, ...)``
    with random weights or a gazebench checkpoint's, the shared generic recipes, the class BCE."""
    return ModelSpec(
        name=f"{prefix}:{arch}",
        build_adapter=partial(build_adapter, arch),
        default_recipe=generic_recipe,
        loss=classification_loss,
        description=f"{prefix} {arch} (random init; weights from a gazebench checkpoint), BCE",
    )
